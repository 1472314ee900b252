"""One Lua loader (every script gets the clock prelude) and one Redis error policy."""

from __future__ import annotations

from importlib import resources

import pytest
import redis

from celery_defer.errors import StoreUnavailableError
from celery_defer.redis_clients import reaching
from celery_defer.redis_io import lua_source


def all_scripts() -> list[str]:
    root = resources.files("celery_defer") / "lua"
    return sorted(
        f"{group.name}/{script.name[:-4]}"
        for group in root.iterdir()
        if group.is_dir()
        for script in group.iterdir()
        if script.name.endswith(".lua")
    )


def test_scripts_are_grouped_and_each_loads_with_the_prelude():
    names = all_scripts()
    assert {name.split("/")[0] for name in names} == {"outbox", "runs", "limits", "indexes", "steps"}
    for name in names:
        source = lua_source(name)
        assert source.startswith("-- Prepended to every script")
        # The clock comes from the prelude only: no script reads TIME itself.
        assert source.count("redis.call('TIME')") == 1, name


@pytest.mark.parametrize(
    "error", [redis.ConnectionError("down"), redis.TimeoutError("slow"), redis.ResponseError("NOSCRIPT")]
)
def test_every_redis_error_becomes_store_unavailable_naming_what_was_done(error):
    expected = pytest.raises(StoreUnavailableError, match="recording the defers of run-1")
    with expected as caught, reaching("recording the defers of run-1"):
        raise error
    assert caught.value.__cause__ is error
