"""Sending a finalized run's records, then clearing them from the outbox.

Used by the parent's finalizing hook, by the ends Celery reports from the
worker's main process, and by the recovery pass: one path for all three.
"""

from __future__ import annotations

import logging

from celery import Celery

from celery_defer.outbox.memory_outbox import eager_outbox
from celery_defer.outbox.publish import publish, run_eagerly
from celery_defer.outbox.record import DeferRecord
from celery_defer.steps.memo import finish_steps
from celery_defer.store import store_for

logger = logging.getLogger(__name__)


def dispatch(app: Celery, run_id: str, records: list[DeferRecord], *, eager: bool) -> None:
    """Start the deferred runs of a finalized parent run; never raises."""
    if not records:
        return
    if eager:
        eager_outbox.complete(run_id)
        run_eagerly(app, records)
        return
    try:
        publish(app, records)
    except Exception:
        logger.error(
            "run %s: sending %d deferred runs failed; the recovery pass will send them",
            run_id,
            len(records),
            exc_info=True,
        )
        return
    try:
        store_for(app).outbox.complete(run_id)
    except Exception:
        logger.warning("run %s: sent, but the outbox was not cleared", run_id, exc_info=True)


def finalize_unreturned(app: Celery, run_id: str) -> None:
    """Finalize a run whose last attempt never returned: revoked, terminated or killed.

    What earlier attempts recorded is sent; the lost attempt had recorded nothing.
    """
    try:
        records = store_for(app).outbox.finalize(run_id)
    except Exception:
        logger.error("run %s ended but its defers could not be read", run_id, exc_info=True)
        return
    if records:
        logger.info("run %s ended without returning; sending %d recorded defers", run_id, len(records))
    dispatch(app, run_id, records, eager=False)
    finish_steps(app, run_id)
