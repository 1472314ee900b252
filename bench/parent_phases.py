"""Where a parent's time goes inside the worker: ``bench_parent.py --phases``.

Installed in the worker's pool processes by ``parent_app`` when ``CDB_PHASES`` is
set: each step of a finalizing parent is wrapped to add its wall and CPU time to
the running parent's totals: its ``defer()`` calls; the record (its write and,
after the publish, its reply); the publish and, inside it, building the
messages and writing AMQP frames; the clearing of the outbox. At the process's
shutdown the medians over the ``bench.defers`` parents (the first few left out:
warm-up) go to Redis, for :func:`report`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun, worker_process_shutdown

import celery_defer.outbox.dispatch as dispatch
import celery_defer.outbox.publish as publish
import celery_defer.outbox.publish_amqp as publish_amqp
import celery_defer.parent.call_site as call_site
import celery_defer.parent.task as parent_task

#: (module, function, label), in the order they are printed.
STEPS = (
    (call_site, "_defer", "100 defer() calls"),
    (parent_task, "end_attempt", "record, waited for (other attempts)"),
    (parent_task, "write_record", "record written (first attempt)"),
    (dispatch, "publish", "publish"),
    (publish, "build_task_messages", "  building the messages"),
    (publish_amqp, "write_frames", "  writing AMQP frames"),
    (dispatch, "_complete", "clearing the outbox"),
    (parent_task, "settle_record", "record's reply, read after"),
)
TASK = "bench.defers"
WARM_UP = 5
KEY = "phases"

_current: dict[str, list[float]] | None = None
_parents: list[dict[str, list[float]]] = []


def install(stamps: redis.Redis) -> None:
    """Wrap the steps, and keep each ``bench.defers`` parent's totals (this process)."""
    for module, name, label in STEPS:
        setattr(module, name, _timed(getattr(module, name), label))

    @task_prerun.connect(weak=False)
    def begin(sender: Any = None, **_: Any) -> None:
        global _current
        _current = defaultdict(lambda: [0.0, 0.0]) if sender is not None and sender.name == TASK else None
        if _current is not None:
            _current["whole task (prerun -> postrun)"] = [-time.perf_counter(), -time.process_time()]

    @task_postrun.connect(weak=False)
    def end(sender: Any = None, **_: Any) -> None:
        global _current
        if _current is None:
            return
        whole = _current["whole task (prerun -> postrun)"]
        whole[0] += time.perf_counter()
        whole[1] += time.process_time()
        _parents.append(dict(_current))
        _current = None

    @worker_process_shutdown.connect(weak=False)
    def save(**_: Any) -> None:
        kept = _parents[WARM_UP:]
        if not kept:
            return
        labels = ["whole task (prerun -> postrun)", *(label for _, _, label in STEPS)]
        medians = {
            label: [statistics.median(p.get(label, [0.0, 0.0])[i] for p in kept) * 1e3 for i in (0, 1)]
            for label in labels
        }
        stamps.set(KEY, json.dumps({"parents": len(kept), "ms": medians}))


def _timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        if _current is None:
            return fn(*args, **kwargs)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            total = _current[label]
            total[0] += time.perf_counter() - wall
            total[1] += time.process_time() - cpu

    return timed


def report(stamps: redis.Redis) -> None:
    """Print what the worker saved: per step, the median wall and CPU ms per parent."""
    raw = stamps.get(KEY)
    if raw is None:
        print("  (no phases were saved: did the worker stop warmly?)")
        return
    saved = json.loads(raw)
    print(f"inside the worker, median per parent of 100 defers over {saved['parents']} parents (ms)")
    print(f"  {'':34} {'wall':>7} {'CPU':>7}")
    for label, (wall, cpu) in saved["ms"].items():
        print(f"  {label:34} {wall:7.3f} {cpu:7.3f}")
