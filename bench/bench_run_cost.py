"""What one deferred run costs Redis: round trips, commands, and bytes kept once done.

    python bench/bench_run_cost.py [--runs 200] [--markers 100000]

Round trips: a real Celery worker (solo pool) runs in this process on a private
Redis; the library's client counts what it sends (a pipeline is one round trip).
Each deferred run is sent alone and waited for, so the counts are per run; the
first runs of each function (connection set-up, script loading) are left out, and
so are recovery passes (per worker and ``defer_recovery_interval``, not per run).
Goals (issue 9): <= 2 per unguarded run, <= 3 behind one guard (concurrency).

Bytes: ``--markers`` completed runs are marked done through the finish script
(pipelined, 1,000 a round trip), and Redis ``used_memory`` is read before and
after; then the same runs are marked as the old one-string-key-per-run marker
(``SET done:<run id> <outcome> EX <ttl>``) on an emptied database of the same
server. Goal: <= 64 bytes per completed run. Prints, without asserting.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from typing import Any

import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_defer import DeferTask, create_defer
from celery_defer.embedded_redis import RedisServer
from celery_defer.outbox.publish import publish
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.redis_io import batched
from celery_defer.store import Store, store_for

BATCH = 1000


class CountingConnection(redis.Connection):
    """A connection that counts round trips (sends) and the commands in them."""

    round_trips = 0
    commands = 0

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.commands += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> list[bytes]:
        CountingConnection.commands += len(commands)
        return super().pack_commands(commands)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.round_trips += 1
        super().send_packed_command(command, check_health)


def count_runs(app: Celery, fn_id: str, ran: threading.Event, runs: int) -> tuple[float, float]:
    """Mean round trips and commands of the library's client per run of ``fn_id``."""
    trips = commands = 0
    for i in range(runs):
        record = DeferRecord(
            "d",
            f"celery_defer.fn.{fn_id}",
            fn_id,
            "{}",
            time.time_ns(),
            ParentRef(f"p-{uuid.uuid4()}", "r", "bench"),
        )
        ran.clear()
        time.sleep(0.02)  # let the previous run's finish land before counting starts
        before = (CountingConnection.round_trips, CountingConnection.commands)
        publish(app, [record])
        if not ran.wait(10):
            raise RuntimeError(f"{fn_id}: run {i} did not run")
        time.sleep(0.05)  # its finish
        trips += CountingConnection.round_trips - before[0]
        commands += CountingConnection.commands - before[1]
    return trips / runs, commands / runs


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def marker_bytes(store: Store, markers: int) -> tuple[float, float, float, int]:
    """Bytes per run: done markers and old string keys (used_memory), markers (MEMORY USAGE); buckets made."""
    client = store.client
    run_ids = [str(uuid.uuid4()) for _ in range(markers)]
    client.flushdb()
    before = used_memory(client)
    for start in range(0, markers, BATCH):
        with batched(client) as batch:
            for run_id in run_ids[start : start + BATCH]:
                store.claims.finish(run_id, "", outcome="succeeded")
        batch.execute("marking runs done")
    new = (used_memory(client) - before) / markers
    bucket_keys = list(client.scan_iter(match="*:done:*", count=1000))
    usage = sum(int(client.memory_usage(key) or 0) for key in bucket_keys) / markers
    client.flushdb()
    before = used_memory(client)
    ttl_s = int(store.settings.done_ttl_s)
    for start in range(0, markers, BATCH):
        pipe = client.pipeline(transaction=False)
        for run_id in run_ids[start : start + BATCH]:
            pipe.set(f"{store.keys.prefix}:done:{run_id}", "succeeded", ex=ttl_s)
        pipe.execute()
    old = (used_memory(client) - before) / markers
    client.flushdb()
    return new, old, usage, len(bucket_keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--markers", type=int, default=100_000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    ran = threading.Event()
    with RedisServer() as server:
        app = Celery("bench", broker=f"{server.url}/0", task_cls=DeferTask, set_as_current=False)
        # Recovery passes share the counted client; they cost per worker and interval,
        # not per run: one at start, then none while counting.
        app.conf.update(
            task_ignore_result=True, defer_redis_url=f"{server.url}/1", defer_recovery_interval=3600
        )
        create_defer(app, {"id": "plain"}, lambda ctx: ran.set())
        create_defer(app, {"id": "guarded", "concurrency": 5}, lambda ctx: ran.set())
        store = store_for(app)
        store.client.connection_pool.connection_class = CountingConnection
        store.client.connection_pool.disconnect()
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            time.sleep(1)  # the recovery pass at start is over
            count_runs(app, "plain", ran, 3)  # warm up: connections, scripts, clock
            count_runs(app, "guarded", ran, 3)
            plain = count_runs(app, "plain", ran, args.runs)
            guarded = count_runs(app, "guarded", ran, args.runs)
        new, old, usage, buckets = marker_bytes(store, args.markers)
    print(f"Redis round trips of the library's client per deferred run ({args.runs} runs each, real worker)")
    print(f"{'run':<30}{'round trips':>12}{'commands':>10}{'goal':>6}")
    print(f"{'unguarded':<30}{plain[0]:>12.2f}{plain[1]:>10.2f}{'2':>6}")
    print(f"{'one guard (concurrency 5)':<30}{guarded[0]:>12.2f}{guarded[1]:>10.2f}{'3':>6}")
    print()
    print(f"Redis memory per completed run, {args.markers} runs (used_memory delta)")
    print(f"{'done markers (' + str(buckets) + ' bucket keys)':<42}{new:>8.1f} B   goal <= 64")
    print(f"{'  the same, by MEMORY USAGE of the buckets':<42}{usage:>8.1f} B")
    print(f"{'one string key per run (old)':<42}{old:>8.1f} B")
    print(f"{'ratio new / old':<42}{new / old:>8.2f}x")


if __name__ == "__main__":
    main()
