"""``idempotency``: at most one run per key value within ``ttl_s`` (24 h)."""

from __future__ import annotations

from celery_defer.limits.backend import LimitBackend
from celery_defer.limits.base import Decision, Guard, require_positive, to_ms

#: How long a key value, once claimed, drops later runs.
DEFAULT_TTL_S = 24 * 3600.0


class Idempotency(Guard):
    """The first run to claim a key value proceeds; later runs are dropped.

    The claim remembers its holder, so the same run checking again (a retry, a
    redelivered message) still proceeds. A run that a later guard drops before
    it starts gives the key value back (:meth:`release`), so it does not make the
    next run with that value a duplicate.

    Args:
        backend: where claims live.
        ttl_s: how long a claim lasts.
    """

    kind = "idempotency"

    def __init__(self, backend: LimitBackend, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        super().__init__(backend)
        require_positive("ttl_s", ttl_s)
        self.ttl_s = float(ttl_s)

    def check(self, key: str, *, holder: str) -> Decision:
        """``proceed`` for the first holder of the key value, ``drop`` for any other."""
        if self.backend.claim_once(key, to_ms(self.ttl_s), holder=holder or None):
            return Decision.proceed()
        return Decision.drop("idempotency key already used")

    def release(self, key: str, *, holder: str, run_s: float | None = None) -> None:
        """Give the key value back: ``holder``'s run was dropped or abandoned before it started."""
        self.backend.claim_release(key, holder)
