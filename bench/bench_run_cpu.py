"""What one unguarded deferred run costs its worker, against a plain task, in µs.

    python bench/bench_run_cpu.py [--runs 2000] [--rounds 5] [--profile]

Both run through Celery's own tracer (``build_tracer``, what a pool process calls
for each message: signals, the task's ``__call__``, the result store) in this
process, against a private ``redis-server`` (state, results). No broker: the
message's arguments are handed to the tracer as a worker hands them. The plain
task gets the same keyword arguments and stores its result; the deferred run's
handler returns ``None`` too, so the difference is the deferred run itself:
parsing its message, the claim and finish round trips, its context. Rounds
alternate the two; the best round of each is printed, with their ratio: wall time,
this process's CPU time, and the Redis server's CPU time (``INFO``), per run.
On a shared machine wall time swings with the load; CPU time much less.
``--profile`` prints cProfile's top functions of the deferred runs. No asserts.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from celery.app.trace import build_tracer

from celery_defer import DeferTask, create_defer
from celery_defer.deferred.message import build_message
from celery_defer.embedded_redis import RedisServer
from celery_defer.outbox.record import DeferRecord, ParentRef

DATA = {"to": "someone@example.com", "subject": "Your order", "body": "Thanks! " * 8}


def make_app(url: str) -> Celery:
    app = Celery("runcpu", broker="memory://", backend=f"{url}/1", task_cls=DeferTask, set_as_current=False)
    app.conf.update(defer_redis_url=f"{url}/2", defer_recovery_interval=3600, task_serializer="json")
    return app


def request_of(task_id: str, name: str) -> dict[str, Any]:
    """The request a worker builds from a message's headers (the fields the tracer reads)."""
    return {
        "id": task_id,
        "task": name,
        "root_id": task_id,
        "parent_id": None,
        "retries": 0,
        "is_eager": False,
        "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 0, "redelivered": False},
        "hostname": "bench@local",
        "reply_to": None,
        "correlation_id": task_id,
        "args": [],
        "kwargs": {},
    }


Timing = tuple[float, float, float]  # wall, this process's CPU, the server's CPU: µs per run


def server_cpu_s(server: redis.Redis) -> float:
    info = server.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def runner(app: Celery, server: redis.Redis, task: Any, deferred: bool) -> Callable[[int], Timing]:
    tracer = build_tracer(task.name, task, app=app, hostname="bench@local")

    def run(n: int) -> Timing:
        jobs = []
        for _ in range(n):
            record = DeferRecord(
                f"d-{uuid.uuid4().hex[:8]}",
                task.name,
                "child",
                '{"to":"someone@example.com","subject":"Your order","body":"Thanks! Thanks!"}',
                time.time_ns(),
                ParentRef(f"p-{uuid.uuid4()}", "r", "bench"),
            )
            task_id = record.run_id if deferred else str(uuid.uuid4())
            jobs.append((task_id, build_message(record, enqueued_ms=int(time.time() * 1000))))
        server_began = server_cpu_s(server)
        cpu_began = time.process_time()
        began = time.perf_counter()
        for task_id, kwargs in jobs:
            tracer(task_id, [], kwargs, request_of(task_id, task.name))
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        return wall / n * 1e6, cpu / n * 1e6, (server_cpu_s(server) - server_began) / n * 1e6

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with RedisServer() as server:
        app = make_app(server.url)
        child = create_defer(app, {"id": "child"}, lambda ctx: None)

        @app.task(name="bench.plain")
        def plain(**kwargs: Any) -> None:
            return None

        info = redis.Redis.from_url(server.url)
        runs = {
            "plain task": runner(app, info, plain, False),
            "deferred run": runner(app, info, child, True),
        }
        for run in runs.values():
            run(200)  # connections, scripts loaded
        best: dict[str, list[float]] = {name: [float("inf")] * 3 for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                best[name] = [min(b, t) for b, t in zip(best[name], run(args.runs), strict=True)]
        print(f"per run, best of {args.rounds} rounds of {args.runs} (µs, in-process tracer, no broker)")
        print(f"  {'':14} {'wall':>15} {'CPU here':>15} {'Redis CPU':>15}")
        base = best["plain task"]
        for name, timing in best.items():
            cells = " ".join(f"{us:7.1f} {us / b:5.2f}x " for us, b in zip(timing, base, strict=True))
            print(f"  {name:14} {cells}")
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(runs["deferred run"], args.runs)
            pstats.Stats(profile).sort_stats("tottime").print_stats(40)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(60)


if __name__ == "__main__":
    main()
