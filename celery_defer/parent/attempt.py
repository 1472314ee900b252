"""A parent run's defers through its life: recorded as attempts end, sent when it finalizes.

Durability rests on one ordering: an attempt's defers are written to Redis the
moment its body returns or raises, and the run is marked finalized in the same
atomic step. Dispatch follows straight away, still in ``DeferTask.__call__``;
a worker that dies in between leaves a finalized outbox that any worker's
recovery pass sends, and a copy sent twice is acknowledged unrun by its claim.

Sending before Celery stores the result is what Celery itself does with
``link`` callbacks (``celery/app/trace.py`` in 5.4 and 5.7: callbacks, then
``mark_as_done``), and it saves the deferred runs the result store's round
trip. The price: a deferred run may start before its parent's result can be
read, as a ``link`` callback may.
"""

from __future__ import annotations

import functools
import logging
from contextvars import ContextVar
from typing import Any

from celery import Celery

from celery_defer.background import background
from celery_defer.errors import ConfigurationError, StoreUnavailableError
from celery_defer.lease_keeper import default_keeper
from celery_defer.outbox.dispatch import dispatch
from celery_defer.outbox.memory_outbox import MemoryOutbox, eager_outbox
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.outbox.redis_outbox import RedisOutbox
from celery_defer.parent.capture import RunCapture
from celery_defer.store import store_for

logger = logging.getLogger(__name__)


def _outbox(app: Celery, eager: bool) -> RedisOutbox | MemoryOutbox:
    return eager_outbox if eager else store_for(app).outbox


def begin_attempt(app: Celery, request: Any, task_name: str) -> RunCapture:
    """Open the capture of one attempt; learn what earlier attempts recorded."""
    run_id: str = request.id
    eager = bool(request.is_eager)
    parent = ParentRef(run_id, request.root_id or run_id, task_name)
    capture = RunCapture(parent=parent, app=app, eager=eager)
    delivery = request.delivery_info or {}
    if request.retries or delivery.get("redelivered") or eager:
        try:
            outbox = _outbox(app, eager)
            capture.earlier_ids = frozenset(outbox.recorded_ids(run_id))
            if capture.earlier_ids and isinstance(outbox, RedisOutbox):
                lease_attempt(outbox, run_id)
                capture.leased = True
        except ConfigurationError:
            pass  # no Redis configured: no attempt can have recorded anything
        except Exception:
            # Redis keeps first-wins on its own (HSETNX); what is unknown is the
            # count, and whether the run has defers to finalize: assume it does.
            logger.warning("could not read earlier defers of run %s", run_id, exc_info=True)
            capture.earlier_unknown = True
    return capture


def lease_attempt(outbox: RedisOutbox, run_id: str) -> None:
    """Keep the running attempt of ``run_id`` leased until :func:`close_attempt`.

    While it runs, its lease in the attempts zset says a worker is on it; if the
    worker dies, the lease runs out and a recovery pass finalizes the run (see
    recovery.py), so what earlier attempts or kept steps recorded is not stranded.
    """
    default_keeper().register(
        f"attempt:{run_id}",
        lease_s=outbox.settings.lease_s,
        renew=functools.partial(outbox.renew_attempt, run_id),
    )


def close_attempt(capture: RunCapture) -> None:
    """Stop renewing the attempt's lease (its end, or its interruption)."""
    if capture.leased:
        default_keeper().unregister(f"attempt:{capture.parent.run_id}")


def end_attempt(capture: RunCapture, *, final: bool, next_attempt_in_s: float = 0.0) -> list[DeferRecord]:
    """Record the attempt's defers; return every record of the run when it finalizes.

    ``next_attempt_in_s``, for a run that goes on, is when its next attempt is due.

    Never raises: a Redis failure is logged, and a finalizing attempt then sends
    its own defers straight away rather than lose them.
    """
    capture.final = final
    if not capture.records and not capture.earlier_ids and not capture.earlier_unknown:
        return []
    if not final and not capture.records and capture.handed_over:
        # Ended already, before the next attempt was sent; recording again would
        # only drop that attempt's lease.
        return []
    run_id = capture.parent.run_id
    try:
        outbox = _outbox(capture.app, capture.eager)
        records = outbox.record(run_id, capture.records, final=final, next_attempt_in_s=next_attempt_in_s)
    except ConfigurationError as exc:
        capture.saved = False
        ids = [record.defer_id for record in capture.records]
        logger.error("run %s: could not record defers %s: %s; they are lost", run_id, ids, exc)
        return []
    except Exception as exc:
        capture.saved = False
        keep_trying(capture, final=final, next_attempt_in_s=next_attempt_in_s, error=exc)
        return []
    # Recorded: a later end of the same attempt (retry() then the Retry it
    # raises) must not record them again, and the run now has defers to finalize.
    capture.earlier_ids |= {record.defer_id for record in capture.records}
    capture.records = []
    return records


_finalized_here: ContextVar[str | None] = ContextVar("celery_defer_finalized_here", default=None)


def mark_finalized(run_id: str) -> None:
    """Note that ``__call__`` finalized run ``run_id``, for the ``after_return`` that follows."""
    _finalized_here.set(run_id)


def take_finalized(run_id: str) -> bool:
    """Whether ``__call__`` finalized run ``run_id`` in this context (and forget it)."""
    if _finalized_here.get() != run_id:
        return False
    _finalized_here.set(None)
    return True


def keep_trying(capture: RunCapture, *, final: bool, next_attempt_in_s: float, error: Exception) -> None:
    """Record the attempt's defers in the background while Redis is away (bounded).

    The attempt ends now; its defers stay in this process until Redis answers.
    Once recorded, what the attempt's end would have done follows: the run is
    marked as the attempt left it (``when_saved``) and, when it finalized, sent.
    """
    app, run_id, records = capture.app, capture.parent.run_id, list(capture.records)
    when_saved, budget_s = capture.when_saved, capture.settings.store_wait_s
    ids = [record.defer_id for record in records]
    logger.error(
        "run %s: could not record defers %s (%s); trying again in the background for up to %.0f s",
        run_id,
        ids,
        error,
        budget_s,
    )

    def attempt() -> bool:
        outbox = store_for(app).outbox
        try:
            recorded = outbox.record(run_id, records, final=final, next_attempt_in_s=next_attempt_in_s)
        except StoreUnavailableError:
            return False
        logger.info("run %s: defers %s recorded after all", run_id, ids)
        if when_saved is not None:
            when_saved()
        if final:
            dispatch(app, run_id, recorded, eager=False)
        return True

    def give_up() -> None:
        logger.error("run %s: defers %s lost: Redis was unreachable for %.0f s", run_id, ids, budget_s)

    background().submit(f"recording the defers of {run_id}", attempt, budget_s=budget_s, on_give_up=give_up)


def hand_over(capture: RunCapture | None, request: Any, *, next_attempt_in_s: float) -> None:
    """End the attempt before its next attempt is sent (``retry()``, a requeue).

    Celery sends the next attempt before the current one returns; recording
    now means that attempt finds these defers. The attempt stays leased until
    the next one is due (plus a lease), so a worker that dies before sending it
    leaves a run that recovery finalizes, never one that waits forever.
    """
    if capture is None or capture.parent.run_id != request.id or capture.eager:
        return
    if capture.records or capture.leased:
        end_attempt(capture, final=False, next_attempt_in_s=next_attempt_in_s)
        # From here the lease is what the record left: renewing it would cut it short.
        close_attempt(capture)
        capture.leased = False
        capture.handed_over = True
