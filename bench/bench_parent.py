"""What defers cost the parent, side by side with doing it by hand, on a real prefork worker.

    python bench/bench_parent.py [--broker redis|amqp://guest:guest@127.0.0.1:5672//]
                                 [--only cost,latency,e2e] [--rounds 30] [--samples 200] [--phases]

Starts a private ``redis-server`` (state, results, timestamps, and the broker
unless ``--broker`` names another) and ``celery worker`` subprocesses of
``bench/parent_app.py``. Prints, without asserting, each figure beside its
baseline measured in the same run:

1. **cost**: a parent making 100 defers against one making 100 ``apply_async``
   calls, from the parent's start until the one-process worker starts the next
   task (``task_prerun`` to ``task_prerun``); also net of an empty task, and
   the floor: one plain child's message made once and sent 100 times in one
   write, the broker's share of any way of sending 100 messages.
2. **latency**: parent body finished -> child started, p50 and p95, a deferred
   run against a ``link`` callback (worker with two processes).
3. **e2e**: 200 parents x 5 children on one prefork worker, wall time until the
   last child ran, defers against ``apply_async`` of a plain task from the body;
   also the same deferred function started by hand (``.start()``) from the body,
   so the children on both sides do the same work (claim, finish, ``acks_late``);
   and the parents alone (children sent to a queue no worker reads), whose
   difference is all that sending by ``defer()`` can save: it gives the e2e a
   deferred side would reach were each child as cheap as a plain task.

``--phases`` also times each step of the deferring parents inside the cost
worker (``bench/parent_phases.py``: the ``defer()`` calls, record, publish,
clearing; wall and CPU) and prints the medians; its wrappers add a little to
that run's cost figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from celery_defer.embedded_redis import RedisServer
from celery_defer.outbox.record import deferred_run_id

ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s} s")
        time.sleep(0.01)
    return value


class Worker:
    def __init__(self, env: dict[str, str], *, concurrency: int, queue: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix="cdb-worker-", suffix=".log")[1])
        argv = [sys.executable, "-m", "celery", "-A", "bench.parent_app", "worker", "-l", "warning"]
        argv += ["-P", "prefork", "-c", str(concurrency), "-Q", queue, "-n", f"b{time.monotonic_ns()}@%h"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )

    def wait_ready(self, app: Any) -> None:
        # A task that runs proves the worker consumes.
        wait_for(lambda: app.tick.apply_async().get(timeout=60) is None or True)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def stamp(client: redis.Redis, key: str) -> float | None:
    raw = client.get(key)
    return float(raw) if raw is not None else None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_cost(app: ModuleType, stamps: redis.Redis, rounds: int) -> None:
    variants = {"apply_async": app.applies, "defer": app.defers, "empty": app.empty, "floor": app.floor}
    ids: dict[str, list[tuple[str, str]]] = {name: [] for name in variants}
    for _ in range(rounds):  # interleaved, so drift and neighbours hit all variants alike
        for name, task in variants.items():
            parent = task.apply_async(args=(100,))
            after = app.tick.apply_async()
            ids[name].append((parent.id, after.id))
    last = ids["empty"][-1][1]
    wait_for(lambda: stamp(stamps, f"start:{last}"))
    ms: dict[str, float] = {}
    for name, pairs in ids.items():
        costs = [(stamp(stamps, f"start:{b}") or 0) - (stamp(stamps, f"start:{a}") or 0) for a, b in pairs]
        ms[name] = statistics.median(costs[1:]) * 1e3  # the first round warms the worker up
    base, empty = ms["apply_async"], ms["empty"]
    print(f"cost of a parent making 100 sends, median of {rounds - 1} rounds (start -> next task start)")
    print(f"  100 x apply_async   {base:8.2f} ms   1.00x")
    print(f"  100 x defer         {ms['defer']:8.2f} ms   {ms['defer'] / base:5.2f}x")
    print(f"  empty task          {empty:8.2f} ms   {empty / base:5.2f}x")
    floor = ms["floor"]
    print(f"  100 made once, sent {floor:8.2f} ms   {floor / base:5.2f}x   (the broker's share: the floor)")
    print(
        f"  net of empty task: apply_async {base - empty:.2f} ms, defer {ms['defer'] - empty:.2f} ms, "
        f"{(ms['defer'] - empty) / (base - empty):5.2f}x"
    )


def bench_latency(app: ModuleType, stamps: redis.Redis, samples: int) -> None:
    lat: dict[str, list[float]] = {"link": [], "defer": []}
    for _ in range(samples):
        for name in lat:
            if name == "link":
                child_id = str(uuid.uuid4())
                link = app.plain_child.si(data=app.DATA).set(task_id=child_id)
                parent = app.finish_plain.apply_async(link=link)
            else:
                parent = app.finish_then_defer.apply_async()
                child_id = deferred_run_id(parent.id, "one")
            started = wait_for(lambda child_id=child_id: stamp(stamps, f"start:{child_id}"), 60)
            finished = stamp(stamps, f"finished:{parent.id}") or started
            lat[name].append((started - finished) * 1e3)
    print(f"parent finished -> child started, {samples} samples each (ms)")
    base50, base95 = pct(lat["link"][1:], 0.5), pct(lat["link"][1:], 0.95)
    ours50, ours95 = pct(lat["defer"][1:], 0.5), pct(lat["defer"][1:], 0.95)
    print(f"  link callback       p50 {base50:7.2f}   p95 {base95:7.2f}   1.00x / 1.00x")
    ratios = f"{ours50 / base50:.2f}x / {ours95 / base95:.2f}x"
    print(f"  deferred run        p50 {ours50:7.2f}   p95 {ours95:7.2f}   {ratios}")


def _run_all(stamps: redis.Redis, task: Any, counter: str, parents: int, children: int, total: int) -> float:
    stamps.set(counter, 0)
    start = time.time()
    for _ in range(parents):
        task.apply_async(args=(children,))
    wait_for(lambda: int(stamps.get(counter) or 0) >= total, 300)
    return time.time() - start


def bench_e2e(app: ModuleType, stamps: redis.Redis, parents: int, children: int) -> None:
    wall: dict[str, list[float]] = {"apply_async": [], "start": [], "defer": []}
    variants = (("apply_async", app.fan_apply), ("start", app.fan_start), ("defer", app.fan_defer))
    alone: dict[str, list[float]] = {"apply_async": [], "defer": []}
    sinks = (("apply_async", app.fan_apply_sink), ("defer", app.fan_defer_sink))
    for _ in range(2):
        for name, task in variants:
            wall[name].append(_run_all(stamps, task, "children", parents, children, parents * children))
        for name, task in sinks:
            alone[name].append(_run_all(stamps, task, "parents", parents, children, parents))
    base, by_hand, ours = min(wall["apply_async"]), min(wall["start"]), min(wall["defer"])
    alone_apply, alone_defer = min(alone["apply_async"]), min(alone["defer"])
    print(f"end to end: {parents} parents x {children} children, one prefork worker (best of 2, s)")
    print(f"  apply_async         {base:8.2f} s    1.00x   (plain task children)")
    print(f"  .start()            {by_hand:8.2f} s    {by_hand / base:5.2f}x   (same children, by hand)")
    print(f"  defer               {ours:8.2f} s    {ours / base:5.2f}x   {ours / by_hand:5.2f}x of .start()")
    # What defers can save is the parents' sending alone: with children that cost
    # what plain children cost, the defer side would take base - saving.
    saving = alone_apply - alone_defer
    print("  parents alone (their children go to a queue no worker reads):")
    print(f"    apply_async {alone_apply:.2f} s, defer {alone_defer:.2f} s: defer saves {saving:.2f} s")
    bound = base - saving
    print(f"  defer, were each child as cheap as a plain task: {bound:.2f} s   {bound / base:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", default="redis", help="'redis' (the private server) or a broker URL")
    parser.add_argument("--only", default="cost,latency,e2e")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--samples", type=int, default=200, help="latency samples a side (the first dropped)")
    parser.add_argument("--phases", action="store_true", help="time each step of a parent inside the worker")
    args = parser.parse_args()
    only = set(args.only.split(","))
    with RedisServer() as server:
        prefix = f"cdb-{uuid.uuid4().hex[:8]}-"
        env = {**os.environ, "CDB_REDIS_URL": server.url, "CDB_PREFIX": prefix, "PYTHONPATH": str(ROOT)}
        if args.broker != "redis":
            env["CDB_BROKER_URL"] = args.broker
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        import bench.parent_app as app  # configured by the environment just set

        stamps = redis.Redis.from_url(f"{server.url}/3")
        print(f"broker: {app.app.conf.broker_url.split('@')[-1]}")
        try:
            if "cost" in only:
                cost_env = {**env, "CDB_PHASES": "1"} if args.phases else env
                worker = Worker(cost_env, concurrency=1, queue=app.app.conf.task_default_queue)
                worker.wait_ready(app)
                try:
                    bench_cost(app, stamps, args.rounds)
                finally:
                    worker.stop()
                if args.phases:
                    from bench import parent_phases

                    parent_phases.report(stamps)
            for name, call in (
                ("latency", lambda: bench_latency(app, stamps, args.samples)),
                ("e2e", lambda: bench_e2e(app, stamps, 200, 5)),
            ):
                if name in only:
                    worker = Worker(env, concurrency=2, queue=app.app.conf.task_default_queue)
                    worker.wait_ready(app)
                    try:
                        call()
                    finally:
                        worker.stop()
        finally:
            if args.broker != "redis":
                with app.app.connection_for_write() as conn:
                    channel = conn.channel()
                    for queue in (app.app.conf.task_default_queue, app.SINK):
                        with contextlib.suppress(Exception):
                            channel.queue_delete(queue)


if __name__ == "__main__":
    main()
