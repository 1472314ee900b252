"""The capture buffer: the defers one attempt of a parent run has made so far.

It lives in a ``ContextVar`` (never a thread-local), so ``defer()`` finds the
run it belongs to from plain functions, ``async def`` code run by the task, and
nested calls alike.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from celery import Celery

from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.settings import Settings, settings_for


@dataclass(slots=True)
class RunCapture:
    """The defers recorded by one attempt of one parent run.

    Attributes:
        parent: the run the attempt belongs to.
        app: the Celery app of the parent task.
        eager: the attempt runs in-process (``task_always_eager`` or ``.apply()``).
        earlier_ids: defer ids already in the outbox (earlier attempts, or this
            one once recorded).
        earlier_unknown: the outbox could not be read when the attempt began.
        records: this attempt's accepted defers, in call order.
        final: set when the attempt ends: whether the run finalizes with it.
        leased: the attempt holds a lease in the outbox's attempts index.
        handed_over: the attempt was ended before its next attempt was sent.
        saved: the attempt's defers are safe in the outbox (or it had none).
        when_saved: called once the attempt ended with its defers saved; a
            deferred run marks itself done there (``celery_defer.deferred``).
    """

    parent: ParentRef
    app: Celery
    eager: bool
    earlier_ids: frozenset[str] = frozenset()
    records: list[DeferRecord] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    final: bool = False
    earlier_unknown: bool = False
    leased: bool = False
    handed_over: bool = False
    saved: bool = True
    when_saved: Callable[[], None] | None = None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_for(self.app)
        return self._settings

    @property
    def total(self) -> int:
        """Defers of the whole run so far, every attempt counted."""
        return len(self.earlier_ids) + len(self.records)


current_capture: ContextVar[RunCapture | None] = ContextVar("celery_defer_capture", default=None)
