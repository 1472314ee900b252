"""Hooking celery_defer into a Celery app: the recovery bootstep and worker signals."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, signals
from celery.exceptions import Terminated, TimeLimitExceeded, WorkerLostError

logger = logging.getLogger(__name__)

_signals_connected = False
_lock = threading.Lock()

#: Failures the worker's main process reports for an attempt that never returned.
_UNRETURNED = (WorkerLostError, TimeLimitExceeded, Terminated)


def install(app: Celery) -> None:
    """Add the recovery bootstep to ``app``'s workers and connect the signals; idempotent."""
    global _signals_connected
    if not app.__dict__.get("_celery_defer_installed"):
        from celery_defer.recovery import RecoveryStep

        app.steps["worker"].add(RecoveryStep)
        app.__dict__["_celery_defer_installed"] = True
    with _lock:
        if not _signals_connected:
            signals.task_revoked.connect(_on_revoked, weak=False)
            signals.task_failure.connect(_on_failure, weak=False)
            _signals_connected = True


def _is_defer_task(sender: Any) -> bool:
    from celery_defer.task import DeferTask

    return isinstance(sender, DeferTask)


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # Sent in the worker's main process for a revoked, terminated or expired run.
    if _is_defer_task(sender) and request is not None and request.id:
        from celery_defer.lifecycle import finalize_unreturned

        finalize_unreturned(sender.app, request.id)


def _on_failure(sender: Any = None, task_id: str | None = None, exception: Any = None, **_: Any) -> None:
    # Failures the attempt raised itself are handled by DeferTask; these are the
    # ones the main process reports for a child that was killed.
    if _is_defer_task(sender) and task_id and isinstance(exception, _UNRETURNED):
        from celery_defer.lifecycle import finalize_unreturned
        from celery_defer.task import _requeued_on_timeout

        if isinstance(exception, TimeLimitExceeded) and _requeued_on_timeout(sender):
            return
        finalize_unreturned(sender.app, task_id)
