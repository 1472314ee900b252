"""Real workers for integration tests: ``celery worker`` subprocesses on a private Redis.

``CDT_STATE_STORE=cluster`` puts the worker app's state store (``defer_redis_url``)
on a private Redis Cluster for the whole session; the broker and the results stay
on the single private Redis (Celery's broker is never a cluster). The tests that
run both ways are those that reach the state only through the library (``store_for``):
the files listed in ``.ci/run`` and the README's Development section.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import redis

from celery_defer.embedded_cluster import RedisClusterServers
from celery_defer.embedded_redis import RedisServer

ROOT = Path(__file__).resolve().parents[2]
#: Where the worker app keeps celery_defer's state: "redis" (db 2 of the session's
#: Redis) or "cluster" (a local Redis Cluster).
STATE_STORE = os.environ.get("CDT_STATE_STORE", "redis")

pytestmark = pytest.mark.integration


def wait_for(predicate: Callable[[], Any], *, timeout_s: float = 20.0, every_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(every_s)


class Worker:
    """One ``celery -A tests.integration.workerapp worker`` process group."""

    def __init__(
        self,
        redis_url: str,
        *,
        acks_late: bool,
        queues: str,
        concurrency: int,
        state_url: str | None = None,
        app: str = "tests.integration.workerapp",
        events: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="cdt-worker-", suffix=".log")[1])
        env = {
            **os.environ,
            "CDT_REDIS_URL": redis_url,
            "CDT_ACKS_LATE": "1" if acks_late else "0",
            "CDT_STATE_URL": state_url or os.environ.get("CDT_STATE_URL", ""),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        # Queue names as the app spells them on the broker (see workerapp.queue).
        prefix = env.get("CDT_QUEUE_PREFIX", "")
        queues = ",".join(f"{prefix}{name}" for name in queues.split(","))
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-l",
            "info",
            "-c",
            str(concurrency),
            "-Q",
            queues,
            "-n",
            f"w{time.monotonic_ns()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *(["-E"] if events else []),
        ]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: "ready." in self.log() or self.process.poll() is not None, timeout_s=30)
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited at start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture(scope="session")
def state_store(request: pytest.FixtureRequest) -> RedisClusterServers | None:
    """The cluster holding the worker app's state (``CDT_STATE_STORE=cluster``), else None."""
    if STATE_STORE == "cluster":
        return cast(RedisClusterServers, request.getfixturevalue("redis_cluster"))
    if STATE_STORE != "redis":
        raise pytest.UsageError(f"CDT_STATE_STORE={STATE_STORE!r}: expected 'redis' or 'cluster'")
    return None


@pytest.fixture(scope="session")
def app_module(redis_server: RedisServer, state_store: RedisClusterServers | None) -> ModuleType:
    """The worker app, imported in the test process against the session's Redis."""
    os.environ["CDT_REDIS_URL"] = redis_server.url
    os.environ["CDT_STATE_URL"] = state_store.url if state_store else ""
    return importlib.import_module("tests.integration.workerapp")


@pytest.fixture(autouse=True)
def empty_state_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """Empty the cluster state store after each test (``redis_url`` empties the single Redis)."""
    yield
    if "app_module" in request.fixturenames:
        state_store = cast("RedisClusterServers | None", request.getfixturevalue("state_store"))
        if state_store is not None:
            state_store.flush()


@pytest.fixture
def start_worker(redis_url: str, app_module: ModuleType) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(
        *, acks_late: bool = False, queues: str = "celery", concurrency: int = 2, **options: Any
    ) -> Worker:
        worker = Worker(redis_url, acks_late=acks_late, queues=queues, concurrency=concurrency, **options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def seen(redis_url: str) -> Callable[..., list[dict[str, Any]]]:
    """Read what the workers recorded, optionally filtered by kind."""
    client = redis.Redis.from_url(f"{redis_url}/3")

    def read(kind: str | None = None) -> list[dict[str, Any]]:
        events = [json.loads(raw) for raw in client.lrange("seen", 0, -1)]
        return [event for event in events if kind is None or event["kind"] == kind]

    return read
