"""The Celery app that integration tests run in real worker processes.

Configured from the environment so the test process and its workers agree:
``CDT_REDIS_URL`` (required), ``CDT_ACKS_LATE`` ("1" for acks_late), ``CDT_STATE_URL``
(celery_defer's own Redis, when a test runs it apart from the broker's), ``CDT_STATE_OPTIONS``
(JSON for ``defer_redis_transport_options``, e.g. a Sentinel master name),
``CDT_CLOCK_SKEW_S`` (seconds this worker's wall clock is off, to play a host
whose clock disagrees: ``time.time_ns``, which only celery_defer reads, is shifted),
``CDT_FAST_RESTORE`` (see ``broker_transport_options``), ``CDT_BROKER_URL``
(another broker, e.g. RabbitMQ; the state stays in Redis) and ``CDT_QUEUE_PREFIX``
(put before every queue name, so that runs sharing a broker do not meet) and
``CDT_DONE_TTL_S`` (``defer_done_ttl``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import redis
from celery import Celery, current_task
from celery.signals import task_failure, task_prerun, task_retry, task_success
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from celery_defer import DeferTask, NonRetriableError, RetryAfterError, create_defer, defer, step
from celery_defer.deferred import parking
from celery_defer.store import store_for

REDIS_URL = os.environ.get("CDT_REDIS_URL", "redis://127.0.0.1:1")
ACKS_LATE = os.environ.get("CDT_ACKS_LATE") == "1"
FAST_RESTORE = os.environ.get("CDT_FAST_RESTORE") == "1"
CLOCK_SKEW_NS = int(float(os.environ.get("CDT_CLOCK_SKEW_S", "0")) * 1e9)
BROKER_URL = os.environ.get("CDT_BROKER_URL") or f"{REDIS_URL}/0"
QUEUE_PREFIX = os.environ.get("CDT_QUEUE_PREFIX", "")

if CLOCK_SKEW_NS:
    _true_time_ns = time.time_ns
    time.time_ns = lambda: _true_time_ns() + CLOCK_SKEW_NS


def queue(name: str) -> str:
    """The name of one of this app's queues on the broker."""
    return f"{QUEUE_PREFIX}{name}"


app = Celery("workerapp", broker=BROKER_URL, backend=f"{REDIS_URL}/1", task_cls=DeferTask)
app.conf.update(
    task_default_queue=queue("celery"),
    # Remote control (revoke) and events on their own exchanges, for the same reason.
    control_exchange=queue("celery"),
    event_exchange=queue("celeryev"),
    defer_redis_url=os.environ.get("CDT_STATE_URL") or f"{REDIS_URL}/2",
    defer_redis_transport_options=json.loads(os.environ.get("CDT_STATE_OPTIONS") or "{}"),
    defer_recovery_interval=1,
    defer_lease=3,
    defer_retry_base_delay=0.05,
    defer_retry_max_delay=0.2,
    # CDT_DONE_TTL_S: how long this worker remembers finished runs (a test of retention).
    **({"defer_done_ttl": float(os.environ["CDT_DONE_TTL_S"])} if os.environ.get("CDT_DONE_TTL_S") else {}),
    task_acks_late=ACKS_LATE,
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": 3,
        # CDT_FAST_RESTORE: a dead worker's unacknowledged messages come back after
        # 3 s, looked for every second (kombu's default: every 100 s). Kill tests
        # want it; it also hands out again any ETA message held longer than 3 s.
        # The restore lock of a worker killed while it restored lapses in 5 s (kombu: 300 s).
        **(
            {"unacked_restore_interval": 1, "unacked_restore_throttle": 1, "unacked_mutex_expire": 5}
            if FAST_RESTORE
            else {}
        ),
    }
    if BROKER_URL.startswith("redis")
    else {},
    result_extended=True,
    broker_connection_retry_on_startup=True,
    # Parents travel as msgpack here, so tests can show deferred runs are JSON anyway.
    task_serializer="msgpack",
    accept_content=["json", "msgpack"],
)

# What the test reads survives a restart of its Redis: writes are tried again for ~20 s.
_state = redis.Redis.from_url(
    f"{REDIS_URL}/3",
    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 40),
    retry_on_error=[redis.ConnectionError, redis.TimeoutError],
)


def seen(kind: str, **fields: Any) -> None:
    """Record what happened, for the test process to read (list ``seen``)."""
    _state.rpush("seen", json.dumps({"kind": kind, "t": time.time(), **fields}))


def _deferred(sender: Any) -> bool:
    return str(getattr(sender, "name", "")).startswith("celery_defer.fn.")


@task_success.connect
def _count_success(sender: Any = None, **_: Any) -> None:
    """Every completion of a deferred run (a duplicate that is acknowledged is not one)."""
    if _deferred(sender):
        seen("done", run_id=sender.request.id, fn=sender.name, pid=os.getpid())


@task_failure.connect
def _count_failure(sender: Any = None, task_id: str = "", exception: Any = None, **_: Any) -> None:
    if _deferred(sender):
        seen("failed", run_id=task_id, fn=sender.name, error=type(exception).__name__)


@task_retry.connect
def _count_retry(sender: Any = None, request: Any = None, **_: Any) -> None:
    if _deferred(sender):
        seen("retry", run_id=request.id, fn=sender.name)


def record_run(ctx: Any) -> None:
    data = ctx.event.data if isinstance(ctx.event.data, dict) else ctx.event.data.model_dump()
    seen(
        "run",
        defer_id=ctx.parents[0].defer_id,
        parent=ctx.parents[0].run_id,
        run_id=ctx.run_id,
        attempt=ctx.attempt,
        data=data,
        pid=os.getpid(),
        queue_prefix=QUEUE_PREFIX,
    )
    if data.get("fail_times", 0) > ctx.attempt:
        raise RuntimeError(f"planned failure {ctx.attempt}")
    if data.get("non_retriable"):
        raise NonRetriableError("planned")
    if data.get("retry_after") and ctx.attempt == 0:
        raise RetryAfterError(data["retry_after"])
    if data.get("sleep"):
        time.sleep(data["sleep"])
    seen(
        "finished",
        defer_id=ctx.parents[0].defer_id,
        parent=ctx.parents[0].run_id,
        run_id=ctx.run_id,
        pid=os.getpid(),
        worker=os.getppid(),
    )


recorder = create_defer(app, {"id": "recorder", "retries": 2}, record_run)
#: The kill matrix's deferred runs, on a queue the worker it kills does not consume:
#: kombu's Redis transport pops a message before it notes it unacked, so a worker
#: SIGKILLed between the two loses what it just popped (celery/celery#7950), a
#: broker loss outside what this library promises (SPEC 8.1: enqueued).
kill_recorder = create_defer(
    app, {"id": "kill-recorder", "retries": 2, "queue": queue("kill-children")}, record_run
)
parked = create_defer(app, {"id": "parked", "queue": queue("parked"), "priority": {"run": 3}}, record_run)


def reject_in_worker(data: dict[str, Any]) -> dict[str, Any]:
    """Accepts at the call site, rejects in the receiver: a receiver-side schema failure."""
    receiving = current_task is not None and current_task.name == "celery_defer.fn.picky"
    if receiving and data.get("reject_in_worker"):
        raise ValueError("rejected by the receiver")
    return data


picky = create_defer(app, {"id": "picky", "schema": reject_in_worker, "retries": 1}, record_run)


impatient = create_defer(
    app, {"id": "impatient", "queue": queue("late"), "timeouts": {"start": "1s"}}, record_run
)
slowpoke = create_defer(app, {"id": "slowpoke", "retries": 2, "timeouts": {"finish": "1s"}}, record_run)


@create_defer(app, {"id": "nester"})
async def nester(ctx: Any) -> None:
    record_run(ctx)
    ctx.defer("child", function=recorder, data={"from": ctx.run_id})


def record_start(ctx: Any) -> None:
    """A run started by ``.start()`` from plain code: no parent; logs through ``ctx.logger``."""
    seen("started", run_id=ctx.run_id, parents=len(ctx.parents), data=ctx.event.data, attempt=ctx.attempt)
    ctx.logger.info("started run %s says hi", ctx.event.data.get("n"))


started = create_defer(app, {"id": "started", "retries": 2}, record_start)


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep: built in the worker, so no message carries it there."""
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        data = {"n": data}
    return data


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
    if plan.get("deep"):
        defer("deep", function=recorder, data=nested(plan["deep"]))
    seen("parent", run_id=self.request.id, attempt=attempt)
    if attempt < plan.get("retries", 0):
        raise self.retry(countdown=plan.get("retry_countdown", 0.05), max_retries=5)
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
    """Kills its whole worker once, after the body returned (its defers recorded) and before dispatch."""

    def _send_finalized(self, *args: Any, **kwargs: Any) -> bool:
        if _state.set("killed-once", 1, nx=True):
            seen("killing", pid=os.getpid())
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return super()._send_finalized(*args, **kwargs)


@app.task(bind=True)
def parent_record_refused(self: DeferTask, n: int) -> int:
    """Defers, then makes its own outbox entry unusable: the record of its defers fails."""
    defer("unrecorded", function=recorder, data={"n": n})
    store = store_for(app)
    store.client.set(store.keys.outbox(self.request.id), "not an outbox")
    seen("parent", run_id=self.request.id, attempt=self.request.retries)
    return n


@app.task(bind=True, base=KillAfterBody)
def parent_killed(self: DeferTask, n: int) -> int:
    defer("after-kill", function=recorder, data={"n": n})
    seen("parent", run_id=self.request.id, attempt=self.request.retries)
    return n


class KillBeforeRetryIsSent(DeferTask):
    """Kills its whole worker once, after an attempt recorded its defers for a retry
    and before the retry was sent."""

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.id and _state.set("killed-before-retry", 1, nx=True):
            seen("killing", pid=os.getpid())
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return super().apply_async(*args, **kwargs)


@app.task(bind=True, base=KillBeforeRetryIsSent)
def parent_retry_killed(self: DeferTask) -> None:
    defer("before-retry", function=recorder, data={})
    seen("parent", run_id=self.request.id, attempt=self.request.retries)
    raise self.retry(countdown=0.05)


class KillAt(DeferTask):
    """Kills its whole worker once, at the kill point named by the run's first argument.

    ``after_body``: the body returned, its defers recorded, not yet sent;
    ``after_dispatch``: its deferred runs sent, the result not yet stored;
    ``after_result``: its deferred runs sent and its result stored;
    ``before_retry_sent``: attempt 0 recorded its defers for a retry not yet sent;
    ``mid_attempt``: attempt 1 (of a run whose attempt 0 recorded) is running.
    """

    def kill_once(self, point: str) -> None:
        here = bool(self.request.id and self.request.args and self.request.args[0] == point)
        if here and _state.set(f"killed:{point}", 1, nx=True):
            seen("killing", point=point, pid=os.getpid())
            os.killpg(os.getpgid(0), signal.SIGKILL)

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        self.kill_once("before_retry_sent")
        return super().apply_async(*args, **kwargs)

    def _send_finalized(self, *args: Any, **kwargs: Any) -> bool:
        self.kill_once("after_body")
        sent: bool = super()._send_finalized(*args, **kwargs)
        self.kill_once("after_dispatch")
        return sent

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        self.kill_once("after_result")
        super().after_return(*args, **kwargs)


@app.task(bind=True, base=KillAt)
def parent_kill_at(self: KillAt, point: str) -> None:
    """Every attempt defers "early"; the last one also "late"; attempt 0 retries for two points."""
    attempt = self.request.retries
    defer("early", function=kill_recorder, data={"attempt": attempt})
    seen("parent", run_id=self.request.id, attempt=attempt)
    if attempt == 0 and point in ("before_retry_sent", "mid_attempt"):
        raise self.retry(countdown=0.05)
    if point == "mid_attempt":
        time.sleep(2)
        self.kill_once("mid_attempt")
    defer("late", function=kill_recorder, data={"attempt": attempt})


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
        time.sleep(data.get("cleanup", 0))  # a handler's own cleanup, run even when cancelled
        _state.decr(group)
        _state.decr(f"active:{function}")
    seen("end", fn=function, run_id=ctx.run_id, data=data)


FLOW = {
    "conc2": {"concurrency": 2},
    "conc-key": {"concurrency": {"limit": 1, "key": "event.data.group"}},
    # Two functions sharing one slot (scope "app"): the hog runs on its own queue.
    "hog": {"concurrency": {"limit": 1, "key": lambda e: "shared", "scope": "app"}, "queue": queue("hog")},
    "after-hog": {"concurrency": {"limit": 1, "key": lambda e: "shared", "scope": "app"}},
    "throttled": {"throttle": {"limit": 5, "period": "2s"}},
    "bursty": {"throttle": {"limit": 5, "period": "2s", "burst": 5}},
    "rated": {"rate_limit": {"limit": 3, "period": "10s"}},
    "debounced": {"debounce": {"period": "1s", "key": "event.data.k"}},
    "debounced-cap": {"debounce": {"period": "1s", "key": "event.data.k", "timeout": "2s"}},
    "idem": {"idempotency": "event.data.k"},
    "single-skip": {"singleton": {"key": "event.data.k", "mode": "skip"}},
    "single-cancel": {"singleton": {"key": lambda event: event.data["k"], "mode": "cancel"}},
    # A rate limit after the idempotency claim: its drops must give the key back.
    "idem-rated": {"idempotency": "event.data.k", "rate_limit": {"limit": 1, "period": "2s"}},
    # Waiting without polling (tests/integration/test_waits.py): deliveries are recorded.
    "fifo-throttle": {"throttle": {"limit": 5, "period": "2s"}},
    "fifo-line": {"concurrency": 1},
    # Runs handed the two slots a moment apart (tests/integration/test_waits.py).
    "fifo-pair": {"concurrency": 2},
    # Cancel combined with a guard that makes the newcomer wait first.
    "single-cancel-throttled": {
        "singleton": {"key": "event.data.k", "mode": "cancel"},
        "throttle": {"limit": 1, "period": "3s"},
    },
}
flow_functions = {
    fn_id: create_defer(app, {"id": fn_id, "retries": 0, **config}, flow_run)  # type: ignore[typeddict-item]
    for fn_id, config in FLOW.items()
}


_send_kept = parking.send_kept


def _send_kept_as_told(app: Celery, run_id: str, text: str) -> None:
    """Sends a parked run handed a slot: late, or lost once, when its data says so."""
    if "hand-over-late" in text:
        time.sleep(0.1)
    elif "hand-over-lost" in text and _state.set(f"lost:{run_id}", 1, nx=True):
        seen("lost", run_id=run_id)
        return
    _send_kept(app, run_id, text)


parking.send_kept = _send_kept_as_told


@task_prerun.connect
def _delivered(sender: Any = None, task_id: str = "", **_: Any) -> None:
    """Every delivery of a run of the ``fifo-*`` functions (first ones and re-deliveries)."""
    if str(getattr(sender, "name", "")).startswith("celery_defer.fn.fifo-"):
        seen("delivered", fn=f"defer/{sender.name.rpartition('.')[2]}", run_id=task_id)


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
