"""The state store on one Redis and on a local three-node Redis Cluster, next to a PING.

What a run costs on each (recording its defers, finalizing, forgetting them; claiming
and finishing a deferred run), and what the shards cost recovery: one pass walks
every shard of the three indexes (pipelined) where there used to be one key each.

Run: ``python bench/bench_cluster.py [--iterations N]``. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from celery import Celery

from celery_defer.embedded_cluster import RedisClusterServers
from celery_defer.embedded_redis import RedisServer
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.redis_io import Scripts
from celery_defer.store import Store, store_for

Op = Callable[[int], object]


def measure_us(op: Op, iterations: int) -> float:
    """Mean microseconds per call of ``op(i)``, after a short warm-up."""
    for i in range(min(50, iterations)):
        op(-1 - i)
    start = time.perf_counter_ns()
    for i in range(iterations):
        op(i)
    return (time.perf_counter_ns() - start) / iterations / 1000


def store_at(url: str) -> Store:
    app = Celery("bench", set_as_current=False)
    app.conf.defer_redis_url = url
    return store_for(app)


def ops(store: Store) -> dict[str, Op]:
    outbox, claims = store.outbox, store.claims
    take_due = Scripts(store.client, "indexes", ("take_due",))

    def parent_run(i: int) -> None:
        run_id = f"parent-{i}"
        parent = ParentRef(run_id, run_id, "bench.parent")
        records = [DeferRecord(d, "celery_defer.fn.f", "f", "{}", 1, parent) for d in ("a", "b")]
        kept = outbox.record(run_id, records, final=True)
        outbox.complete(run_id, [record.defer_id for record in kept])

    def deferred_run(i: int) -> None:
        run_id = f"deferred-{i}"
        claims.claim(run_id, "w", lease_ms=60_000, attempt=0, resend="{}")
        claims.finish(run_id, "w", outcome="succeeded")

    def recovery_walk(i: int) -> None:
        outbox.claim_stale_attempts(limit=200, lease_ms=60_000)
        claims.take_lapsed(limit=200, lease_ms=60_000)
        outbox.claim_due(limit=200, lease_ms=60_000)

    def one_key_walk(i: int) -> None:
        # What a pass cost before shards: one take_due per index, on one key each.
        for index in (store.keys.attempts, store.keys.inflight, store.keys.finalized):
            take_due("take_due", [index(0)], [200, 60_000], doing="bench")

    return {
        "PING round trip": lambda i: store.client.ping(),
        "recovery, 3 x 1 key (no shards)": one_key_walk,
        "parent run (record+complete)": parent_run,
        "deferred run (claim+finish)": deferred_run,
        "recovery walk (3 x 64 shards)": recovery_walk,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    iterations = parser.parse_args().iterations
    with RedisServer() as server, RedisClusterServers() as cluster:
        single, clustered = ops(store_at(server.url)), ops(store_at(cluster.url))
        print(f"{iterations} iterations, µs per op; x PING = against the same store's PING\n")
        header = f"{'redis µs':>10}{'x PING':>8}{'cluster µs':>12}{'x PING':>8}{'cluster/redis':>15}"
        print(f"{'operation':<34}{header}")
        ping = {"redis": measure_us(single["PING round trip"], iterations)}
        ping["cluster"] = measure_us(clustered["PING round trip"], iterations)
        for name in single:
            if name == "PING round trip":
                one, many = ping["redis"], ping["cluster"]
            else:
                one = measure_us(single[name], iterations)
                many = measure_us(clustered[name], iterations)
            print(
                f"{name:<34}{one:>10.1f}{one / ping['redis']:>8.2f}"
                f"{many:>12.1f}{many / ping['cluster']:>8.2f}{many / one:>15.2f}"
            )


if __name__ == "__main__":
    main()
