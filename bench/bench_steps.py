"""Cost of a step against a private Redis, in one process, next to a PING round trip.

Run: ``python bench/bench_steps.py [--iterations N] [--rounds R]``. Prints a table; asserts nothing.

- kept step: the first time a step id completes in a run (``fn`` returns a small
  dict; the result is kept with one script call);
- kept step + defer: the same, ``fn`` also calls ``defer`` (written with the result);
- first step of an attempt: a new attempt (a new ``Steps``) whose one step is new:
  the attempt reads its run's kept steps once, then keeps the step;
- skipped step: a later attempt's step that was kept already (read once per attempt).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery

from celery_defer import DeferTask, create_defer, defer
from celery_defer.embedded_redis import RedisServer
from celery_defer.outbox.record import ParentRef
from celery_defer.parent.attempt import close_attempt
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.steps.run_steps import Steps

Op = Callable[[int], object]


def measure_us(op: Op, iterations: int) -> float:
    """Mean microseconds per call of ``op(i)``, after a short warm-up."""
    for i in range(min(100, iterations)):
        op(-1 - i)
    start = time.perf_counter_ns()
    for i in range(iterations):
        op(i)
    return (time.perf_counter_ns() - start) / iterations / 1000


def small(i: int) -> dict[str, Any]:
    return {"ok": True, "i": i}


def attempt_of(app: Celery, run_id: str) -> tuple[RunCapture, Steps]:
    capture = RunCapture(parent=ParentRef(run_id, run_id, "bench.parent"), app=app, eager=False)
    return capture, Steps(capture)


def step_ops(app: Celery, iterations: int) -> dict[str, Op]:
    receipt = create_defer(app, {"id": "bench-receipt"}, lambda ctx: None)
    kept_capture, kept = attempt_of(app, f"bench-{uuid.uuid4()}")
    deferring_capture, deferring = attempt_of(app, f"bench-{uuid.uuid4()}")
    current_capture.set(deferring_capture)
    ids = itertools.count()

    def with_defer(i: int) -> dict[str, Any]:
        defer(f"receipt-{next(ids)}", function=receipt, data={"i": i})
        return small(i)

    def first_of_attempt(i: int) -> object:
        _, steps = attempt_of(app, f"bench-{uuid.uuid4()}")
        return steps.run("charge", small, i)

    # A run with every step kept already: each later attempt skips them.
    skipped_run = f"bench-{uuid.uuid4()}"
    _, keeper = attempt_of(app, skipped_run)
    for i in range(iterations + 100):
        keeper.run("item", small, i)
    _, replay = attempt_of(app, skipped_run)

    ops: dict[str, Op] = {
        "plain fn call": small,
        "kept step": lambda i: kept.run("item", small, i),
        "kept step + defer": lambda i: deferring.run("item", with_defer, i),
        "first step of an attempt": first_of_attempt,
        "skipped step": lambda i: replay.run("item", small, i),
    }
    app.__dict__["_bench_captures"] = (kept_capture, deferring_capture)
    return ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    per_round = max(1, args.iterations // args.rounds)

    with RedisServer() as server:
        app = Celery("bench", task_cls=DeferTask, set_as_current=False)
        app.conf.update(defer_redis_url=server.url, broker_url="memory://", defer_max_per_run=10**9)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            ops = step_ops(app, args.iterations)
            # On a shared machine the round trip drifts: each round measures PING next to
            # every operation, and the table gives medians over the rounds.
            times_us: dict[str, list[float]] = {"PING round trip": [], **{name: [] for name in ops}}
            ratios: dict[str, list[float]] = {name: [] for name in times_us}
            for _ in range(args.rounds):
                for name, op in ops.items():
                    ping_us = measure_us(lambda i: client.ping(), per_round)
                    op_us = measure_us(op, per_round)
                    times_us["PING round trip"].append(ping_us)
                    times_us[name].append(op_us)
                    ratios[name].append(op_us / ping_us)
                    ratios["PING round trip"].append(1.0)
            version = client.info("server")["redis_version"]
            print(
                f"redis-server {version}, {args.rounds} rounds of {per_round} iterations, one process, "
                "medians over rounds\n"
            )
            print(f"{'operation':<28}{'µs':>10}{'x PING':>8}")
            for name, values in times_us.items():
                print(f"{name:<28}{statistics.median(values):>10.2f}{statistics.median(ratios[name]):>8.2f}")
        finally:
            for capture in app.__dict__.get("_bench_captures", ()):
                close_attempt(capture)
            client.close()


if __name__ == "__main__":
    main()
