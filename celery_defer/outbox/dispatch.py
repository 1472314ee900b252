"""Sending a finalized run's records, then clearing them from the outbox.

Used by the parent's finalizing hook, by the ends Celery reports from the
worker's main process, and by the recovery pass: one path for all three.
"""

from __future__ import annotations

import functools
import logging

from celery import Celery

from celery_defer.background import background
from celery_defer.errors import ConfigurationError, PublishError, StoreUnavailableError
from celery_defer.outbox.memory_outbox import eager_outbox
from celery_defer.outbox.publish import publish, run_eagerly
from celery_defer.outbox.record import DeferRecord
from celery_defer.parent.sink import DeferSink, active_sink
from celery_defer.settings import settings_for
from celery_defer.steps.memo import finish_steps
from celery_defer.store import store_for

logger = logging.getLogger(__name__)


def dispatch(app: Celery, run_id: str, records: list[DeferRecord], *, eager: bool) -> bool:
    """Start the deferred runs of a finalized parent run; never raises.

    Returns:
        False when they could not be sent; they stay in the outbox, due.
    """
    if not records:
        return True
    sink = active_sink()
    if eager:
        eager_outbox.complete(run_id, [record.defer_id for record in records])
        if sink is not None:
            _to_sink(sink, app, records)
        else:
            run_eagerly(app, records)
        return True
    try:
        if sink is not None:
            _to_sink(sink, app, records)
        else:
            publish(app, records)
    except PublishError as exc:
        _complete(app, run_id, exc.sent)
        logger.error(
            "run %s: %d of %d deferred runs could not be sent; the recovery pass will send them",
            run_id,
            len(records) - len(exc.sent),
            len(records),
            exc_info=True,
        )
        return False
    except Exception:
        logger.error(
            "run %s: sending %d deferred runs failed; the recovery pass will send them",
            run_id,
            len(records),
            exc_info=True,
        )
        return False
    _complete(app, run_id, [record.defer_id for record in records])
    return True


def _complete(app: Celery, run_id: str, defer_ids: list[str]) -> None:
    """Clear what was sent, and only that: the rest stays due for a recovery pass.

    Nothing waits for the clearing where it can be left unread (``complete_later``).
    """
    if not defer_ids:
        return
    try:
        outbox = store_for(app).outbox
        if not outbox.complete_later(run_id, defer_ids):
            outbox.complete(run_id, defer_ids)
    except Exception:
        logger.warning("run %s: sent, but the outbox was not cleared", run_id, exc_info=True)


def _to_sink(sink: DeferSink, app: Celery, records: list[DeferRecord]) -> None:
    # celery_defer.testing.capture_defers: kept for the test instead of sent.
    for record in records:
        sink.take(record, app.tasks.get(record.task_name), in_run=True)


def finalize_unreturned(app: Celery, run_id: str) -> list[DeferRecord] | None:
    """Finalize a run whose last attempt never returned: revoked, terminated or killed.

    What earlier attempts recorded is sent; the lost attempt had recorded nothing.

    Returns:
        The records sent (none when there were none, or sending failed and they
        stay due for a recovery pass); ``None`` when Redis could not be reached
        (try again later).
    """
    try:
        records = store_for(app).outbox.finalize(run_id)
    except ConfigurationError:
        return []  # no Redis configured: no attempt of it can have recorded anything
    except StoreUnavailableError as exc:
        logger.warning("run %s ended without returning; its defers could not be read yet: %s", run_id, exc)
        return None
    if records:
        logger.info("run %s ended without returning; sending %d recorded defers", run_id, len(records))
    sent = dispatch(app, run_id, records, eager=False)
    finish_steps(app, run_id)
    return records if sent else []


def finalize_in_background(app: Celery, run_id: str) -> None:
    """:func:`finalize_unreturned` off this thread, tried again while Redis is away.

    For the worker's main process, which must never wait on Redis: it reports
    revoked and killed runs through signals.
    """
    settings = settings_for(app)
    if not settings.redis_url:
        return  # no Redis configured: no attempt of it can have recorded anything
    budget_s = settings.store_wait_s

    def attempt() -> bool:
        return finalize_unreturned(app, run_id) is not None

    background().submit(
        f"finalizing run {run_id}",
        attempt,
        budget_s=budget_s,
        on_give_up=functools.partial(
            logger.error,
            "run %s ended without returning and Redis was unreachable for %.0f s: if earlier attempts "
            "recorded defers, a recovery pass finalizes it once its attempt lease runs out",
            run_id,
            budget_s,
        ),
    )
