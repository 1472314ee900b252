"""The recovery pass: every worker sends what a dead worker left finalized but unsent."""

from __future__ import annotations

import functools
import logging
import random
import threading
from typing import Any

from celery import Celery, bootsteps

from celery_defer.deferred.claims import RunClaims
from celery_defer.deferred.parking import send_handoffs, send_kept
from celery_defer.errors import CeleryDeferError
from celery_defer.limits.lines import Lines
from celery_defer.outbox.dispatch import dispatch, finalize_unreturned
from celery_defer.outbox.record import DeferRecord
from celery_defer.outbox.redis_outbox import RedisOutbox
from celery_defer.settings import settings_for
from celery_defer.store import store_for

logger = logging.getLogger(__name__)

#: Runs one pass takes at most; a pass that finds a full batch goes on at once.
BATCH = 200


def recover_once(app: Celery) -> list[DeferRecord]:
    """Send the defers of finalized runs whose dispatch is overdue.

    A run taken by this pass is hidden from other passes for a lease; if this
    worker dies mid-way, the run is due again when the lease ends. When a send
    fails (the broker is away) the pass stops and gives back what it took, so the
    next pass, one interval later, tries again.

    Returns:
        The records this pass sent, run by run in call order.
    """
    store = store_for(app)
    outbox = store.outbox
    lease_ms = int(max(30.0, 2 * outbox.settings.recovery_interval_s) * 1000)
    sent = _finalize_dead_attempts(app, outbox, lease_ms)
    _resend_lapsed_runs(app, store.claims, lease_ms)
    Lines(store.limits, store.keys.lines()).restart_all(functools.partial(send_handoffs, app))
    while True:
        run_ids = outbox.claim_due(limit=BATCH, lease_ms=lease_ms)
        for index, run_id in enumerate(run_ids):
            records = outbox.pending_records(run_id)
            if not records:
                outbox.complete(run_id, ())
                continue
            logger.warning(
                "recovering run %s: sending %d deferred runs its worker left unsent", run_id, len(records)
            )
            # Same path as a run that finalizes in its worker (DeferTask._send_finalized).
            if not dispatch(app, run_id, records, eager=False):
                outbox.due_again(run_ids[index:])
                return sent
            sent += records
        if len(run_ids) < BATCH:
            return sent


def _finalize_dead_attempts(app: Celery, outbox: RedisOutbox, lease_ms: int) -> list[DeferRecord]:
    """Finalize runs whose worker died mid-attempt and whose message is gone.

    Such a run never returns and Celery never reports it: without this, what
    its earlier attempts recorded would wait in the outbox until it expires.
    With ``acks_late`` the broker redelivers the message and the run goes on,
    so those runs are left to it (their lease is looked at again later).
    """
    sent: list[DeferRecord] = []
    for run_id in outbox.claim_stale_attempts(limit=BATCH, lease_ms=lease_ms):
        records = outbox.pending_records(run_id)
        if not records:  # the outbox expired: nothing left to wait for
            outbox.complete(run_id, ())
            continue
        task = app.tasks.get(records[0].parent.task_name)
        acks_late = task.acks_late if task is not None else app.conf.task_acks_late
        if acks_late:
            continue
        logger.warning(
            "run %s: its worker died mid-attempt and the message was acknowledged; "
            "finalizing it with its %d recorded defers",
            run_id,
            len(records),
        )
        sent += finalize_unreturned(app, run_id) or []
    return sent


def _resend_lapsed_runs(app: Celery, claims: RunClaims, lease_ms: int) -> None:
    """Send again the deferred runs whose claim lapsed before they finished.

    Their worker died mid-handler (the whole worker, or its pool process): with
    ``acks_late`` off the broker forgot the message when the run started, and
    with it on a Redis broker gives it back only after its visibility timeout.
    A copy that arrives anyway finds the run claimed or done: it never runs twice.
    """
    for run_id in claims.take_lapsed(limit=BATCH, lease_ms=lease_ms):
        text = claims.message_to_resend(run_id)
        if text is None:
            continue
        try:
            send_kept(app, run_id, text)
        except (ValueError, KeyError, TypeError):
            logger.error("deferred run %s cannot be sent again: its kept message is unreadable", run_id)
            claims.finish(run_id, "", outcome="lost")
            continue
        logger.warning("deferred run %s: its worker died before it finished; sent again", run_id)


class RecoveryThread(threading.Thread):
    """Runs :func:`recover_once` every ``defer_recovery_interval`` seconds."""

    def __init__(self, app: Celery) -> None:
        super().__init__(name="celery-defer-recovery", daemon=True)
        self.app = app
        self._stopped = threading.Event()

    def run(self) -> None:
        interval_s = settings_for(self.app).recovery_interval_s
        # A first pass soon after start picks up what a crashed predecessor left.
        delay_s = min(1.0, interval_s)
        while not self._stopped.wait(delay_s):
            try:
                recover_once(self.app)
            except CeleryDeferError as exc:
                logger.warning("recovery pass failed: %s", exc)
            except Exception:
                logger.exception("recovery pass failed")
            delay_s = interval_s * random.uniform(0.9, 1.1)

    def stop(self) -> None:
        self._stopped.set()


def _has_deferred_functions(app: Celery) -> bool:
    return any(hasattr(task, "__celery_defer_options__") for task in app.tasks.values())


class RecoveryStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep that runs the recovery pass; installed by ``create_defer``."""

    label = "celery_defer recovery"
    # Its thread starts once the pool's processes were forked: a fork never
    # copies a thread, and could copy a lock the thread held.
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: RecoveryThread | None = None

    def start(self, parent: Any) -> None:
        settings = settings_for(parent.app)
        if not settings.redis_url and not _has_deferred_functions(parent.app):
            # A DeferTask app that defines no deferred function defers nothing:
            # it runs like any Celery app, with nothing to recover.
            return
        # Fail fast: a worker without its state store would accept runs whose
        # defers it cannot keep. Raising here stops the worker with this message.
        settings.require_redis_url()
        self.thread = RecoveryThread(parent.app)
        self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread.join(timeout=5)
            self.thread = None

    shutdown = stop
