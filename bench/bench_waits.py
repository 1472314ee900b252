"""Waiting without polling: requeues per run and start order behind a throttle and a concurrency limit.

    python bench/bench_waits.py [--runs 200] [--broker amqp://guest:guest@127.0.0.1:5672//]
                                [--baseline-ref main] [--processes 4]

Starts a private Redis and, per library version and guard, a real prefork
``celery worker`` subprocess (``bench/waits_app.py``), defers ``--runs`` runs to a
function behind (a) a throttle of 50 per second and (b) a concurrency limit of 2
(handlers sleep ``--sleep`` s), and prints per scenario:

- requeues per run: deliveries of the deferred task beyond the first, per run
  (a wait's re-delivery, a parked run sent from its line); goal <= 1.0;
- inversions: pairs of runs that started in the other order than they first asked,
  i.e. the Kendall distance of the start order from first come, first served;
  goal 0. Also counted: the pairs inverted by more than ``--tie-ms`` at both ends
  (asked that much apart, started that much apart in the other order). Two
  measures: "delivery" takes a run's first delivery (stamped in ``task_prerun``)
  as its ask; but pool processes race between a delivery and the guard check (a
  claim, a cold process's first connection come between), so two runs delivered
  a moment apart may ask the throttle, and so be booked, in the other order.
  "Redis" takes the ask where it is decided, the run's first guard script, and
  the start at the handler's record, both in the order Redis ran them and by its
  clock (``MONITOR``, see ``redis_order.py``): the honest measure.

The baseline (``--baseline-ref``, a git ref of this repository; ``""`` to skip) is
extracted to a temporary directory and its worker runs it in the same process run,
side by side. Prints, without asserting; ``BENCH_DUMP=1`` also prints every
inverted pair with its ask and start times (ms from the first ask).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery
from redis_order import RedisOrder

from celery_defer.embedded_redis import RedisServer

HERE = Path(__file__).resolve().parent
GUARDS = ("throttle", "concurrency")
ROOT = HERE.parent


@dataclass(frozen=True)
class Outcome:
    requeues_per_run: float
    inversions: int
    clear_inversions: int
    redis_inversions: int
    redis_clear_inversions: int
    wall_s: float


def extract(ref: str) -> Path:
    """The library as it is at git ``ref``, in a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="bench-waits-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "celery_defer"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def inversions(asked: dict[str, tuple[int, int]], started: list[tuple[str, int]], tie_ns: int = 0) -> int:
    """Pairs of runs that started in the other order than they first asked.

    ``asked``: run id -> (sequence, time ns) of its first delivery; ``started``:
    (run id, time ns) in start order. With ``tie_ns`` only pairs asked and started
    more than that apart count.
    """
    count = 0
    for (run_a, start_a), (run_b, start_b) in itertools.combinations(started, 2):
        if run_a not in asked or run_b not in asked or asked[run_a][0] < asked[run_b][0]:
            continue
        if tie_ns and (asked[run_a][1] - asked[run_b][1] <= tie_ns or start_b - start_a <= tie_ns):
            continue
        count += 1
    return count


def run_scenario(
    server: RedisServer, broker: str, library: Path | None, kind: str, args: argparse.Namespace
) -> Outcome:
    prefix = f"bw{os.getpid()}-{time.monotonic_ns()}-"
    state = redis.Redis.from_url(f"{server.url}/3", decode_responses=True)
    for db in (0, 2, 3):
        redis.Redis.from_url(f"{server.url}/{db}").flushdb()
    path = [str(library)] if library is not None else []
    env = {
        **os.environ,
        "BENCH_REDIS_URL": server.url,
        "BENCH_BROKER_URL": broker,
        "BENCH_QUEUE_PREFIX": prefix,
        "PYTHONPATH": os.pathsep.join([*path, str(HERE)]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    log = Path(tempfile.mkstemp(prefix=f"bench-waits-{kind}-", suffix=".log")[1])
    argv = [sys.executable, "-m", "celery", "-A", "waits_app", "worker", "-l", "info"]
    argv += ["-c", str(args.processes), "-Q", f"{prefix}celery"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("w") as out:
        worker = subprocess.Popen(
            argv, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start, see {log}")
            time.sleep(0.1)
        client = Celery("bench_waits", broker=broker)
        client.conf.task_default_queue = f"{prefix}celery"
        with RedisOrder(server.url) as order:
            began = time.monotonic()
            client.send_task("waits_app.fan_out", args=(kind, args.runs, args.sleep))
            deadline = began + args.timeout
            while state.llen("starts") < args.runs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind}: {state.llen('starts')} of {args.runs} started; see {log}")
                time.sleep(0.05)
            wall_s = time.monotonic() - began
            time.sleep(0.5)  # late copies, if any, are counted too
        asked = {
            run: (int(seq), int(ns))
            for run, seq, ns in ((run, *text.split()) for run, text in state.hgetall("first").items())
        }
        started = [(run, int(ns)) for run, ns in (text.split() for text in state.lrange("starts", 0, -1))]
        deliveries = int(state.get("deliveries") or 0)
        if len({run for run, _ in started}) != len(started):
            print(f"  ! {kind}: a run started twice", file=sys.stderr)
        print(f"  ({kind}: library {state.get('library')}, worker log {log})", file=sys.stderr)
        if len(order.asked) != len(started) or len(order.started) != len(started):
            seen = f"{len(order.asked)} asks and {len(order.started)} starts"
            print(f"  ! {kind}: Redis saw {seen} of {len(started)} runs", file=sys.stderr)
        if os.environ.get("BENCH_DUMP"):
            print("  first delivery -> handler start, pool processes' clocks:")
            _dump(asked, started)
            print("  guard check -> handler start, as Redis ordered them:")
            _dump(order.asked, order.started)
        tie_ns = int(args.tie_ms * 1e6)
        return Outcome(
            deliveries / args.runs - 1,
            inversions(asked, started),
            inversions(asked, started, tie_ns),
            inversions(order.asked, order.started),
            inversions(order.asked, order.started, tie_ns),
            wall_s,
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        if not broker.startswith("redis"):
            _drop_queues(broker, prefix)


def _dump(asked: dict[str, tuple[int, int]], started: list[tuple[str, int]]) -> None:
    # Every inverted pair, times in ms from the first ask.
    t0 = min(ns for _, ns in asked.values())
    when = dict(started)
    rows = sorted(asked.items(), key=lambda item: item[1][0])
    for (run_a, (seq_a, ns_a)), (run_b, (seq_b, ns_b)) in itertools.combinations(rows, 2):
        if when[run_b] < when[run_a]:
            print(
                f"  {seq_a} asked {(ns_a - t0) / 1e6:.1f} started {(when[run_a] - t0) / 1e6:.1f}"
                f" / {seq_b} asked {(ns_b - t0) / 1e6:.1f} started {(when[run_b] - t0) / 1e6:.1f}"
            )


def _drop_queues(broker: str, prefix: str) -> None:
    # The bench's own queues on a shared RabbitMQ; best effort.
    with Celery(broker=broker).connection_for_write() as connection:
        channel = connection.default_channel
        for name in (f"{prefix}celery",):
            try:
                channel.queue_delete(name)
            except Exception as exc:
                print(f"  (could not delete queue {name}: {exc})", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--broker", default="", help="broker URL; the private Redis (db 0) by default")
    parser.add_argument("--baseline-ref", default="main", help='git ref to compare with; "" for none')
    parser.add_argument("--processes", type=int, default=4, help="prefork pool processes of the worker")
    parser.add_argument("--sleep", type=float, default=0.02, help="seconds each handler sleeps")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--tie-ms", type=float, default=5.0, help="closer than this is a tie")
    parser.add_argument("--guards", nargs="+", choices=GUARDS, default=list(GUARDS), help="scenarios to run")
    args = parser.parse_args()
    versions: list[tuple[str, Path | None]] = []
    if args.baseline_ref:
        versions.append((args.baseline_ref, extract(args.baseline_ref)))
    versions.append(("this tree", None))
    with RedisServer() as server:
        broker = args.broker or f"{server.url}/0"
        shown = "redis (private)" if not args.broker else args.broker.split("@")[-1]
        print(f"{args.runs} runs per scenario, one prefork worker of {args.processes} processes")
        print(f"broker: {shown}; throttle 50/s; concurrency limit 2, handlers sleep {args.sleep:g} s")
        print(f"inversions (all / more than {args.tie_ms:g} ms apart): delivery = first delivery to")
        print("handler start, stamped in the pool processes; Redis = guard check to handler start,")
        print("as Redis ordered them")
        print(f"{'guard':<13}{'version':<12}{'requeues/run':>14}{'delivery':>12}{'Redis':>12}{'wall s':>9}")
        results: dict[tuple[str, str], Outcome] = {}
        for kind in args.guards:
            for name, library in versions:
                outcome = run_scenario(server, broker, library, kind, args)
                results[kind, name] = outcome
                print(
                    f"{kind:<13}{name:<12}{outcome.requeues_per_run:>14.2f}"
                    f"{f'{outcome.inversions} / {outcome.clear_inversions}':>12}"
                    f"{f'{outcome.redis_inversions} / {outcome.redis_clear_inversions}':>12}"
                    f"{outcome.wall_s:>9.1f}",
                    flush=True,
                )
        if args.baseline_ref:
            print("ratios, this tree / baseline (requeues per run, wall time):")
            for kind in args.guards:
                new, old = results[kind, "this tree"], results[kind, args.baseline_ref]
                ratio = new.requeues_per_run / old.requeues_per_run if old.requeues_per_run else float("nan")
                print(f"  {kind:<13}{ratio:>8.3f}x requeues {new.wall_s / old.wall_s:>8.2f}x wall")


if __name__ == "__main__":
    main()
