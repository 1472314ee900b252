"""The core worker tests again, with RabbitMQ as the broker and the state still in the private Redis.

Each test of ``test_worker_runs.py`` runs in its own pytest process with
``CDT_BROKER_URL`` pointing at RabbitMQ, so its worker app is built for AMQP
from the start. Every queue and exchange gets a prefix unique to this session
(the default vhost is shared with whatever else uses the server); they are
purged before each test and deleted at the end. Skipped, with the reason, when
RabbitMQ does not answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Queue

from tests.integration import test_worker_runs
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("CDT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
PREFIX = f"cdt-{uuid.uuid4().hex[:10]}-"
#: Queues the worker app declares (see workerapp.queue) and the exchanges named after them.
QUEUES = ("celery", "parked", "late", "hog")
EXCHANGES = (*QUEUES, "celery.pidbox", "reply.celery.pidbox", "celeryev")
#: Tests that read the Redis broker's lists directly: they are about message content, not the broker.
REDIS_ONLY = {"test_runs_are_enqueued_in_call_order_with_parent_ids"}
CORE_TESTS = sorted(
    name for name in dir(test_worker_runs) if name.startswith("test_") and name not in REDIS_ONLY
)


def _each_on_own_channel(conn: Connection, names: tuple[str, ...], action: str) -> None:
    # A missing queue or exchange closes the channel it was asked on: one channel each.
    for name in names:
        channel = conn.channel()
        try:
            if action == "purge":
                Queue(PREFIX + name, channel=channel).purge()
            elif action == "delete-queue":
                channel.queue_delete(PREFIX + name)
            else:
                Exchange(PREFIX + name, channel=channel).delete()
        except conn.channel_errors:
            pass
        finally:
            try:
                channel.close()
            except conn.connection_errors + conn.channel_errors:
                pass


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[Connection]:
    conn = Connection(AMQP_URL, connect_timeout=3)
    try:
        conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        pytest.skip(f"RabbitMQ does not answer at {AMQP_URL}: {exc!r}")
    try:
        yield conn
    finally:
        _each_on_own_channel(conn, QUEUES, "delete-queue")
        _each_on_own_channel(conn, EXCHANGES, "delete-exchange")
        conn.release()


@pytest.mark.parametrize("test_name", CORE_TESTS)
def test_core_worker_test_passes_on_rabbitmq(rabbitmq: Connection, test_name: str) -> None:
    _each_on_own_channel(rabbitmq, QUEUES, "purge")  # what an earlier test left queued
    env = {**os.environ, "CDT_BROKER_URL": AMQP_URL, "CDT_QUEUE_PREFIX": PREFIX, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    argv.append(f"tests/integration/test_worker_runs.py::{test_name}")
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout
    # The run went through RabbitMQ: its worker declared the session's queue there.
    channel = rabbitmq.channel()
    try:
        assert channel.queue_declare(PREFIX + "celery", passive=True).queue == PREFIX + "celery"
    finally:
        channel.close()
