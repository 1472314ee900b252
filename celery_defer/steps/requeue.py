"""Putting a parent run back on the queue for a ``step.sleep``: a retry that does not count.

The same message is sent again with an ETA and the same retry count, then the
attempt ends with :class:`~celery_defer.errors.Requeued` (an ``Ignore``), which
``DeferTask`` treats as a non-final end: nothing finalizes, no retry is spent,
and the worker's pool slot is free until the ETA.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery.exceptions import Reject

from celery_defer.errors import Requeued
from celery_defer.parent.attempt import hand_over
from celery_defer.parent.capture import current_capture

logger = logging.getLogger(__name__)


def requeue_parent(task: Any, delay_s: float, reason: str) -> NoReturn:
    """Send this attempt's message again to run after ``delay_s``, then end the attempt.

    Raises:
        Requeued: the new message carries the run.
        Reject: it could not be sent and ``acks_late`` is on: the broker keeps this one.
    """
    request = task.request
    # Recorded before the next message exists, as retry() does: it must find them.
    hand_over(current_capture.get(), request, next_attempt_in_s=delay_s)
    signature = task.signature_from_request(
        request, None, None, countdown=max(delay_s, 0.0), retries=request.retries or 0
    )
    try:
        signature.apply_async()
    except Exception as exc:
        if task.acks_late:
            logger.error(
                "run %s could not be put back for %s (%s); the broker keeps it", request.id, reason, exc
            )
            raise Reject(exc, requeue=True) from exc
        logger.error("run %s failed: it could not be put back on the queue for %s", request.id, reason)
        raise
    logger.debug("run %s resumes in %.3fs: %s", request.id, delay_s, reason)
    raise Requeued(reason)
