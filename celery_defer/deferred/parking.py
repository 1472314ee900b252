"""Sending a kept message: a parked run handed a slot, or a run whose worker died.

Both are the JSON a run keeps with its claim (``AttemptEnds.resend``): the task,
its keyword arguments, the attempt number and the ``send_task`` options. The
run's claim makes any copy harmless, so sending one twice never runs it twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from celery import Celery

from celery_defer.limits.backend import Handoff

logger = logging.getLogger(__name__)

#: Among a message's passed slots: it was sent from a concurrency line.
FROM_LINE = "line"


def send_kept(app: Celery, run_id: str, text: str) -> None:
    """Send run ``run_id`` again with the message it kept.

    Raises:
        ValueError: the kept message is unreadable (also ``KeyError``, ``TypeError``).
        Exception: whatever the broker raised.
    """
    document = json.loads(text)
    options = {"parent_id": None, "root_id": None, **document["options"]}
    app.send_task(
        document["task"],
        kwargs=document["kwargs"],
        task_id=run_id,
        retries=document["retries"],
        serializer="json",
        add_to_parent=False,
        **options,
    )


def send_handoffs(app: Celery, handoffs: Sequence[Handoff]) -> None:
    """Send the parked runs a release handed a slot to; failures are logged.

    A run that could not be sent keeps its place: once its slot's lease runs
    out, the recovery pass (or the next arrival) puts it back at the head.
    """
    for handoff in handoffs:
        try:
            send_kept(app, handoff.run_id, handoff.message)
        except (ValueError, KeyError, TypeError):
            logger.error("parked run %s cannot be sent: its kept message is unreadable", handoff.run_id)
        except Exception as exc:
            logger.error(
                "parked run %s was handed a slot but could not be sent (%s); "
                "it is sent again once the slot's lease runs out",
                handoff.run_id,
                exc,
            )
        else:
            logger.debug("parked run %s handed a slot and sent", handoff.run_id)
