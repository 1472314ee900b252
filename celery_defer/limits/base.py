"""What every flow-control guard shares: the :class:`Decision` and the :class:`Guard` base."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Literal

from celery_defer.limits.backend import LimitBackend

Action = Literal["proceed", "wait", "drop"]


def to_ms(seconds: float) -> int:
    """Whole milliseconds, at least 1, for a positive duration in seconds."""
    return max(1, round(seconds * 1000))


def require_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive number."""
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What the run path does with a deferred run, as one guard sees it.

    Build one with :meth:`proceed`, :meth:`wait` or :meth:`drop`.

    Attributes:
        action: ``proceed`` (start the run), ``wait`` (check again in
            ``delay_s``; not a failure, no retry budget spent) or ``drop``
            (never start it; log ``reason``).
        delay_s: seconds to wait, for ``wait``.
        reason: why the run waits or is dropped, for logs and counters.
        payload: for ``Debounce``, the latest event's payload to run with.
        preempted: for ``Singleton`` in mode ``cancel``, with ``wait``: the
            holder (run id) the caller must cancel; named once per holder.
        reserved: with ``wait``, the run's start time is booked (``Throttle``):
            after ``delay_s`` it starts without checking this guard again.
        parked: with ``wait``, the run waits in the guard's line
            (``ConcurrencyGuard``): it leaves the queue, and the run that frees
            a slot sends it; ``ahead`` runs were parked before it.
        behind_ms: with ``proceed`` (``ConcurrencyGuard``), a run given a slot
            before this one has not begun yet: this one waits its turn first
            (``ConcurrencyGuard.await_turn``); the time it was given its slot.
    """

    action: Action
    delay_s: float = 0.0
    reason: str = ""
    payload: str | None = None
    preempted: str | None = None
    reserved: bool = False
    parked: bool = False
    ahead: int = 0
    behind_ms: float | None = None

    @classmethod
    def proceed(
        cls, *, payload: str | None = None, preempted: str | None = None, behind_ms: float | None = None
    ) -> Decision:
        """Start the run now (once its turn came, with ``behind_ms``)."""
        return cls("proceed", payload=payload, preempted=preempted, behind_ms=behind_ms)

    @classmethod
    def wait(
        cls, delay_s: float, reason: str, *, preempted: str | None = None, reserved: bool = False
    ) -> Decision:
        """Check again after ``delay_s`` seconds (having asked ``preempted`` to stop, if set)."""
        return cls("wait", delay_s=delay_s, reason=reason, preempted=preempted, reserved=reserved)

    @classmethod
    def park(cls, reason: str, *, ahead: int) -> Decision:
        """Wait in the guard's line until a run that frees a slot sends this one."""
        return cls("wait", reason=reason, parked=True, ahead=ahead)

    @classmethod
    def drop(cls, reason: str) -> Decision:
        """Never start this run."""
        return cls("drop", reason=reason)


class Guard(abc.ABC):
    """One flow-control rule of a deferred function, applied through a backend.

    The run path calls :meth:`check` with the full key (see
    ``KeySpace.limit(guard.kind, function_id, key_value)``) and the run id as
    ``holder``; after a ``proceed`` it keeps the lease alive with :meth:`renew`
    (when ``lease_s`` is set) and calls :meth:`release` when the run ends.

    Attributes:
        kind: the config key this guard implements, used in its Redis key.
        lease_s: how long a held slot or lock lives without renewal, or ``None``
            when the guard holds nothing while the run executes.
    """

    kind: ClassVar[str]
    lease_s: float | None = None

    def __init__(self, backend: LimitBackend) -> None:
        self.backend = backend

    @abc.abstractmethod
    def check(self, key: str, *, holder: str) -> Decision:
        """Decide whether the run identified by ``holder`` may start now."""

    def renew(self, key: str, *, holder: str) -> bool:
        """Extend what ``holder`` holds; False when it was lost. Nothing to do by default."""
        return True

    def release(self, key: str, *, holder: str, run_s: float | None = None) -> None:
        """Give back what ``holder`` holds once its run ended. Nothing to do by default."""
        return None
