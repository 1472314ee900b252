"""A run that finalizes in an attempt with nothing recorded before it: record and send at once.

Most parent runs finalize in their first attempt. Their defers need not wait
for the record's reply before they are published: the record's write leaves
this process first, and Redis runs a command it has read whatever becomes of
its sender, so a worker killed at any later point still leaves the records in
the outbox for a recovery pass (SPEC 8.1). The publish then goes on while Redis
works, and the reply is read after it: the record's round trip is off the path
from the parent's end to its deferred runs' start. The outbox's clearing follows
the record on the same connection, so Redis runs them in that order.

When the record fails, what was published is out and nothing needs keeping;
when not every run was sent either, the records are recorded again in the
background, as on the other path (copies already sent are acknowledged unrun).

It applies only where the attempt knows nothing was recorded before it (a first
delivery of the run's first attempt, no steps with defers): there the records
the reply names are these. Should the reply name defers of an attempt the run
did not know of (a redelivery the broker did not flag), they are sent too; a
defer id recorded by both is then sent with this attempt's data rather than the
first attempt's (SPEC 4.5), and the receiver's claim still runs it once.
"""

from __future__ import annotations

import logging

from celery_defer.errors import StoreUnavailableError
from celery_defer.outbox.dispatch import dispatch
from celery_defer.outbox.redis_outbox import PendingRecord
from celery_defer.parent.attempt import keep_trying
from celery_defer.parent.capture import RunCapture
from celery_defer.parent.sink import active_sink
from celery_defer.store import store_for

logger = logging.getLogger(__name__)


def write_record(capture: RunCapture) -> PendingRecord | None:
    """Write the record of a run finalizing in an attempt with nothing before it; read nothing.

    The capture then holds no records (as after ``end_attempt``); send
    ``pending.records``, then :func:`settle_record`.

    Returns:
        None, having done nothing, where this does not apply or the record
        cannot be written so: record with ``end_attempt``, then dispatch.
    """
    if (
        capture.eager
        or not capture.records
        or capture.earlier_ids
        or capture.earlier_unknown
        or capture.when_saved is not None
        or active_sink() is not None
    ):
        return None
    try:
        pending = store_for(capture.app).outbox.record_later(capture.parent.run_id, capture.records)
    except Exception:
        # No Redis configured, or none reachable: the other path says so, and keeps trying.
        logger.debug("run %s: no record while sending", capture.parent.run_id, exc_info=True)
        return None
    if pending is not None:
        capture.final = True
        capture.earlier_ids |= {record.defer_id for record in capture.records}
        capture.records = []
    return pending


def settle_record(capture: RunCapture, pending: PendingRecord, *, all_sent: bool) -> None:
    """Read the record's reply, once its records were sent (``all_sent``: every one); never raises.

    But for an exception that interrupts the read (a signal's): the record was
    written, and what it holds is sent by a recovery pass.
    """
    run_id = capture.parent.run_id
    try:
        recorded = pending.wait()
    except StoreUnavailableError as exc:
        if all_sent:
            logger.warning("run %s: its deferred runs were sent; recording them failed: %s", run_id, exc)
            return
        capture.saved = False
        capture.records = pending.records
        keep_trying(capture, final=True, next_attempt_in_s=0.0, error=exc)
        return
    published = {record.defer_id for record in pending.records}
    others = [record for record in recorded if record.defer_id not in published]
    if others:
        logger.warning(
            "run %s: %d defers recorded by an earlier attempt it did not know of are sent too",
            run_id,
            len(others),
        )
        dispatch(capture.app, run_id, others, eager=False)
