"""Scale figures of the state store: Redis cost per run, and runs per second one Redis core carries.

    python bench/bench_scale.py [--runs 100] [--procs 4] [--seconds 3]

Two private ``redis-server`` processes: the state store alone on one, the Celery
broker on the other, so the state store's counters hold the library's traffic only.

1. Cost per run, a real Celery worker (solo pool) in this process: deferred runs
   (unguarded; behind a concurrency limit) and parent runs making 1 and 5 defers
   (their children go to a queue no worker reads). Each run is sent alone and
   waited for. Round trips and commands are counted by the library's client
   (``bench_run_cost.CountingConnection``); bytes on the wire are the server's
   ``total_net_input_bytes``/``total_net_output_bytes`` deltas, less what the
   ``INFO`` reads themselves add; memory kept is the keys left once the runs
   completed, by ``MEMORY USAGE`` (done-marker buckets included, which few runs
   overstate: ``bench_run_cost.py`` gives the per-run figure over 100,000 runs).
2. Throughput: ``--procs`` OS processes (``scale_load.py``) repeat the same calls
   through the library's classes for ``--seconds``. With 2 shared cores Redis is
   not saturated, so runs are divided by the Redis server's own CPU time
   (``used_cpu_user + used_cpu_sys`` delta): runs per Redis-CPU-second, what one
   core sustains. Raw runs/s is printed too; ``PING`` is the baseline.

From (2), the estimate for a Redis Cluster of N primaries with equal slot ranges:
what one core carries, times 64 over the shard tags on the busiest primary (24 of
64 with three). Prints, without asserting.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from typing import Any, cast

import redis
from bench_run_cost import CountingConnection
from celery import Celery
from celery.contrib.testing.worker import start_worker
from redis.crc import key_slot
from scale_load import DATA, bench_app, measure_load

from celery_defer import create_defer, defer
from celery_defer.embedded_redis import RedisServer
from celery_defer.embedded_sentinel import SentinelGroup
from celery_defer.keys import SHARDS as SHARD_TAGS
from celery_defer.keys import KeySpace
from celery_defer.outbox.publish import publish
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.store import store_for

WIRE = ("total_net_input_bytes", "total_net_output_bytes", "total_commands_processed")


def snapshot(client: redis.Redis) -> dict[str, float]:
    """Wire and command counters of the server."""
    info = client.info()
    figures = {name: float(info[name]) for name in WIRE}
    return figures


def kept_bytes(client: redis.Redis) -> tuple[int, int]:
    """Keys in the database and the sum of their ``MEMORY USAGE`` (every element counted)."""
    keys = list(client.scan_iter(count=1000))
    return len(keys), sum(int(client.memory_usage(key, samples=0) or 0) for key in keys)


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def info_overhead(client: redis.Redis) -> dict[str, float]:
    """What one ``INFO`` read adds to the counters (its own request and reply)."""
    first, second = snapshot(client), snapshot(client)
    return delta(first, second)


def per_run(client: redis.Redis, send: Any, ran: threading.Event, runs: int) -> dict[str, float]:
    """Mean cost per run of ``send(i)`` on the state server, each run waited for."""
    overhead = info_overhead(client)
    keys_before, bytes_before = kept_bytes(client)
    before = snapshot(client)
    trips, commands = CountingConnection.round_trips, CountingConnection.commands
    for i in range(runs):
        ran.clear()
        send(i)
        if not ran.wait(10):
            raise RuntimeError(f"run {i} did not run")
        time.sleep(0.05)  # its finish (or the parent's finalization) lands
    cost = delta(before, snapshot(client))
    figures = {name: (cost[name] - overhead[name]) / runs for name in WIRE}
    keys_after, bytes_after = kept_bytes(client)
    figures["keys"] = (keys_after - keys_before) / runs
    figures["kept"] = (bytes_after - bytes_before) / runs
    figures["round trips"] = (CountingConnection.round_trips - trips) / runs
    figures["client commands"] = (CountingConnection.commands - commands) / runs
    return figures


def measure_costs(state_url: str, broker_url: str, runs: int) -> dict[str, dict[str, float]]:
    """Part 1: the real worker, each kind of run ``runs`` times."""
    ran = threading.Event()
    app = Celery("scale-cost", broker=broker_url, set_as_current=False, task_cls="celery_defer:DeferTask")
    app.conf.update(task_ignore_result=True, defer_redis_url=state_url, defer_recovery_interval=3600)
    create_defer(app, {"id": "plain"}, lambda ctx: ran.set())
    create_defer(app, {"id": "guarded", "concurrency": 5}, lambda ctx: ran.set())
    sink = create_defer(app, {"id": "sink", "queue": "scale-sink"}, lambda ctx: None)

    @app.task(name="scale.parent", shared=False)  # type: ignore[untyped-decorator]
    def parent(n: int) -> None:
        for i in range(n):
            defer(f"d{i}", function=sink, data=DATA)
        ran.set()

    def deferred(fn_id: str) -> Any:
        def send(i: int) -> None:
            parent_ref = ParentRef(f"p-{fn_id}-{i}-{time.time_ns()}", "r", "bench")
            record = DeferRecord("d", f"celery_defer.fn.{fn_id}", fn_id, "{}", time.time_ns(), parent_ref)
            publish(app, [record])

        return send

    store = store_for(app)
    pool = cast(redis.Redis, store.client).connection_pool  # a single Redis here
    pool.connection_class = CountingConnection
    pool.disconnect()
    client = redis.Redis.from_url(state_url)
    kinds = {
        "deferred run, unguarded": deferred("plain"),
        "deferred run, concurrency guard": deferred("guarded"),
        "parent run, 1 defer": lambda i: parent.delay(1),
        "parent run, 5 defers": lambda i: parent.delay(5),
    }
    results = {}
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        time.sleep(1)  # the recovery pass at start is over
        for name, send in kinds.items():
            per_run(client, send, ran, 3)  # warm up: connections, scripts, clock
            results[name] = per_run(client, send, ran, runs)
    return results


def print_costs(costs: dict[str, dict[str, float]], runs: int) -> None:
    print(f"1. Redis cost per run on the state store, {runs} runs each, real worker (solo pool)")
    head = ["round trips", "client commands", "total_commands_processed", "total_net_input_bytes"]
    cols = ["trips", "cmds", "srv cmds", "B sent", "B recv", "keys", "kept B"]
    print(f"{'run':<34}" + "".join(f"{col:>9}" for col in cols))
    for name, fig in costs.items():
        values = [fig[h] for h in head] + [fig[h] for h in ("total_net_output_bytes", "keys", "kept")]
        print(f"{name:<34}" + "".join(f"{value:>9.1f}" for value in values))
    print("  trips, cmds: the library's client; srv cmds: total_commands_processed, the calls inside")
    print("  scripts included; B sent / B recv: wire bytes to / from Redis; keys, kept B: keys left")
    print("  and their MEMORY USAGE per run once runs completed (done markers: bucket keys per hour,")
    print("  which few runs overstate; bench_run_cost.py has them over 100,000 runs).\n")


LOADS = {
    "PING (baseline)": ("ping", 0),
    "deferred run, unguarded": ("deferred", 0),
    "deferred run, concurrency guard": ("guarded", 0),
    "parent run, 1 defer": ("parent", 1),
    "parent run, 5 defers": ("parent", 5),
    "parent + its 1 deferred run": ("full", 1),
    "parent + its 5 deferred runs": ("full", 5),
}
SENTINEL_LOADS = {
    "Sentinel WAIT 1: PING": ("ping", 0),
    "Sentinel WAIT 1: deferred run": ("deferred", 0),
    "Sentinel WAIT 1: parent + 1 deferred": ("full", 1),
}


def sentinel_loads(broker_url: str, procs: int, seconds: float) -> dict[str, tuple[float, float]]:
    """Part 2 on a Sentinel-managed master and replica (``min_replica_acks`` 1, the default)."""
    with SentinelGroup() as group:
        urls = (group.url, broker_url, group.transport_options)
        info_url = f"redis://127.0.0.1:{group.master_port()}/0"
        return {
            name: measure_load(kind, n, urls, info_url, procs, seconds)
            for name, (kind, n) in SENTINEL_LOADS.items()
        }


def busiest_share(primaries: int, prefix: str = "celery_defer") -> int:
    """Shard tags on the busiest of ``primaries`` holding equal slot ranges (as ``--cluster create``)."""
    counts = [0] * primaries
    for shard in KeySpace.shards():
        slot = key_slot(KeySpace(prefix).tag(shard).encode())
        counts[min(slot * primaries // 16384, primaries - 1)] += 1
    return max(counts)


def print_loads(figures: dict[str, tuple[float, float]], procs: int, seconds: float) -> None:
    ping = figures["PING (baseline)"][1]
    print(f"2. Throughput, {procs} processes x {seconds:g} s each; per Redis CPU-s = what one core sustains")
    print(f"{'load (runs: parents where a parent)':<38}{'runs/s':>9}{'per Redis CPU-s':>17}{'x PING':>8}")
    for name, (raw, per_cpu) in figures.items():
        print(f"{name:<38}{raw:>9.0f}{per_cpu:>17.0f}{per_cpu / ping:>8.3f}")
    print("\n3. Deferred runs/s estimated on a Redis Cluster of N primaries (from per Redis CPU-s;")
    print("   linear in primaries, but the busiest primary holds more than 64/N of the shard tags)")
    shards = (1, 3, 6, 12)
    print(f"{'busiest primary: shard tags of 64':<38}" + "".join(f"{busiest_share(n):>9}" for n in shards))
    for name, children in (
        ("deferred run, unguarded", 1),
        ("parent + its 1 deferred run", 1),
        ("parent + its 5 deferred runs", 5),
    ):
        core = figures[name][1] * children
        row = [core * SHARD_TAGS / busiest_share(n) for n in shards]
        print(f"{name:<38}" + "".join(f"{value:>9.0f}" for value in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100, help="runs of each kind in part 1")
    parser.add_argument("--procs", type=int, default=4, help="load processes in part 2")
    parser.add_argument("--seconds", type=float, default=3.0, help="load time of each kind in part 2")
    parser.add_argument("--no-sentinel", action="store_true", help="skip the Sentinel loads")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with RedisServer() as state, RedisServer() as broker:
        state_url, broker_url = f"{state.url}/0", f"{broker.url}/0"
        costs = measure_costs(state_url, broker_url, args.runs)
        redis.Redis.from_url(state_url).flushdb()
        print_costs(costs, args.runs)
        bench_app(state_url, broker_url)  # the imports, before forking
        urls = (state_url, broker_url, None)
        figures = {
            name: measure_load(kind, n, urls, state_url, args.procs, args.seconds)
            for name, (kind, n) in LOADS.items()
        }
        if not args.no_sentinel:
            figures.update(sentinel_loads(broker_url, args.procs, args.seconds))
    print_loads(figures, args.procs, args.seconds)


if __name__ == "__main__":
    main()
