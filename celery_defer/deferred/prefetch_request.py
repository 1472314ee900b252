"""The request of a deferred run in a worker's main process: it widens the prefetch budget while it runs.

See ``prefetch.py``. Named by deferred functions as their ``Task.Request``, so
Celery imports it in workers only.
"""

from __future__ import annotations

from celery.worker.request import Request

from celery_defer.deferred.prefetch import Widening, widening_of


class DeferredRequest(Request):  # type: ignore[misc]
    """A deferred run in the worker's main process (the deferred functions' ``Task.Request``)."""

    _widening: Widening | None = None

    def on_accepted(self, pid: int, time_accepted: float) -> None:
        widening = widening_of(self._app)
        if widening is not None and self._widening is None and not self.acknowledged:
            widening.taken()
            self._widening = widening
        super().on_accepted(pid, time_accepted)

    def acknowledge(self) -> None:
        super().acknowledge()
        self._release()

    def reject(self, requeue: bool = False) -> None:
        super().reject(requeue)
        self._release()

    def _release(self) -> None:
        widening, self._widening = self._widening, None
        if widening is not None:
            widening.released()
