"""Hooking celery_defer into a Celery app: the recovery bootstep and worker signals.

Some ends of a run never reach the task's own hooks: a revoke, a terminate, a
hard time limit or a lost worker process are reported by the worker's main
process through Celery's signals. Tasks that keep defers say how to finalize
such a run by implementing :class:`FinalizesInterrupted` (``DeferTask`` does).

A process that exits (a pool process in a warm shutdown, or the main process)
first lets its background work finish: defers a run could not record while Redis
was away wait there, on a daemon thread that would die with the process.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol, runtime_checkable

from celery import Celery, signals
from celery.exceptions import Terminated, TimeLimitExceeded, WorkerLostError

from celery_defer.background import background
from celery_defer.outbox.recovery import RecoveryStep

logger = logging.getLogger(__name__)

#: Failures the worker's main process reports for an attempt that never returned.
_UNRETURNED = (WorkerLostError, TimeLimitExceeded, Terminated)


@runtime_checkable
class FinalizesInterrupted(Protocol):
    """A task that can finalize a run whose attempt never returned."""

    def finalize_interrupted(self, run_id: str, exc: BaseException | None) -> None:
        """Finalize ``run_id``, ended by ``exc`` (``None`` for a revoke)."""


def install(app: Celery) -> None:
    """Add the recovery bootstep to ``app``'s workers and connect the signals; idempotent."""
    if not app.__dict__.get("_celery_defer_installed"):
        app.steps["worker"].add(RecoveryStep)
        app.__dict__["_celery_defer_installed"] = True
    # Connecting again is free (same dispatch_uid) and heals receivers cleared since.
    signals.task_revoked.connect(_on_revoked, weak=False, dispatch_uid="celery_defer.revoked")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="celery_defer.failure")
    for exiting in (signals.worker_process_shutdown, signals.worker_shutdown):
        exiting.connect(_finish_background_work, weak=False, dispatch_uid="celery_defer.exiting")


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # Sent in the worker's main process for a revoked, terminated or expired run.
    if isinstance(sender, FinalizesInterrupted) and request is not None and request.id:
        sender.finalize_interrupted(request.id, None)


def _on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    # Failures the attempt raised itself are handled by the task's hooks; these
    # are the ones the main process reports for a child that was killed.
    if isinstance(sender, FinalizesInterrupted) and task_id and isinstance(exception, _UNRETURNED):
        sender.finalize_interrupted(task_id, exception)


def _finish_background_work(**_: Any) -> None:
    # Sent in a pool process as it exits (worker_process_shutdown) and in the main
    # process as the worker stops. Each job ends within its budget (defer_store_wait),
    # done or given up with an error logged, so this wait ends too.
    pending = background().pending()
    if pending:
        logger.warning("before exiting, waiting for %d jobs that wait for Redis (defers to keep)", pending)
        background().wait_idle(timeout_s=math.inf)
