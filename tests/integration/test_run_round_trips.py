"""What one deferred run costs in Redis round trips, counted on the library's own client.

A count, not a timing: two round trips for a run without guards (claim; finish),
three behind a concurrency limit (claim; acquire; finish with the release in its
pipeline). A handler that returns quickly causes no lease renewal. The worker is a
real Celery worker (solo pool) in this process, so its client can be counted.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_defer import DeferTask, create_defer
from celery_defer.outbox.publish import publish
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.redis_io import Scripts, batched
from celery_defer.store import store_for

pytestmark = pytest.mark.integration


class CountingConnection(redis.Connection):
    """Counts round trips (one per write to the socket, a whole pipeline being one) and the commands sent.

    Counted where every request is written, whichever way it was packed (redis-py's
    commands and pipelines, or the library's own one-write path).
    """

    sent: ClassVar[list[list[str]]] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (bytes, str)) else command
        request = b"".join(chunk.encode() if isinstance(chunk, str) else bytes(chunk) for chunk in chunks)
        CountingConnection.sent.append(command_names(request))
        super().send_packed_command(command, check_health)


def command_names(request: bytes) -> list[str]:
    """The name of each command in a RESP request."""
    names, at = [], 0
    while at < len(request):
        end = request.index(b"\r\n", at)
        count, at = int(request[at + 1 : end]), end + 2
        for index in range(count):
            end = request.index(b"\r\n", at)
            size = int(request[at + 1 : end])
            if index == 0:
                names.append(request[end + 2 : end + 2 + size].decode())
            at = end + 2 + size + 2
    return names


@pytest.fixture
def counted_app(redis_url: str) -> Iterator[tuple[Celery, threading.Event]]:
    ran = threading.Event()
    app = Celery("trips", broker=f"{redis_url}/8", task_cls=DeferTask, set_as_current=False)
    # A recovery pass would share the counted client: one at start, then none for an hour.
    app.conf.update(task_ignore_result=True, defer_redis_url=f"{redis_url}/9", defer_recovery_interval=3600)
    create_defer(app, {"id": "plain"}, lambda ctx: ran.set())
    create_defer(app, {"id": "guarded", "concurrency": 2}, lambda ctx: ran.set())
    pool = store_for(app).client.connection_pool
    pool.connection_class = CountingConnection
    pool.disconnect()
    with (
        logging_left_as_found(),
        start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"),
    ):
        time.sleep(1)  # the first recovery pass is over
        yield app, ran


@contextmanager
def logging_left_as_found() -> Iterator[None]:
    """Undo the logging set-up of an in-process worker once it stops.

    Celery's worker set-up takes over the root logger and stops its task loggers
    propagating; tests that run later in this process (``caplog``) must not inherit that.
    """
    loggers = [logging.getLogger(name) for name in ("", "celery", "celery.task")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


def round_trips_of_one_run(app: Celery, ran: threading.Event, fn_id: str) -> list[list[str]]:
    parent = ParentRef(f"parent-{uuid.uuid4()}", "root", "tests.parent")
    ran.clear()
    time.sleep(0.1)  # the previous run's finish has landed
    CountingConnection.sent = []
    publish(app, [DeferRecord("d", f"celery_defer.fn.{fn_id}", fn_id, "{}", time.time_ns(), parent)])
    assert ran.wait(10)
    time.sleep(0.3)  # its finish, and any renewal it would cause
    return CountingConnection.sent


def test_an_unguarded_run_costs_two_round_trips_and_a_guarded_one_three(counted_app):
    app, ran = counted_app
    for fn_id in ("plain", "guarded"):  # first runs load scripts and connect
        round_trips_of_one_run(app, ran, fn_id)
    for _ in range(3):
        assert [len(trip) for trip in round_trips_of_one_run(app, ran, "plain")] == [1, 1]
        # Claim; acquire; release and finish together in one pipeline.
        assert [len(trip) for trip in round_trips_of_one_run(app, ran, "guarded")] == [1, 1, 2]


def test_a_batch_sends_its_scripts_together_loading_unknown_ones_and_keeping_errors_in_place(redis_url):
    client = redis.Redis.from_url(
        f"{redis_url}/9", decode_responses=True, connection_class=CountingConnection
    )
    client.script_flush()
    scripts = Scripts(client, "runs", ("renew", "finish"))
    CountingConnection.sent = []
    with batched(client) as batch:
        assert scripts("renew", ["claim", "inflight"], ["holder", 1000, "run"], doing="renewing") is None
        scripts("finish", ["c", "i", "r", "d0", "d1"], ["h", "S", "run", "not-a-marker", 1, "x"], doing="")
    replies = batch.execute("finishing")
    assert replies[0] == 0  # no such claim: run anyway, once loaded (NOSCRIPT on the first send)
    assert isinstance(replies[1], redis.ResponseError)  # a bad ttl: its error, in its place
    assert CountingConnection.sent[0] == ["EVALSHA", "EVALSHA"]  # one round trip for both
    with batched(client) as batch:
        scripts("renew", ["claim", "inflight"], ["holder", 1000, "run"], doing="renewing")
    CountingConnection.sent = []
    assert batch.execute("renewing") == [0]
    assert CountingConnection.sent == [["EVALSHA"]]  # loaded now: no SCRIPT EXISTS, no load
