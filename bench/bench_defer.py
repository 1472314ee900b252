"""How much defer() and the dispatch at finalization cost, against baselines in this process.

    python bench/bench_defer.py [--calls 20000] [--rounds 15]

Prints, without asserting:
1. the median cost of one ``defer()`` call without and with a pydantic schema,
   against ``json.dumps`` of the same data (the least any snapshot must cost);
2. the time to record and dispatch 100 defers when a run finalizes, against
   100 plain ``apply_async`` calls to the same task on the same Redis broker.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from celery import Celery
from pydantic import BaseModel

from celery_defer import DeferTask, create_defer, defer
from celery_defer.config.schemas import encode_plain
from celery_defer.embedded_redis import RedisServer
from celery_defer.outbox.dispatch import dispatch
from celery_defer.outbox.record import ParentRef
from celery_defer.parent.attempt import end_attempt
from celery_defer.parent.capture import RunCapture, current_capture


class Email(BaseModel):
    to: str
    subject: str
    body: str


DATA = {"to": "someone@example.com", "subject": "Your order", "body": "Thanks! " * 8}


def median_us(fn: Callable[[int], None], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean µs per call of ``fn(i)`` for ``calls`` calls."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def bench_call_site(app: Celery, calls: int, rounds: int) -> None:
    plain = create_defer(app, {"id": "bench-plain"}, lambda ctx: None)
    typed = create_defer(app, {"id": "bench-typed", "schema": Email}, lambda ctx: None)

    def under_capture(fn: Callable[[int], None]) -> Callable[[int], None]:
        def call(i: int) -> None:
            if i == 0:  # a fresh run every round, so ids stay unique and under the limit
                current_capture.set(RunCapture(ParentRef("r", "r", "t"), app, eager=True))
            fn(i)

        return call

    app.conf.defer_max_per_run = calls + 1
    baseline = median_us(lambda i: encode_plain(DATA), calls, rounds)
    no_schema = median_us(under_capture(lambda i: defer(f"d{i}", function=plain, data=DATA)), calls, rounds)
    schema = median_us(under_capture(lambda i: defer(f"d{i}", function=typed, data=DATA)), calls, rounds)
    print(f"defer() call, {calls} calls x {rounds} rounds (median of rounds)")
    print(f"  json.dumps(data) baseline  {baseline:8.2f} us   1.00x")
    print(f"  defer() without schema     {no_schema:8.2f} us   {no_schema / baseline:5.2f}x")
    print(f"  defer() with schema        {schema:8.2f} us   {schema / baseline:5.2f}x")


def _plain_body(**kwargs: object) -> None:
    """The body of the baseline task."""


def bench_dispatch(app: Celery, rounds: int) -> None:
    fn = create_defer(app, {"id": "bench-dispatch"}, lambda ctx: None)
    # The baseline: a plain task sent a message of the same size (a deferred
    # function refuses messages defer() did not build).
    plain_task = app.task(name="bench-plain", lazy=False, shared=False)(_plain_body)
    kwargs = {"event": {"name": "x", "id": "x", "ts": 0, "data": DATA}, "parent": {}}
    plain_s: list[float] = []
    defer_s: list[float] = []
    for round_no in range(rounds):
        start = time.perf_counter()
        for _ in range(100):
            plain_task.apply_async(kwargs=kwargs, serializer="json")
        plain_s.append(time.perf_counter() - start)

        capture = RunCapture(ParentRef(f"run-{round_no}", "root", "t"), app, eager=False)
        token = current_capture.set(capture)
        for i in range(100):
            defer(f"d{i}", function=fn, data=DATA)
        current_capture.reset(token)
        start = time.perf_counter()
        records = end_attempt(capture, final=True)  # the Redis write as the body returns
        dispatch(app, capture.parent.run_id, records, eager=False)  # right after, as DeferTask does
        defer_s.append(time.perf_counter() - start)
    plain, ours = statistics.median(plain_s), statistics.median(defer_s)
    print(f"100 runs sent, median of {rounds} rounds")
    print(f"  100 x apply_async           {plain * 1e3:8.2f} ms   1.00x")
    print(f"  finalize + dispatch 100     {ours * 1e3:8.2f} ms   {ours / plain:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with RedisServer() as server:
        app = Celery("bench", broker=server.url, task_cls=DeferTask, set_as_current=False)
        bench_call_site(app, args.calls, args.rounds)
        bench_dispatch(app, args.rounds)


if __name__ == "__main__":
    main()
