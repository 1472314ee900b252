"""The demo's main job: place a batch of orders on a real worker and check every deferred run."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import redis

from celery_defer.settings import read_settings
from example_project import results
from example_project.app import app, configure, redis_db_url
from example_project.check import check, count_skips
from example_project.functions import FLOW_LIMITS
from example_project.orders import order_placed
from example_project.plan import Expectations, expectations, order_plan
from example_project.progress import ProgressBar
from example_project.report import render
from example_project.runner import Worker, demo_redis

logger = logging.getLogger(__name__)

_FINAL_OUTCOMES = {"succeeded", "failed"}
_READY_STATES = {"SUCCESS", "FAILURE", "REVOKED"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m example_project", description=__doc__)
    parser.add_argument("--orders", type=int, default=60, help="orders to place (default 60)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds for the whole batch (default 120)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4,
        help="worker processes (default 4: more than the tightest concurrency limits, so they bind)",
    )  # fmt: skip
    parser.add_argument(
        "--settle", type=float, default=1.0,
        help="seconds to keep watching for extra runs once all expected ones ran (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--log-file", type=Path, default=None,
        help="where the worker writes its log (default: a new file in the temp directory); always kept",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the driver does")
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    return args


def send_orders(count: int) -> dict[str, int]:
    """Place orders ``1..count``; return ``{parent task id: order id}``."""
    bar = ProgressBar("placing orders ", count)
    sent: dict[str, int] = {}
    for order_id in range(1, count + 1):
        plan = order_plan(order_id)
        result = order_placed.apply_async(args=[order_id, plan.email, plan.total_cents])
        sent[result.id] = order_id
        bar.update(order_id)
    bar.close()
    return sent


def _finished(client: redis.Redis, expected: Expectations, orders: dict[str, int]) -> tuple[int, int]:
    """Return (expected deferred runs completed, parents ended for good)."""
    observed = results.load(client)
    done = {(orders[pid], fn) for (pid, fn), n in observed.completed.items() if n and pid in orders}
    ended = sum(
        1 for pid, end in observed.parents.items() if pid in orders and end.outcome in _FINAL_OUTCOMES
    )
    return len(done & expected.pairs), ended


def wait_for_runs(
    client: redis.Redis,
    expected: Expectations,
    orders: dict[str, int],
    worker: Worker,
    deadline: float,
) -> bool:
    """Wait until every expected deferred run completed and every parent ended."""
    bar = ProgressBar("deferred runs  ", len(expected.pairs))
    try:
        while True:
            runs, parents = _finished(client, expected, orders)
            bar.update(runs)
            if runs == len(expected.pairs) and parents == len(orders):
                return True
            if not worker.alive:
                print("\nthe worker died")
                return False
            if time.monotonic() >= deadline:
                print(f"\ntimed out: {runs}/{len(expected.pairs)} runs, {parents} parents ended")
                return False
            time.sleep(0.1)
    finally:
        bar.close()


def parent_states(orders: dict[str, int], *, wait_s: float) -> dict[str, str]:
    """Return Celery's state of each parent task, waiting up to ``wait_s`` for final ones."""
    deadline = time.monotonic() + wait_s
    states: dict[str, str] = {}
    while True:
        # The backend's meta, not AsyncResult(...).state: on Celery 5.4 a read AsyncResult
        # can sit in a reference cycle until a late GC, whose __del__ then retries for
        # minutes to unsubscribe from the embedded Redis this script has stopped.
        states = {task_id: str(app.backend.get_task_meta(task_id)["status"]) for task_id in orders}
        if all(state in _READY_STATES for state in states.values()):
            return states
        if time.monotonic() >= deadline:
            return states
        time.sleep(0.2)


def run(args: argparse.Namespace, stack: ExitStack) -> int:
    started = time.monotonic()
    deadline = started + args.timeout
    url, owned = stack.enter_context(demo_redis())
    print(f"redis: {url} ({'embedded, started here' if owned else 'from REDIS_URL'})")
    configure(app, url)
    client = redis.Redis.from_url(redis_db_url(url, 0))
    stack.callback(client.close)
    patterns = [f"{results.PREFIX}*"]
    if owned:
        patterns.append(f"{read_settings(app).key_prefix}:*")
    results.clear(client, patterns=tuple(patterns))

    worker = Worker(url, concurrency=args.concurrency, log_path=args.log_file)
    worker.start()
    stack.callback(_stop_worker, worker)
    print(f"worker: {worker.nodename}, concurrency {args.concurrency}, log {worker.log_path}")
    if not worker.wait_ready(app, timeout_s=max(deadline - time.monotonic(), 1.0)):
        print("the worker did not answer a ping; its log ends with:\n" + worker.log_tail())
        return 1
    expected = expectations(args.orders)
    batch_started = time.monotonic()
    orders = send_orders(args.orders)
    complete = wait_for_runs(client, expected, orders, worker, deadline)
    batch_s = time.monotonic() - batch_started
    if complete:
        time.sleep(args.settle)
    states = parent_states(orders, wait_s=5.0 if complete else 0.0)
    summary = check(
        expected,
        results.load(client),
        orders,
        states,
        count_skips(worker.log_text(), orders),
        limits=FLOW_LIMITS,
    )
    print()
    print(render(summary, wall_s=time.monotonic() - started, batch_s=batch_s))
    if complete and summary.ok:
        return 0
    print(f"\nworker log ({worker.log_path}) ends with:\n{worker.log_tail()}")
    return 1


def _stop_worker(worker: Worker) -> None:
    code = worker.stop()
    # The log is kept: the path printed at the start is still there to read.
    print(f"worker stopped (exit code {code}), its log: {worker.log_path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with ExitStack() as stack:
        return run(args, stack)
