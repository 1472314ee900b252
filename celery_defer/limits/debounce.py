"""``debounce``: one run ``period`` after the last event of a key, with the latest data."""

from __future__ import annotations

from celery_defer.limits.backend import LimitBackend
from celery_defer.limits.base import Decision, Guard, require_positive, to_ms


class Debounce(Guard):
    """Collapse a burst of events per key into one run with the latest payload.

    Each event is first :meth:`push`-ed (when it is deferred), then scheduled to
    :meth:`check` back after the returned delay. Only the latest event of the
    key runs; earlier ones are dropped as superseded.

    Args:
        backend: where the latest event lives.
        period_s: quiet time after the last event before the run starts.
        timeout_s: cap on the wait from the first event of a burst; once
            passed, the latest event runs even if events keep coming.
    """

    kind = "debounce"

    def __init__(self, backend: LimitBackend, *, period_s: float, timeout_s: float | None = None) -> None:
        super().__init__(backend)
        require_positive("period_s", period_s)
        if timeout_s is not None:
            require_positive("timeout_s", timeout_s)
        self.period_s = float(period_s)
        self.timeout_s = None if timeout_s is None else float(timeout_s)

    def _timeout_ms(self) -> int | None:
        return None if self.timeout_s is None else to_ms(self.timeout_s)

    def push(self, key: str, *, event_id: str, payload: str, order: int = 0) -> float:
        """Make this event the latest of the key; return seconds until it should check back.

        ``order`` (when the event was made) keeps the latest event the latest even
        when events arrive out of order.
        """
        wait_ms = self.backend.debounce_push(
            key, event_id, payload, to_ms(self.period_s), self._timeout_ms(), order
        )
        return wait_ms / 1000

    def check(self, key: str, *, holder: str) -> Decision:
        """For the event ``holder``: ``proceed`` with the latest payload, ``wait`` or ``drop``."""
        result = self.backend.debounce_take(key, holder, to_ms(self.period_s), self._timeout_ms())
        if result.state == "run":
            return Decision.proceed(payload=result.payload)
        if result.state == "wait":
            return Decision.wait(result.wait_ms / 1000, "debounce quiet period")
        return Decision.drop("debounce: superseded by a later event")
