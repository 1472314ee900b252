"""The storage interface every flow-control guard works through.

Each operation is atomic: the Redis backend runs it as one Lua script, the
memory backend under one lock. Keys are full Redis key strings chosen by the
caller; every time is in milliseconds and read from the backend's own clock
(Redis ``TIME``), so all hosts agree on it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

SingletonMode = Literal["skip", "cancel"]
DebounceState = Literal["run", "wait", "superseded"]

#: Weight of the newest run in the average run duration of a concurrency key.
EWMA_ALPHA = 0.3
#: How long the average run duration of a concurrency key outlives its last release.
AVG_TTL_MS = 24 * 3600 * 1000
#: How long debounce state outlives the moment its latest event should check back.
DEBOUNCE_GRACE_MS = 24 * 3600 * 1000
#: How long a concurrency line (and its index entry) outlives its last parked run.
PARK_TTL_MS = 24 * 3600 * 1000
#: How long after its time a throttle booking not begun is given up (its run went away).
BOOKING_GRACE_MS = 60 * 1000
#: How long after it was given a concurrency slot a run not begun yet is waited
#: for by the runs given one after it (then it went away: nobody waits for it).
HANDED_PATIENCE_MS = 250


@dataclass(frozen=True, slots=True)
class Handoff:
    """A parked run handed a free concurrency slot: send ``message`` to start it.

    Attributes:
        run_id: the parked run, which holds the slot for a lease meanwhile.
        message: the JSON its run kept to start it again (``resend`` of its claim).
    """

    run_id: str
    message: str


@dataclass(frozen=True, slots=True)
class LeaseResult:
    """Outcome of :meth:`LimitBackend.lease_acquire`.

    Attributes:
        acquired: the caller holds a slot now.
        position: the caller's rank among waiters (0 = next), when not acquired.
        avg_run_ms: average run duration seen on this key, if any run was released.
        parked: the caller waits in the key's line (it gave a parcel).
        handoffs: parked runs this call handed a free slot to; the caller sends them.
        behind_ms: when ``acquired`` and a run given a slot before the caller
            has not begun yet, the time (ms, the backend's clock) the caller
            was given its slot: it waits its turn with
            :meth:`LimitBackend.lease_turn`; ``None`` otherwise.
    """

    acquired: bool
    position: int
    avg_run_ms: float | None
    parked: bool = False
    handoffs: tuple[Handoff, ...] = ()
    behind_ms: float | None = None


@dataclass(frozen=True, slots=True)
class BeginResult:
    """Outcome of :meth:`LimitBackend.throttle_begin`.

    Attributes:
        wait_ms: how long the caller waits before it starts (0: at once).
        behind_ms: the caller's start (ms, the backend's clock) when a run kept
            a start before it had not begun yet: the caller then waits its turn
            with :meth:`LimitBackend.throttle_turn` (its own start is kept
            meanwhile, so that the runs behind it wait too); ``None`` otherwise.
    """

    wait_ms: int
    behind_ms: float | None = None


@dataclass(frozen=True, slots=True)
class SingletonResult:
    """Outcome of :meth:`LimitBackend.singleton_acquire`.

    Attributes:
        acquired: the caller holds the lock now.
        previous_holder: the other live holder found: the one displaced in mode
            ``cancel``, the one that kept the lock in mode ``skip``, the one to
            stop first for :meth:`LimitBackend.singleton_preempt`.
        newly_asked: for :meth:`LimitBackend.singleton_preempt`, the first time
            that holder is found: the caller asks it to stop (once).
    """

    acquired: bool
    previous_holder: str | None
    newly_asked: bool = False


@dataclass(frozen=True, slots=True)
class DebounceResult:
    """Outcome of :meth:`LimitBackend.debounce_take`.

    Attributes:
        state: ``run`` (run now with ``payload``), ``wait`` (check back in
            ``wait_ms``) or ``superseded`` (a later event replaced this one).
        payload: the latest event's payload, when ``state`` is ``run``.
        wait_ms: when ``state`` is ``wait``, ms until the event should check back.
    """

    state: DebounceState
    payload: str | None
    wait_ms: int


class LimitBackend(abc.ABC):
    """Atomic flow-control operations on keyed state with TTLs."""

    @abc.abstractmethod
    def lease_acquire(
        self,
        key: str,
        holder: str,
        limit: int,
        lease_ms: int,
        waiter_ttl_ms: int,
        *,
        parcel: str | None = None,
    ) -> LeaseResult:
        """Take one of ``limit`` slots for ``lease_ms``, or wait for one.

        Expired leases are pruned first, and waiters not seen for
        ``waiter_ttl_ms``; free slots go to the head of the key's line first
        (returned as ``handoffs``). A holder that already holds a slot (one
        handed to it while parked, too) gets its lease refreshed.

        With a ``parcel`` (the message that starts the run again) a caller that
        finds no free slot, or others parked before it, parks at the tail of
        the line, for :data:`PARK_TTL_MS`. Without one it queues in FIFO order
        and polls: it takes a slot once one is free and it is within the first
        free-slot-count live waiters in arrival order.

        Runs given a slot (handed one, or taking a free one) are to begin in
        that order: a caller that finds a run given one before it, less than
        :data:`HANDED_PATIENCE_MS` ago, that has not begun (taken its slot
        here) yet gets ``behind_ms``.
        """

    @abc.abstractmethod
    def lease_turn(self, key: str, holder: str, behind_ms: float, poll_ms: int) -> int:
        """Ms to wait before asking again (0: go) for ``holder``, given ``behind_ms`` by acquire.

        A run given a slot before ``behind_ms`` that has not begun (or, waiting
        its own turn, begun) yet is waited for, until :data:`HANDED_PATIENCE_MS`
        after it was given its slot (then it went away). When its turn comes,
        ``holder`` leaves the runs waited for.
        """

    @abc.abstractmethod
    def lease_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        """Extend a live lease to ``lease_ms`` from now; False if it was lost."""

    @abc.abstractmethod
    def lease_release(
        self,
        key: str,
        holder: str,
        run_ms: float | None,
        *,
        limit: int = 0,
        lease_ms: int = 0,
        then: Callable[[tuple[Handoff, ...]], None] | None = None,
    ) -> tuple[Handoff, ...]:
        """Free the holder's slot (or wait place), fold ``run_ms`` into the average.

        Then, given the key's ``limit``, hand free slots to the head of the
        line, each held for ``lease_ms``: the caller sends what is returned,
        or, with ``then``, what ``then`` is given (when the release rides in a
        batch, once the batch is sent); the call then returns nothing.
        """

    @abc.abstractmethod
    def line_restart(self, key: str, limit: int, lease_ms: int) -> tuple[int, tuple[Handoff, ...]]:
        """Hand free slots to a line whose head was lost; return (runs parked, handoffs).

        A parked run neither in the line nor holding lost its hand-over and goes
        back to the head of the line first.
        """

    @abc.abstractmethod
    def lines_note(self, index_key: str, member: str) -> None:
        """Note ``member`` (a line with parked runs) in the index recovery reads."""

    @abc.abstractmethod
    def lines_noted(self, index_key: str) -> list[tuple[str, float]]:
        """Every noted line with the time (ms) a run last parked in it."""

    @abc.abstractmethod
    def lines_forget(self, index_key: str, member: str, noted_ms: float) -> None:
        """Drop ``member`` from the index unless a run parked after ``noted_ms``."""

    @abc.abstractmethod
    def throttle_take(
        self,
        key: str,
        limit: int,
        period_ms: int,
        burst: int = 1,
        *,
        reserve: bool = False,
        holder: str = "",
    ) -> int:
        """Record a start allowed now and return 0, or return the ms to wait (GCRA).

        With ``reserve`` a caller that must wait books the next free start time
        for ``holder`` (the theoretical arrival time moves on by one interval),
        so that waiters get distinct, increasing start times in the order they
        asked; the returned wait is the caller's own. A caller then starts at
        once only if no booked run is still to :meth:`throttle_begin` (bookings
        are given up :data:`BOOKING_GRACE_MS` after their time) and the pace of
        actual starts allows it. Without ``reserve`` nothing is recorded for a
        caller that must wait.
        """

    @abc.abstractmethod
    def throttle_begin(
        self, key: str, holder: str, limit: int, period_ms: int, burst: int = 1
    ) -> BeginResult:
        """A booked run begins: how long it waits first to keep the pace.

        Runs delivered after their booked time arrive bunched, and not always in
        the order they were booked: a late run keeps, before its own, the next
        starts the pace allows for each run booked before it that has not begun,
        so late runs still start in booking order and the pace holds.
        """

    @abc.abstractmethod
    def throttle_turn(self, key: str, holder: str, start_ms: float, patience_ms: int, poll_ms: int) -> int:
        """Ms to wait before asking again (0: go) for ``holder``, whose start ``start_ms`` came.

        A run kept a start before ``start_ms`` that has not begun (or, waiting
        its own turn, started) yet is waited for, until ``patience_ms`` after its
        kept start (then it has gone away). When its turn comes, ``holder``
        leaves the kept starts, where :meth:`throttle_begin` put it (with
        ``start_ms`` 0, at once: it goes back to the queue instead).
        """

    @abc.abstractmethod
    def rate_hit(self, key: str, limit: int, period_ms: int) -> bool:
        """Count a hit and return True if fewer than ``limit`` fell in the last period."""

    @abc.abstractmethod
    def claim_once(self, key: str, ttl_ms: int, holder: str | None = None) -> bool:
        """Claim ``key`` for ``ttl_ms`` if nobody has; the same ``holder`` may claim again."""

    @abc.abstractmethod
    def claim_release(self, key: str, holder: str) -> None:
        """Give back ``holder``'s claim of ``key`` (its run was dropped before it started)."""

    @abc.abstractmethod
    def singleton_acquire(self, key: str, holder: str, lease_ms: int, mode: SingletonMode) -> SingletonResult:
        """Take the lock if free (``skip``) or in any case (``cancel``)."""

    @abc.abstractmethod
    def singleton_preempt(self, key: str, holder: str, lease_ms: int) -> SingletonResult:
        """Take the lock if free; else name its live holder, which the caller must stop first.

        Unlike ``singleton_acquire`` in mode ``cancel``, the lock is never taken
        from a live holder: it is free only once that run ended (released) or
        died (its lease ran out), so two holders never run at once.
        """

    @abc.abstractmethod
    def singleton_renew(self, key: str, holder: str, lease_ms: int) -> bool:
        """Extend the lock to ``lease_ms`` from now; False if another holder has it."""

    @abc.abstractmethod
    def singleton_release(self, key: str, holder: str) -> None:
        """Drop the lock if ``holder`` still has it."""

    @abc.abstractmethod
    def debounce_push(
        self, key: str, event_id: str, payload: str, period_ms: int, timeout_ms: int | None, order: int = 0
    ) -> int:
        """Make the event the latest of ``key``; return ms until it should check back.

        ``order`` says when the event was made (e.g. ns since the epoch): an event
        older than the stored latest does not replace it and checks back at once.
        """

    @abc.abstractmethod
    def debounce_take(
        self, key: str, event_id: str, period_ms: int, timeout_ms: int | None
    ) -> DebounceResult:
        """Say whether the event runs now, waits, or was superseded."""
