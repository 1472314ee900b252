"""Flower, against a worker with task events on (``-E``), links deferred runs to their parents."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_defer.outbox.record import deferred_run_id
from tests.integration.conftest import ROOT, wait_for

pytest.importorskip("flower")

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def flower(redis_url: str) -> Iterator[str]:
    """A real Flower on a free port; yields its base URL."""
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="cdt-flower-", suffix=".log")[1])
    env = {
        **os.environ,
        "CDT_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        # Flower 2.x refuses its API without authentication unless told so.
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    argv = [sys.executable, "-m", "celery", "-A", "tests.integration.workerapp", "flower"]
    argv += [f"--port={port}", "--address=127.0.0.1"]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"flower exited:\n{log_path.read_text()}")
        try:
            return get_json(f"{base}/api/tasks") is not None
        except (OSError, urllib.error.URLError):
            return False

    try:
        wait_for(answers, timeout_s=30, every_s=0.2)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_flower_shows_each_deferred_run_with_its_parent_and_root(start_worker, app_module, flower):
    start_worker(events=True)
    parent = app_module.parent.delay({"nest": True})
    assert parent.get(timeout=20) == "ok"
    nest = deferred_run_id(parent.id, "nest")
    child = deferred_run_id(nest, "child")

    def both_done() -> Any:
        tasks = get_json(f"{flower}/api/tasks")
        done = [tasks.get(run, {}).get("state") for run in (nest, child)]
        return done == ["SUCCESS", "SUCCESS"] and tasks

    tasks = wait_for(both_done, timeout_s=30, every_s=0.5)
    assert tasks[nest]["name"] == "celery_defer.fn.nester"
    assert (tasks[nest]["parent_id"], tasks[nest]["root_id"]) == (parent.id, parent.id)
    # A run deferred by a deferred run: its parent is that run, its root the first task.
    assert tasks[child]["name"] == "celery_defer.fn.recorder"
    assert (tasks[child]["parent_id"], tasks[child]["root_id"]) == (nest, parent.id)
