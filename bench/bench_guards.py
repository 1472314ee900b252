"""The added cost per deferred run of each flow-control guard, against no guard.

    python bench/bench_guards.py [--runs 300] [--rounds 5]

Runs a real Celery worker (solo pool) in this process on a private Redis, sends
``--runs`` deferred runs of a no-op handler per variant, and times until all of
them ran. Variants take turns within each round; the median round counts.
Limits are set high enough that no run ever waits or is dropped, so what is
measured is the cost of the checks themselves. Prints, without asserting.
Goal (issue 3): concurrency + throttle together <= 1.3x the unguarded run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_defer import DeferTask, create_defer
from celery_defer.embedded_redis import RedisServer
from celery_defer.outbox.publish import publish
from celery_defer.outbox.record import DeferRecord, ParentRef

HIGH = 1_000_000
VARIANTS: dict[str, dict[str, Any]] = {
    "no guard": {},
    "concurrency": {"concurrency": 1000},
    "throttle": {"throttle": {"limit": HIGH, "period": "1s", "burst": HIGH}},
    "concurrency + throttle": {
        "concurrency": 1000,
        "throttle": {"limit": HIGH, "period": "1s", "burst": HIGH},
    },
    "rate_limit": {"rate_limit": {"limit": HIGH, "period": "1h"}},
    "idempotency": {"idempotency": "event.data.i"},
    "singleton": {"singleton": {"key": "event.data.i", "mode": "skip"}},
    "debounce (1 ms)": {"debounce": {"period": "1ms", "key": "event.data.i"}},
}


class Counter:
    """The no-op handler: counts its runs and wakes the bench at a target count."""

    def __init__(self) -> None:
        self.value = 0
        self.target = 0
        self.reached = threading.Event()
        self.lock = threading.Lock()

    def expect(self, more: int) -> None:
        with self.lock:
            self.target = self.value + more
            self.reached.clear()

    def __call__(self, ctx: Any) -> None:
        with self.lock:
            self.value += 1
            if self.value >= self.target:
                self.reached.set()


def run_batch(app: Celery, fn_id: str, counter: Counter, runs: int, batch: int) -> float:
    """Seconds to send ``runs`` deferred runs of ``fn_id`` and see them all run."""
    records = [
        DeferRecord(
            defer_id="d",
            task_name=f"celery_defer.fn.{fn_id}",
            function_id=fn_id,
            data_json=f'{{"i":"{batch}-{i}"}}',
            ts_ns=time.time_ns(),
            parent=ParentRef(f"bench-{fn_id}-{batch}-{i}", "root", "bench.parent"),
        )
        for i in range(runs)
    ]
    counter.expect(runs)
    start = time.perf_counter()
    publish(app, records)
    if not counter.reached.wait(timeout=120):
        raise RuntimeError(f"{fn_id}: only {counter.value} of {counter.target} runs ran")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    with RedisServer() as server:
        app = Celery("bench", broker=f"{server.url}/0", task_cls=DeferTask, set_as_current=False)
        app.conf.update(task_ignore_result=True, defer_redis_url=f"{server.url}/1")
        counters = {}
        for index, (name, config) in enumerate(VARIANTS.items()):
            counters[name] = Counter()
            create_defer(app, {"id": f"v{index}", **config}, counters[name])  # type: ignore[typeddict-item]
        ids = {name: f"v{index}" for index, name in enumerate(VARIANTS)}
        samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            run_batch(app, ids["no guard"], counters["no guard"], 50, -1)  # warm up
            for batch in range(args.rounds):
                for name in VARIANTS:
                    seconds = run_batch(app, ids[name], counters[name], args.runs, batch)
                    samples[name].append(seconds / args.runs)
    base = statistics.median(samples["no guard"])
    print(f"{args.runs} runs per variant, median of {args.rounds} rounds, solo worker in-process")
    print(f"{'variant':<26}{'ms per run':>12}{'ratio':>9}")
    for name, values in samples.items():
        per_run = statistics.median(values)
        print(f"{name:<26}{per_run * 1e3:>12.3f}{per_run / base:>8.2f}x")


if __name__ == "__main__":
    main()
