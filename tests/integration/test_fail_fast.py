"""Mistakes found at once, with a message that says what to do: as a user sees them in a real worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from celery.result import AsyncResult

from celery_defer.errors import DirectStartError
from tests.integration.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("broker", ["memory://", AMQP_URL], ids=["memory", "rabbitmq"])
def test_a_worker_without_a_redis_for_its_state_refuses_to_start(broker):
    if broker == AMQP_URL and not _rabbitmq_answers():
        pytest.skip("RabbitMQ does not answer on 127.0.0.1:5672")
    env = {**os.environ, "CDT_BROKER": broker, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "celery", "-A", "tests.integration.noredis_app", "worker", "-l", "info"]
    argv += ["-P", "solo", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Unrecoverable error: ConfigurationError" in output, output
    assert "set defer_redis_url, e.g. app.conf.defer_redis_url = 'redis://localhost:6379/0'" in output, output
    assert (
        "unknown celery_defer setting defer_max_per_rnu is ignored; did you mean defer_max_per_run?" in output
    )
    assert "ready." not in output, output


def test_a_defer_task_app_with_no_deferred_function_needs_no_redis_to_start():
    env = {**os.environ, "CDT_BROKER": "memory://", "CDT_NO_FUNCTIONS": "1", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "celery", "-A", "tests.integration.noredis_app", "worker", "-l", "info"]
    argv += ["-P", "solo", "--without-mingle", "--without-gossip", "--without-heartbeat"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "ready." in line or "Unrecoverable" in line:
                break
        assert "ready." in lines[-1], "".join(lines)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_ctx_logger_lines_carry_the_task_name_and_run_id(start_worker, app_module, seen):
    worker = start_worker()
    result = app_module.started.start({"n": 1}, id="log-line")
    wait_for(lambda: seen("started"))
    line = f"celery_defer.fn.started[{result.id}]: started run 1 says hi"
    assert wait_for(lambda: line in worker.log()), worker.log()


def test_start_from_plain_code_runs_once_per_id(start_worker, app_module, seen):
    worker = start_worker()
    first = app_module.started.start({"n": 2}, id="backfill-2")
    again = app_module.started.start({"n": 2}, id="backfill-2")
    other = app_module.started.start({"n": 3}, id="backfill-3")
    assert first.id == again.id != other.id
    wait_for(lambda: f"{first.id} of 'started' is a copy of a run that already succeeded" in worker.log())
    wait_for(lambda: len(seen("started")) == 2)
    runs = sorted((run["data"]["n"], run["parents"], run["run_id"]) for run in seen("started"))
    assert runs == [(2, 0, first.id), (3, 0, other.id)]


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        (({"n": 1},), {}, "it got 1 positional argument, and takes none"),
        ((), {"n": 1}, "unexpected arguments ['n']"),
        ((), {"event": {"name": "x"}}, "'parent' must be an object"),
    ],
)
def test_a_message_not_sent_by_defer_fails_at_once_without_retries(
    start_worker, app_module, seen, args, kwargs, reason
):
    worker = start_worker()
    name = app_module.started.name
    with pytest.raises(DirectStartError, match="start it with defer"):
        app_module.started.apply_async(args=args, kwargs=kwargs)
    # send_task skips the check at the caller: the worker refuses the run.
    sent = app_module.app.send_task(name, args=args, kwargs=kwargs)
    assert wait_for(lambda: AsyncResult(sent.id, app=app_module.app).state == "FAILURE")
    log = worker.log()
    assert reason in log and "start it with defer(id, function=<it>, data=...)" in log, log
    assert "retrying" not in log, log
    assert seen("started") == []
