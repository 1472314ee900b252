"""The Celery app that integration tests run in real worker processes.

Configured from the environment so the test process and its workers agree:
``CDT_REDIS_URL`` (required), ``CDT_ACKS_LATE`` ("1" for acks_late).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis
from celery import Celery, current_task

from celery_defer import DeferTask, NonRetriableError, RetryAfterError, create_defer, defer, step

REDIS_URL = os.environ.get("CDT_REDIS_URL", "redis://127.0.0.1:1")
ACKS_LATE = os.environ.get("CDT_ACKS_LATE") == "1"

app = Celery("workerapp", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1", task_cls=DeferTask)
app.conf.update(
    defer_redis_url=f"{REDIS_URL}/2",
    defer_recovery_interval=1,
    defer_lease=3,
    defer_retry_base_delay=0.05,
    defer_retry_max_delay=0.2,
    task_acks_late=ACKS_LATE,
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 3},
    result_extended=True,
    broker_connection_retry_on_startup=True,
    # Parents travel as msgpack here, so tests can show deferred runs are JSON anyway.
    task_serializer="msgpack",
    accept_content=["json", "msgpack"],
)

_state = redis.Redis.from_url(f"{REDIS_URL}/3")


def seen(kind: str, **fields: Any) -> None:
    """Record what happened, for the test process to read (list ``seen``)."""
    _state.rpush("seen", json.dumps({"kind": kind, "t": time.time(), **fields}))


def record_run(ctx: Any) -> None:
    data = ctx.event.data if isinstance(ctx.event.data, dict) else ctx.event.data.model_dump()
    seen(
        "run",
        defer_id=ctx.parents[0].defer_id,
        parent=ctx.parents[0].run_id,
        run_id=ctx.run_id,
        attempt=ctx.attempt,
        data=data,
    )
    if data.get("fail_times", 0) > ctx.attempt:
        raise RuntimeError(f"planned failure {ctx.attempt}")
    if data.get("non_retriable"):
        raise NonRetriableError("planned")
    if data.get("retry_after") and ctx.attempt == 0:
        raise RetryAfterError(data["retry_after"])
    if data.get("sleep"):
        time.sleep(data["sleep"])


recorder = create_defer(app, {"id": "recorder", "retries": 2}, record_run)
parked = create_defer(app, {"id": "parked", "queue": "parked", "priority": {"run": 3}}, record_run)


def reject_in_worker(data: dict[str, Any]) -> dict[str, Any]:
    """Accepts at the call site, rejects in the receiver: a receiver-side schema failure."""
    receiving = current_task is not None and current_task.name == "celery_defer.fn.picky"
    if receiving and data.get("reject_in_worker"):
        raise ValueError("rejected by the receiver")
    return data


picky = create_defer(app, {"id": "picky", "schema": reject_in_worker, "retries": 1}, record_run)


impatient = create_defer(app, {"id": "impatient", "queue": "late", "timeouts": {"start": "1s"}}, record_run)
slowpoke = create_defer(app, {"id": "slowpoke", "retries": 2, "timeouts": {"finish": "1s"}}, record_run)


@create_defer(app, {"id": "nester"})
async def nester(ctx: Any) -> None:
    record_run(ctx)
    ctx.defer("child", function=recorder, data={"from": ctx.run_id})


@app.task(bind=True)
def parent(self: DeferTask, plan: dict[str, Any]) -> str:
    """Defers what ``plan`` says, per attempt, then succeeds, retries or fails."""
    attempt = self.request.retries
    for defer_id, data in plan.get("defers", {}).items():
        defer(defer_id, function=recorder, data=data)
    for defer_id, data in plan.get("per_attempt", {}).items():
        defer(f"{defer_id}-{attempt}", function=recorder, data=data)
    for defer_id, data in plan.get("parked", {}).items():
        defer(defer_id, function=parked, data=data)
    if plan.get("same_id"):
        defer("same", function=recorder, data={"attempt": attempt})
    if plan.get("picky"):
        defer("picky", function=picky, data={"reject_in_worker": True})
    if plan.get("impatient"):
        defer("impatient", function=impatient, data={})
    if plan.get("slowpoke"):
        defer("slowpoke", function=slowpoke, data={"sleep": 3})
    if plan.get("nest"):
        defer("nest", function=nester, data={})
    seen("parent", run_id=self.request.id, attempt=attempt)
    if attempt < plan.get("retries", 0):
        raise self.retry(countdown=0.05, max_retries=5)
    if plan.get("sleep_on_attempt") == attempt:
        time.sleep(plan.get("sleep", 30))
    if plan.get("fail"):
        raise ValueError("planned parent failure")
    return "ok"


@app.task(bind=True, soft_time_limit=1)
def parent_soft_limit(self: DeferTask) -> None:
    """Defers, then runs into its soft time limit: a final failure."""
    defer("before-soft-limit", function=recorder, data={})
    seen("parent", run_id=self.request.id, attempt=self.request.retries)
    time.sleep(10)


class KillAfterBody(DeferTask):
    """Kills its whole worker once, after the body returned and before dispatch."""

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        if _state.set("killed-once", 1, nx=True):
            seen("killing", pid=os.getpid())
            os.killpg(os.getpgid(0), signal.SIGKILL)
        super().after_return(*args, **kwargs)


@app.task(bind=True, base=KillAfterBody)
def parent_killed(self: DeferTask, n: int) -> int:
    defer("after-kill", function=recorder, data={"n": n})
    seen("parent", run_id=self.request.id, attempt=self.request.retries)
    return n


@app.task(bind=True, time_limit=1.5)
def parent_time_limit(self: DeferTask) -> None:
    """Attempt 0 defers and retries; attempt 1 is killed by the hard time limit."""
    if self.request.retries == 0:
        defer("before-limit", function=recorder, data={})
        raise self.retry(countdown=0.05)
    defer("lost-with-attempt", function=recorder, data={})
    seen("parent", run_id=self.request.id, attempt=self.request.retries)
    time.sleep(10)


def flow_run(ctx: Any) -> None:
    """Records when it starts and ends, and how many runs of its function were active."""
    data = ctx.event.data
    function = ctx.event.name
    group = f"active:{function}:{data.get('group', '')}"
    in_group, in_total = _state.incr(group), _state.incr(f"active:{function}")
    seen("start", fn=function, n=in_group, total=in_total, run_id=ctx.run_id, data=data)
    try:
        time.sleep(data.get("sleep", 0))
    finally:
        _state.decr(group)
        _state.decr(f"active:{function}")
    seen("end", fn=function, run_id=ctx.run_id, data=data)


FLOW = {
    "conc2": {"concurrency": 2},
    "conc-key": {"concurrency": {"limit": 1, "key": "event.data.group"}},
    # Two functions sharing one slot (scope "app"): the hog runs on its own queue.
    "hog": {"concurrency": {"limit": 1, "key": lambda e: "shared", "scope": "app"}, "queue": "hog"},
    "after-hog": {"concurrency": {"limit": 1, "key": lambda e: "shared", "scope": "app"}},
    "throttled": {"throttle": {"limit": 5, "period": "2s"}},
    "bursty": {"throttle": {"limit": 5, "period": "2s", "burst": 5}},
    "rated": {"rate_limit": {"limit": 3, "period": "10s"}},
    "debounced": {"debounce": {"period": "1s", "key": "event.data.k"}},
    "debounced-cap": {"debounce": {"period": "1s", "key": "event.data.k", "timeout": "2s"}},
    "idem": {"idempotency": "event.data.k"},
    "single-skip": {"singleton": {"key": "event.data.k", "mode": "skip"}},
    "single-cancel": {"singleton": {"key": lambda event: event.data["k"], "mode": "cancel"}},
}
flow_functions = {
    fn_id: create_defer(app, {"id": fn_id, "retries": 0, **config}, flow_run)  # type: ignore[typeddict-item]
    for fn_id, config in FLOW.items()
}


@app.task
def fan_out(fn_id: str, items: list[dict[str, Any]]) -> None:
    """Defers each item to the flow-control function ``fn_id``, in order."""
    for index, item in enumerate(items):
        defer(f"item-{index}", function=flow_functions[fn_id], data=item)


def count_body(name: str) -> int:
    """Count one execution of a step's body, in the test Redis (``body:<name>``)."""
    return int(_state.incr(f"body:{name}"))


@app.task(bind=True)
def step_parent(self: DeferTask, plan: dict[str, Any]) -> str:
    """Charges in a step that defers a receipt; then what ``plan`` says (kill, sleep, nap)."""
    run_id = self.request.id

    def charge() -> dict[str, int]:
        executions = count_body(run_id)
        defer("in-step", function=recorder, data={"from": "step"})
        return {"executions": executions}

    charged = step.run("charge", charge)
    seen("stepped", run_id=run_id, attempt=self.request.retries, charged=charged)
    if plan.get("kill") and _state.set(f"killed:{run_id}", 1, nx=True):
        seen("killing", pid=os.getpid())
        os.killpg(os.getpgid(0), signal.SIGKILL)
    if plan.get("sleep"):
        time.sleep(plan["sleep"])
    if plan.get("nap"):
        step.sleep("nap", plan["nap"])
        seen("woke", run_id=run_id, attempt=self.request.retries)
    return "ok"


def step_handler(ctx: Any) -> None:
    """A deferred run with one step; then naps, or asks for a retry on its first attempt, when told to."""
    ctx.step.run("count", count_body, ctx.run_id)
    seen("stepped-run", run_id=ctx.run_id, attempt=ctx.attempt)
    if ctx.event.data.get("nap"):
        ctx.step.sleep("nap", ctx.event.data["nap"])
        seen("woke", run_id=ctx.run_id, attempt=ctx.attempt)
    if ctx.attempt == 0 and ctx.event.data.get("retry_after"):
        raise RetryAfterError(ctx.event.data["retry_after"])


_SHARED_SLOT: Any = {"limit": 1, "key": lambda event: "step-slot", "scope": "app"}
step_conc = create_defer(app, {"id": "step-conc", "retries": 2, "concurrency": _SHARED_SLOT}, step_handler)
hog_conc = create_defer(app, {"id": "hog-conc", "retries": 0, "concurrency": _SHARED_SLOT}, flow_run)


@app.task
def defer_one(fn_id: str, data: dict[str, Any]) -> None:
    """Defers one run of ``step-conc`` or ``hog-conc``."""
    function = step_conc if fn_id == "step-conc" else hog_conc
    defer("one", function=function, data=data)
