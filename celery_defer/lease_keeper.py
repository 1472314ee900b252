"""One daemon thread per process that keeps registered leases alive while runs execute.

A concurrency slot or a singleton lock is leased: it frees itself unless renewed,
so a killed worker's slot comes back within one lease. While the run executes,
:class:`LeaseKeeper` renews it every ``lease_s / 3``.

Runs come and go by the thousand, mostly far quicker than a renewal interval, and
waking the thread costs the running task the GIL and a context switch. So the
thread is woken only when a new lease is due before it would wake anyway, and
with no lease left it still wakes once per the shortest interval it has seen:
the lease of the next run, registered meanwhile, never needs it woken.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Renewals happen this many times per lease, so two may fail before it expires.
RENEWALS_PER_LEASE = 3


@dataclass(slots=True)
class _Lease:
    renew: Callable[[], bool]
    on_lost: Callable[[], None] | None
    interval_s: float
    next_s: float


class LeaseKeeper:
    """Renews leases in the background; fork-safe (a child starts afresh).

    Register a lease when its run starts and unregister it when the run ends::

        keeper.register(run_id, lease_s=guard.lease_s,
                        renew=functools.partial(guard.renew, key, holder=run_id))

    A renewal that raises is logged and tried again at the next interval; one
    that returns False (the lease was lost) unregisters it and calls ``on_lost``.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # In a forked child the parent's lock may be held and its thread is gone:
        # start over rather than touch them.
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._leases: dict[str, _Lease] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: When the thread wakes next on its own; None while it waits for work.
        self._wake_at: float | None = None
        #: The shortest renewal interval registered: how often an idle thread wakes.
        self._idle_wake_s: float | None = None

    def _ensure_process(self) -> None:
        if os.getpid() != self._pid:
            logger.debug("lease keeper: new process %d, starting afresh", os.getpid())
            self._reset()

    def register(
        self,
        token: str,
        *,
        lease_s: float,
        renew: Callable[[], bool],
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """Renew ``token``'s lease every ``lease_s / 3`` until it is unregistered.

        Args:
            token: names the lease (e.g. the run id and the guard kind).
            lease_s: the lease length.
            renew: extends the lease; returns False when it was lost.
            on_lost: called (in the keeper thread) when ``renew`` returned False.
        """
        self._ensure_process()
        interval_s = lease_s / RENEWALS_PER_LEASE
        next_s = time.monotonic() + interval_s
        with self._cond:
            self._leases[token] = _Lease(renew, on_lost, interval_s, next_s)
            if self._idle_wake_s is None or interval_s < self._idle_wake_s:
                self._idle_wake_s = interval_s
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(
                    target=self._loop, name="celery-defer-lease-keeper", daemon=True
                )
                self._thread.start()
            # Wake the thread only when it would sleep past this lease's first
            # renewal: runs come and go by the thousand, wake-ups cost the GIL.
            if self._wake_at is None or next_s < self._wake_at:
                self._cond.notify()

    def unregister(self, token: str) -> None:
        """Stop renewing ``token``'s lease (releasing it is the guard's job)."""
        self._ensure_process()
        with self._cond:
            self._leases.pop(token, None)

    def registered(self) -> list[str]:
        """Tokens whose leases are being renewed."""
        self._ensure_process()
        with self._cond:
            return list(self._leases)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and forget every lease."""
        self._ensure_process()
        with self._cond:
            self._stopping = True
            self._leases.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                due = [(t, lease) for t, lease in self._leases.items() if lease.next_s <= now]
                if not due:
                    next_s = min((lease.next_s for lease in self._leases.values()), default=None)
                    if next_s is None and self._idle_wake_s is not None:
                        next_s = now + self._idle_wake_s  # see the module docstring
                    self._wake_at = next_s
                    self._cond.wait(None if next_s is None else next_s - now)
                    self._wake_at = None
                    continue
                for _, lease in due:
                    lease.next_s = now + lease.interval_s
            for token, lease in due:
                self._renew(token, lease)

    def _renew(self, token: str, lease: _Lease) -> None:
        try:
            kept = lease.renew()
        except Exception:
            logger.warning("lease %s: renewal failed, will retry", token, exc_info=True)
            return
        if kept:
            return
        logger.warning("lease %s was lost before its run ended", token)
        with self._cond:
            if self._leases.get(token) is lease:
                del self._leases[token]
        if lease.on_lost is not None:
            try:
                lease.on_lost()
            except Exception:
                logger.exception("lease %s: on_lost callback failed", token)


_default = LeaseKeeper()


def default_keeper() -> LeaseKeeper:
    """The process-wide :class:`LeaseKeeper` (its thread starts on first register)."""
    return _default
