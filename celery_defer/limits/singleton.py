"""``singleton``: one running run per key; ``skip`` drops newcomers, ``cancel`` preempts."""

from __future__ import annotations

from celery_defer.limits.backend import LimitBackend, SingletonMode
from celery_defer.limits.base import Decision, Guard, require_positive, to_ms

#: How often a newcomer in mode ``cancel`` checks whether the run it cancelled is gone.
CANCEL_POLL_S = 0.5


class Singleton(Guard):
    """A lock per key value, held by the running run and kept alive by its lease.

    Args:
        backend: where the locks live.
        mode: ``skip`` drops a run that finds the lock held; ``cancel`` makes it
            ``wait`` and names the holder in ``Decision.preempted`` (once) so the
            caller can cancel (revoke) it; the newcomer takes the lock once the
            holder released it or died, so two runs never hold it at once.
        lease_s: a lock not renewed for this long is freed (a killed worker's lock).
    """

    kind = "singleton"
    lease_s: float

    def __init__(self, backend: LimitBackend, *, mode: SingletonMode = "skip", lease_s: float = 60.0) -> None:
        super().__init__(backend)
        if mode not in ("skip", "cancel"):
            raise ValueError(f"mode must be 'skip' or 'cancel', got {mode!r}")
        require_positive("lease_s", lease_s)
        self.mode: SingletonMode = mode
        self.lease_s = float(lease_s)

    def check(self, key: str, *, holder: str) -> Decision:
        """``proceed``, or with the lock held: ``drop`` (``skip``) or ``wait`` (``cancel``)."""
        if self.mode == "cancel":
            taken = self.backend.singleton_preempt(key, holder, to_ms(self.lease_s))
            if taken.acquired:
                return Decision.proceed()
            other = taken.previous_holder
            return Decision.wait(
                CANCEL_POLL_S,
                f"singleton running as {other}, cancelled; waiting for it to end",
                preempted=other if taken.newly_asked else None,
            )
        result = self.backend.singleton_acquire(key, holder, to_ms(self.lease_s), self.mode)
        if result.acquired:
            return Decision.proceed(preempted=result.previous_holder)
        return Decision.drop(f"singleton running as {result.previous_holder}")

    def renew(self, key: str, *, holder: str) -> bool:
        """Extend the lock by a lease; False if another run took it."""
        return self.backend.singleton_renew(key, holder, to_ms(self.lease_s))

    def release(self, key: str, *, holder: str, run_s: float | None = None) -> None:
        """Drop the lock, unless a canceller took it meanwhile."""
        self.backend.singleton_release(key, holder)
