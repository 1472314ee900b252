"""The end-to-end figure of ``bench_parent.py`` (``e2e``), in CPU time as well as wall time.

    python bench/bench_e2e_cpu.py [--rounds 3] [--parents 200] [--children 5]

200 parents x 5 children on one prefork worker (2 processes), as ``bench_parent.py
--only e2e`` runs them: children deferred from the parent (``defer()``) against
children sent with ``apply_async`` from its body, alternately. Beside each side's
wall time it prints the CPU time the whole workload took: the worker's processes
(its main process and both pool processes, from ``/proc``) and the Redis server
(``INFO cpu``); "of it main" is the worker's main process alone. On a shared
2-core machine the wall time swings with everyone else's load; the CPU a side
needs moves much less. Median of the rounds. Linux only; no asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis

from celery_defer.embedded_redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_parent import Worker, wait_for  # noqa: E402  (the repository root, just added)

TICKS_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int, *, children: bool = True) -> float:
    """User and system CPU seconds of ``pid`` (and of its live children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / TICKS_S  # utime, stime
    if not children:
        return total
    pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return total + sum(process_cpu_s(int(child)) for child in pids)


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parents", type=int, default=200)
    parser.add_argument("--children", type=int, default=5)
    args = parser.parse_args()
    with RedisServer() as server:
        env = {
            **os.environ,
            "CDB_REDIS_URL": server.url,
            "CDB_PREFIX": f"cdb-{uuid.uuid4().hex[:8]}-",
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(env)
        import bench.parent_app as app  # configured by the environment just set

        stamps = redis.Redis.from_url(f"{server.url}/3")
        worker = Worker(env, concurrency=2, queue=app.app.conf.task_default_queue)
        worker.wait_ready(app)
        figures: dict[str, list[tuple[float, ...]]] = {"apply_async": [], "defer": []}
        total = args.parents * args.children
        try:
            for _ in range(args.rounds):
                for name, task in (("apply_async", app.fan_apply), ("defer", app.fan_defer)):
                    stamps.set("children", 0)
                    pid = worker.process.pid
                    cpu_before = (
                        process_cpu_s(pid),
                        redis_cpu_s(stamps),
                        process_cpu_s(pid, children=False),
                    )
                    start = time.time()
                    for _ in range(args.parents):
                        task.apply_async(args=(args.children,))
                    wait_for(lambda: int(stamps.get("children") or 0) >= total, 300)
                    wall = time.time() - start
                    worker_s = process_cpu_s(pid) - cpu_before[0]
                    main_s = process_cpu_s(pid, children=False) - cpu_before[2]
                    redis_s = redis_cpu_s(stamps) - cpu_before[1]
                    figures[name].append((wall, worker_s, redis_s, worker_s + redis_s, main_s))
        finally:
            worker.stop()
    print(f"{args.parents} parents x {args.children} children, one prefork worker (2 processes)")
    print(f"median of {args.rounds} rounds, s (ratio to apply_async)")
    heads = ("wall", "worker CPU", "Redis CPU", "CPU, both", "of it main")
    print(f"  {'':12} " + " ".join(f"{head:>13}" for head in heads))
    base = [statistics.median(column) for column in zip(*figures["apply_async"], strict=True)]
    for name, rows in figures.items():
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        cells = " ".join(f"{s:7.2f} {s / b:5.2f}x" for s, b in zip(medians, base, strict=True))
        print(f"  {name:12} {cells}")


if __name__ == "__main__":
    main()
