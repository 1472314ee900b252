"""The Celery app ``bench_waits.py`` runs in a real prefork worker subprocess.

Configured from the environment: ``BENCH_REDIS_URL`` (the private Redis: state in
db 2, results of the bench in db 3), ``BENCH_BROKER_URL`` (db 0 of that Redis by
default, or RabbitMQ) and ``BENCH_QUEUE_PREFIX`` (so that runs sharing a broker
do not meet). It uses only the public API, so the same file runs against an
older version of the library (the baseline) as well.

What it records, in db 3: ``deliveries`` (every delivery of a deferred run, a
wait's re-delivery included), hash ``first`` (run id -> sequence number of its
first delivery, and its time in ns: the order runs first asked) and list
``starts`` (run id and time in ns, in the order their handlers started).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_prerun

import celery_defer
from celery_defer import DeferTask, create_defer, defer

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1")
BROKER_URL = os.environ.get("BENCH_BROKER_URL") or f"{REDIS_URL}/0"
PREFIX = os.environ.get("BENCH_QUEUE_PREFIX", "")

app = Celery("bench_waits", broker=BROKER_URL, task_cls=DeferTask)
app.conf.update(
    task_default_queue=f"{PREFIX}celery",
    control_exchange=f"{PREFIX}celery",
    event_exchange=f"{PREFIX}celeryev",
    defer_redis_url=f"{REDIS_URL}/2",
    defer_recovery_interval=5,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

_state = redis.Redis.from_url(f"{REDIS_URL}/3")
_state.set("library", celery_defer.__file__ or "")


@task_prerun.connect
def _delivered(sender: Any = None, task_id: str = "", **_: Any) -> None:
    if str(getattr(sender, "name", "")).startswith("celery_defer.fn."):
        seq = _state.incr("seq")
        _state.incr("deliveries")
        _state.hsetnx("first", task_id, f"{seq} {time.time_ns()}")


def _handler(ctx: Any) -> None:
    _state.rpush("starts", f"{ctx.run_id} {time.time_ns()}")
    sleep_s = float(ctx.event.data.get("sleep", 0))
    if sleep_s:
        time.sleep(sleep_s)


FUNCTIONS = {
    "throttle": create_defer(
        app, {"id": "bench-throttle", "retries": 0, "throttle": {"limit": 50, "period": "1s"}}, _handler
    ),
    "concurrency": create_defer(app, {"id": "bench-concurrency", "retries": 0, "concurrency": 2}, _handler),
}


@app.task
def fan_out(kind: str, runs: int, sleep_s: float) -> None:
    """Defers ``runs`` runs of the ``kind`` function, in order."""
    for index in range(runs):
        defer(f"run-{index}", function=FUNCTIONS[kind], data={"i": index, "sleep": sleep_s})
