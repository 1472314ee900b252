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
        code = [line for line in source.splitlines() if line.strip()]
        assert code[0] == "pcall(redis.replicate_commands)", name  # the prelude's first line
        # The clock comes from the prelude only: no script reads TIME itself.
        assert source.count("redis.call('TIME')") == 1, name


def test_scripts_go_without_their_comment_lines_and_keep_their_line_numbers():
    root = resources.files("celery_defer") / "lua"
    # A script with no --#include, so it is sent as written, less its comments.
    written = (root / "prelude.lua").read_text("utf-8") + (root / "outbox/finalize.lua").read_text("utf-8")
    source = lua_source("outbox/finalize")

    assert not [line for line in source.splitlines() if line.lstrip().startswith("--")]
    assert len(source) < len(written) * 0.7
    assert source.count("\n") == written.count("\n")
    first_call = written.splitlines().index("redis.call('ZREM', KEYS[3], ARGV[1])")
    assert source.splitlines()[first_call] == "redis.call('ZREM', KEYS[3], ARGV[1])"


@pytest.mark.parametrize(
    "error", [redis.ConnectionError("down"), redis.TimeoutError("slow"), redis.ResponseError("NOSCRIPT")]
)
def test_every_redis_error_becomes_store_unavailable_naming_what_was_done(error):
    expected = pytest.raises(StoreUnavailableError, match="recording the defers of run-1")
    with expected as caught, reaching("recording the defers of run-1"):
        raise error
    assert caught.value.__cause__ is error
