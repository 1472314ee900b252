"""What waiting for a replica costs each script on a Sentinel-managed store, against not waiting.

    python bench/bench_replica_acks.py [--runs 2000] [--rounds 5]

Starts a master, a replica and a sentinel (``SentinelGroup``) and records one
finalizing run with one defer (``RedisOutbox.record``, the write that carries
"nothing lost") ``--runs`` times per round through two clients of the same
master: one with ``min_replica_acks`` 0 (the baseline) and one with 1 (the
default with Sentinel). Prints the median µs per script of each and their ratio,
without asserting.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from celery_defer.embedded_sentinel import SentinelGroup
from celery_defer.keys import KeySpace
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.outbox.redis_outbox import RedisOutbox
from celery_defer.redis_clients import connect
from celery_defer.settings import Settings


def per_script_us(outbox: RedisOutbox, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        run_id = uuid.uuid4().hex
        record = DeferRecord(
            "d", "celery_defer.fn.x", "x", "{}", time.time_ns(), ParentRef(run_id, run_id, "p")
        )
        outbox.record(run_id, [record], final=True)
    return (time.perf_counter() - start) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with SentinelGroup() as group:
        outboxes = {}
        for acks in (0, 1):
            options = {**group.transport_options, "min_replica_acks": acks}
            settings = Settings(redis_url=group.url, redis_transport_options=options)
            outboxes[acks] = RedisOutbox(
                connect(group.url, transport_options=options), settings, KeySpace("bench")
            )
        samples: dict[int, list[float]] = {0: [], 1: []}
        for _ in range(args.rounds):
            for acks, outbox in outboxes.items():  # interleaved, so load on the host hits both alike
                samples[acks].append(per_script_us(outbox, args.runs))
        plain, acked = (statistics.median(samples[acks]) for acks in (0, 1))
        print(f"record script, no replica ack (baseline): {plain:8.1f} µs")
        print(f"record script, WAIT 1 replica          : {acked:8.1f} µs")
        print(f"ratio acked / baseline                 : {acked / plain:8.2f}x")


if __name__ == "__main__":
    main()
