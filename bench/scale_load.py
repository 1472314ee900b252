"""The load side of ``bench_scale.py``: OS processes running the library's Redis calls in a loop.

Each process builds its own Celery app and store (as a forked pool process does)
and repeats one kind of operation, through the library's classes, until told to
stop: the calls a worker makes for a deferred run (claim; a concurrency slot;
finish), those a parent run makes when it finalizes (record, publish, clear the
outbox), or a bare ``PING`` as the baseline. A real worker would also run Celery's
own machinery; here only the Redis side is driven, and :func:`measure_load`
divides the runs by the Redis server's own CPU time, since on a small host the
clients' Python, not Redis, is what runs out first.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import redis
from celery import Celery

from celery_defer import DeferTask, create_defer, defer
from celery_defer.outbox.dispatch import dispatch
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.parent.attempt import end_attempt
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.store import Store, store_for

#: What a deferred run's claim keeps to send again (the worker stores its message),
#: and a guard's parcel (the message again, should the run park): a stand-in sized
#: so a run sends about the bytes a real worker's does (part 1 of bench_scale.py).
RESEND = '{"event": {"data": "' + "x" * 530 + '"}}'
DATA = {"to": "someone@example.com", "subject": "Your order", "body": "Thanks! " * 8}
LEASE_MS = 60_000
GUARD_LIMIT = 10_000  # always a free slot: the guard's cost, not its waiting

Op = Callable[[int], None]


def bench_app(state_url: str, broker_url: str, options: dict[str, Any] | None = None) -> tuple[Celery, Any]:
    """An app on the private servers, and its one deferred function, ``child``.

    ``options``: ``defer_redis_transport_options`` (a Sentinel group's).
    """
    app = Celery("scale", broker=broker_url, task_cls=DeferTask, set_as_current=False)
    app.conf.update(
        defer_redis_transport_options=options or {},
        task_ignore_result=True,
        defer_redis_url=state_url,
        defer_recovery_interval=3600,
        defer_max_per_run=1000,
    )
    return app, create_defer(app, {"id": "child"}, lambda ctx: None)


def deferred_run(store: Store, run_id: str, holder: str, guard: str | None) -> None:
    """What a worker asks Redis for one deferred run: claim, [slot,] finish."""
    claims, limits = store.claims, store.limits
    claims.claim(run_id, holder, lease_ms=LEASE_MS, attempt=0, resend=RESEND)
    if guard is None:
        claims.finish(run_id, holder, outcome="succeeded")
        return
    limits.lease_acquire(guard, run_id, GUARD_LIMIT, LEASE_MS, 2 * LEASE_MS, parcel=RESEND)

    def release() -> None:
        limits.lease_release(guard, run_id, 5.0, limit=GUARD_LIMIT, lease_ms=LEASE_MS, then=lambda h: None)

    claims.finish(run_id, holder, outcome="succeeded", also=release)


def parent_run(app: Celery, child: Any, run_id: str, defers: int) -> list[DeferRecord]:
    """What a parent run making ``defers`` defers asks Redis as it finalizes: record, publish, clear."""
    capture = RunCapture(ParentRef(run_id, run_id, "bench.parent"), app, eager=False)
    token = current_capture.set(capture)
    try:
        for i in range(defers):
            defer(f"d{i}", function=child, data=DATA)
    finally:
        current_capture.reset(token)
    records = end_attempt(capture, final=True)
    dispatch(app, run_id, records, eager=False)
    return records


def operation(app: Celery, child: Any, kind: str, defers: int, tag: str) -> Op:
    """``kind``: ping, deferred, guarded, parent or full (a parent and its deferred runs)."""
    store = store_for(app)
    guard = store.keys.limit("concurrency", "child")
    holder = f"w-{tag}"

    def op(i: int) -> None:
        run_id = f"{tag}-{i}"
        if kind == "ping":
            store.client.ping()
        elif kind in ("deferred", "guarded"):
            deferred_run(store, run_id, holder, guard if kind == "guarded" else None)
        else:
            records = parent_run(app, child, run_id, defers)
            if kind == "full":
                for record in records:
                    deferred_run(store, record.run_id, holder, None)

    return op


def load(
    kind: str,
    defers: int,
    urls: tuple[str, str, dict[str, Any] | None],
    go: Event,
    stop: Event,
    done: Queue[int],
) -> None:
    """Process body: warm up, wait for ``go``, repeat ``kind`` until ``stop``; runs to ``done``."""
    tag = f"{kind}-{os.getpid()}"
    op = operation(*bench_app(*urls), kind, defers, tag)
    for i in range(20):  # connections, scripts, the clock
        op(-1 - i)
    go.wait()
    count = 0
    for i in itertools.count():
        if stop.is_set():
            break
        op(i)
        count += 1
    done.put(count)


def cpu_s(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure_load(
    kind: str,
    defers: int,
    urls: tuple[str, str, dict[str, Any] | None],
    info_url: str,
    procs: int,
    seconds: float,
) -> tuple[float, float]:
    """(runs/s, runs per Redis-CPU-second of ``info_url``) of ``procs`` processes doing ``kind``."""
    context = multiprocessing.get_context("fork")
    go, stop, done = context.Event(), context.Event(), context.Queue()
    workers = [context.Process(target=load, args=(kind, defers, urls, go, stop, done)) for _ in range(procs)]
    for worker in workers:
        worker.start()
    client = redis.Redis.from_url(info_url)
    time.sleep(1.5)  # imports done, warm-up calls made
    before = cpu_s(client)
    start = time.perf_counter()
    go.set()
    time.sleep(seconds)
    stop.set()
    runs = sum(done.get(timeout=60) for _ in workers)
    elapsed, used = time.perf_counter() - start, cpu_s(client) - before
    for worker in workers:
        worker.join()
    client.flushdb()
    redis.Redis.from_url(urls[1]).flushdb()
    return runs / elapsed, runs / used
