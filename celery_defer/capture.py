"""The capture buffer: the defers one attempt of a parent run has made so far.

It lives in a ``ContextVar`` (never a thread-local), so ``defer()`` finds the
run it belongs to from plain functions, ``async def`` code run by the task, and
nested calls alike.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from celery_defer.records import DeferRecord, ParentRef

if TYPE_CHECKING:
    from celery import Celery

    from celery_defer.settings import Settings


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
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from celery_defer.settings import settings_for

            self._settings = settings_for(self.app)
        return self._settings

    @property
    def total(self) -> int:
        """Defers of the whole run so far, every attempt counted."""
        return len(self.earlier_ids) + len(self.records)


current_capture: ContextVar[RunCapture | None] = ContextVar("celery_defer_capture", default=None)
