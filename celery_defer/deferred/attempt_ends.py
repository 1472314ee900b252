"""How an attempt of a deferred run ends when it does not complete.

A retry (its own failure, with backoff), a requeue (a wait on flow control or on
another copy, spending no retry), a wait for Redis (spending no retry, for up to
``defer_store_wait``), or the run's final failure. In every case the run is
marked done only once the defers the attempt made are safe in the outbox.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

from celery.exceptions import Retry, Terminated, WorkerLostError

from celery_defer.background import background
from celery_defer.config.options import FunctionOptions
from celery_defer.deferred.claims import HeldClaim
from celery_defer.deferred.message import DeferMessage, resend_message
from celery_defer.deferred.retries import retry_delay_s
from celery_defer.deferred.timeouts import now_ms, remaining_time_limits
from celery_defer.errors import StoreUnavailableError
from celery_defer.outbox.routing import resolve_route
from celery_defer.parent.capture import current_capture
from celery_defer.parent.task import DeferTask
from celery_defer.settings import settings_for
from celery_defer.store import store_for

logger = logging.getLogger(__name__)


class AttemptEnds(DeferTask):
    """The base of :class:`~celery_defer.DeferredFunction`: the ways an attempt ends."""

    abstract = True
    __celery_defer_options__: ClassVar[FunctionOptions]

    def finalize_interrupted(self, run_id: str, exc: BaseException | None) -> None:
        """A deferred run's attempt never returned (called from the worker's main process).

        A lost pool process is not the run's end: its claim lapses and a recovery
        pass sends it again. A revoke, a terminate or the hard time limit is: the
        run is marked so (it never runs again) and what it deferred is sent.
        """
        if isinstance(exc, WorkerLostError):
            return
        outcome = "revoked" if exc is None or isinstance(exc, Terminated) else "failed"
        app, settings = self.app, settings_for(self.app)
        if not settings.redis_url:
            return  # no Redis configured: the run had no claim, and no defers were kept

        def mark() -> bool:
            store_for(app).claims.finish(run_id, "", outcome=outcome)
            return True

        background().submit(f"marking deferred run {run_id} {outcome}", mark, budget_s=settings.store_wait_s)
        super().finalize_interrupted(run_id, exc)

    def resend(self, message: DeferMessage, *, retries: int) -> str:
        """What a recovery pass sends to start attempt ``retries`` of this run again."""
        request = self.request
        route = resolve_route(self.app, self.name, self.__celery_defer_options__.queue)
        options = {
            **route.send_options(),
            "priority": (request.delivery_info or {}).get("priority"),
            "parent_id": request.parent_id,
            "root_id": request.root_id,
        }
        kept = {name: value for name, value in options.items() if value is not None}
        return resend_message(self.name, message, retries=retries, options=kept)

    def _finish_once_recorded(
        self, claim: HeldClaim | None, outcome: str, *, also: Callable[[], None] | None = None
    ) -> None:
        # The run is marked done only once the defers its handler made are in the
        # outbox: a kill in between re-runs it rather than lose them. ``also``
        # (a flow-control release) rides in the finish's round trip.
        capture = current_capture.get()
        if claim is not None and capture is not None:
            capture.when_saved = functools.partial(claim.finish, outcome, also=also)
        elif also is not None:
            also()

    def _wait_for_store(
        self, exc: StoreUnavailableError, claim: HeldClaim | None, message: DeferMessage
    ) -> NoReturn:
        """Redis did not answer before the handler started: not the handler's failure.

        The run goes back to the queue, spending no retry, until Redis answers or
        ``defer_store_wait`` has passed since it first did not; then it fails (or
        retries) as any error would.
        """
        now = now_ms(self.app)
        since_ms = message.store_away_since_ms or now
        waited_s = (now - since_ms) / 1000
        budget_s = settings_for(self.app).store_wait_s
        if waited_s >= budget_s:
            logger.error(
                "deferred run %s: Redis unreachable for %.0f s (defer_store_wait); giving up waiting",
                self.request.id,
                waited_s,
            )
            self._fail_or_retry(exc, claim, message.replace(store_away_since_ms=None))
        delay_s = min(10.0, max(1.0, waited_s / 2))
        logger.warning(
            "deferred run %s of %r waits %.1f s for Redis, spending no retry: %s",
            self.request.id,
            self.__celery_defer_options__.id,
            delay_s,
            exc,
        )
        if claim is not None:
            claim.hand_over(next_attempt=self.request.retries or 0, ttl_ms=int(delay_s * 1000))
        waiting = message.replace(store_away_since_ms=since_ms)
        self.requeue(delay_s=delay_s, reason="waiting for Redis", kwargs=waiting.to_kwargs())

    def _fail_or_retry(self, exc: Exception, claim: HeldClaim | None, message: DeferMessage) -> NoReturn:
        """End the attempt that raised ``exc``: a retry, or the run's final failure."""
        options = self.__celery_defer_options__
        request = self.request
        attempt: int = request.retries or 0
        settings = settings_for(self.app)
        delay_s = retry_delay_s(options, settings, attempt, exc)
        if delay_s is None:
            self._finish_once_recorded(claim, "failed")
            raise exc
        logger.info(
            "deferred run %s of %r failed (attempt %d), retrying in %.2fs: %r",
            request.id,
            options.id,
            attempt,
            delay_s,
            exc,
        )
        if request.is_eager:
            raise self._eager_retry(exc, delay_s, message.to_kwargs()) from exc
        if claim is not None:
            claim.hand_over(
                next_attempt=attempt + 1,
                ttl_ms=int((delay_s + settings.lease_s) * 1000),
                resend=self.resend(message, retries=attempt + 1),
            )
        raise self.retry(
            exc=exc,
            countdown=delay_s,
            max_retries=options.retries,
            kwargs=message.to_kwargs(),
            **remaining_time_limits(options, message, self.app),
        ) from exc

    def _eager_retry(self, exc: Exception, delay_s: float, kwargs: dict[str, Any]) -> Retry:
        # Task.retry makes the next eager attempt propagate its errors under
        # task_eager_propagates, which would end the retries early; the next
        # attempt of an in-process run keeps throw=False instead.
        request = self.request
        signature = self.signature_from_request(
            request, None, kwargs, countdown=delay_s, retries=request.retries + 1, throw=False
        )
        return Retry(exc=exc, when=delay_s, is_eager=True, sig=signature)
