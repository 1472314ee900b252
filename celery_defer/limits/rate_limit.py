"""``rate_limit``: runs over ``limit`` within a sliding ``period`` are dropped."""

from __future__ import annotations

from celery_defer.limits.backend import LimitBackend
from celery_defer.limits.base import Decision, Guard, require_positive, to_ms


class RateLimit(Guard):
    """Let at most ``limit`` runs start in any window of ``period_s``; drop the rest.

    Args:
        backend: where the window lives.
        limit: runs allowed per window.
        period_s: the window length.
    """

    kind = "rate_limit"

    def __init__(self, backend: LimitBackend, *, limit: int, period_s: float) -> None:
        super().__init__(backend)
        require_positive("limit", limit)
        require_positive("period_s", period_s)
        self.limit = int(limit)
        self.period_s = float(period_s)

    def check(self, key: str, *, holder: str = "") -> Decision:
        """``proceed`` (counted) or ``drop`` (not counted)."""
        if self.backend.rate_hit(key, self.limit, to_ms(self.period_s)):
            return Decision.proceed()
        return Decision.drop(f"rate limit {self.limit} per {self.period_s:g}s reached")
