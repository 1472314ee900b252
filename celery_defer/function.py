"""``DeferredFunction``: the Celery task that runs one deferred function's runs."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded

from celery_defer.backoff import backoff_delay_s, retry_after_delay_s
from celery_defer.call import defer
from celery_defer.capture import current_capture
from celery_defer.config import FunctionOptions
from celery_defer.context import DeferContext, DeferEvent, Parent, run_logger
from celery_defer.errors import DeferredRunTimeoutError, NonRetriableError, RetryAfterError
from celery_defer.flow import Admission, FlowControl, keep_leases
from celery_defer.handler_call import invoke_handler, validate_payload
from celery_defer.lifecycle import hand_over
from celery_defer.limits.lease_keeper import default_keeper
from celery_defer.settings import settings_for
from celery_defer.store import RedisStore, store_for
from celery_defer.task import DeferTask, Requeued
from celery_defer.timeouts import check_timeouts, now_ms, remaining_time_limits

logger = logging.getLogger(__name__)

_HOST = socket.gethostname()

Claim = tuple[RedisStore, str]


class DuplicateRun(Ignore):  # type: ignore[misc]
    """A copy of a deferred run that already finalized: acknowledged, not run."""


class DeferredFunction(DeferTask):
    """A deferred function: a real Celery task, made by :func:`celery_defer.create_defer`.

    Its task name is ``celery_defer.fn.<id>``. Send work to it with
    :func:`celery_defer.defer`; calling ``.delay()`` on it yourself is not supported.
    """

    abstract = True
    serializer = "json"
    __celery_defer_options__: ClassVar[FunctionOptions]
    handler: Callable[[Any], Any]

    def execute(self, **message: Any) -> Any:
        """Run one attempt of a deferred run (the body of the task).

        ``message`` holds ``event`` and ``parent``, and as the run goes on
        ``enqueued_ms``, ``started_ms`` and ``passed`` (guards already passed).
        """
        request = self.request
        if request.is_eager:
            # In-process runs are for tests and scripts: no claims, no flow control.
            return self._attempt(message, None)
        try:
            store = store_for(self.app)
            holder = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
            lease_ms = int(store.settings.lease_s * 1000)
            claim = store.claim_run(request.id, holder, lease_ms=lease_ms, attempt=request.retries or 0)
        except Exception as exc:
            return self._fail_or_retry(exc, None, message)
        if claim.state == "done":
            logger.info(
                "deferred run %s of %r is a copy of a run that already %s; acknowledged",
                request.id,
                self.__celery_defer_options__.id,
                claim.detail,
            )
            store.count(f"duplicate:{self.__celery_defer_options__.id}")
            raise DuplicateRun(f"already {claim.detail}")
        if claim.state == "busy":
            self.requeue(delay_s=claim.busy_for_s + 0.05, reason="another copy has the run")
        with _hold_claim(store, request.id, holder, lease_ms):
            return self._attempt(message, (store, holder))

    def _flow(self, store: RedisStore) -> FlowControl:
        cached: tuple[RedisStore, FlowControl] | None = self.__dict__.get("_flow_cache")
        if cached is None or cached[0] is not store:
            options = self.__celery_defer_options__
            flow = FlowControl(options.id, options.flow, store.limits, lease_s=store.settings.lease_s)
            cached = (store, flow)
            self.__dict__["_flow_cache"] = cached
        return cached[1]

    def _admit(self, message: dict[str, Any], payload: Any, claim: Claim) -> Admission:
        event = message["event"]
        flow_event = DeferEvent(event["name"], payload, event["id"], event["ts"])
        store = claim[0]
        flow = self._flow(store)
        try:
            check_timeouts(self.__celery_defer_options__, message)
        except DeferredRunTimeoutError:
            flow.abandon(store.keys, flow_event, self.request.id)
            raise
        passed = list(message.get("passed") or [])
        seq = int(event.get("seq", 0))
        return flow.admit(store.keys, flow_event, self.request.id, passed, event["data"], seq)

    def _attempt(self, message: dict[str, Any], claim: Claim | None) -> Any:
        options = self.__celery_defer_options__
        run_id: str = self.request.id
        admission = Admission("proceed", passed=list(message.get("passed") or []))
        try:
            payload = validate_payload(options.schema, message["event"]["data"])
            if claim is not None and options.flow:
                admission = self._admit(message, payload, claim)
                if admission.action == "proceed" and admission.payload is not None:
                    event = {**message["event"], "data": json.loads(admission.payload)}
                    message = {**message, "event": event}
                    payload = validate_payload(options.schema, event["data"])
            else:
                check_timeouts(self.__celery_defer_options__, message)
        except Exception as exc:
            return self._fail_or_retry(exc, claim, message)
        if admission.action != "proceed":
            assert claim is not None
            return self._hold_back(admission, claim, message)
        if admission.preempted:
            logger.info("singleton: cancelling run %s for run %s", admission.preempted, run_id)
            self.app.control.revoke(admission.preempted, terminate=True)
        message = {
            **message,
            "started_ms": message.get("started_ms") or now_ms(),
            "passed": admission.passed,
        }
        event, parent = message["event"], message["parent"]
        context = DeferContext(
            event=DeferEvent(event["name"], payload, event["id"], event["ts"]),
            run_id=run_id,
            attempt=self.request.retries or 0,
            parents=[Parent(parent["run_id"], parent["task_name"], parent["defer_id"])],
            logger=run_logger(options.id, run_id),
            defer=defer,
        )
        began = time.monotonic()
        try:
            with keep_leases(admission.held, run_id):
                result = invoke_handler(self.handler, context)
        except Exception as exc:
            FlowControl.release(admission.held, run_id, time.monotonic() - began)
            return self._fail_or_retry(exc, claim, message)
        FlowControl.release(admission.held, run_id, time.monotonic() - began)
        self._finish_after_recording(claim, "succeeded")
        return result

    def _finish_after_recording(self, claim: Claim | None, outcome: str) -> None:
        # The run is marked done only once the defers its handler made are in the
        # outbox (see on_attempt_recorded): a kill in between re-runs it rather
        # than lose them.
        if claim is not None:
            self.request.celery_defer_finish = (claim, outcome)

    def on_attempt_recorded(self, request: Any, *, final: bool) -> None:
        pending = getattr(request, "celery_defer_finish", None)
        if pending is None:
            return
        request.celery_defer_finish = None
        (store, holder), outcome = pending
        try:
            store.finish_run(request.id, holder, outcome=outcome)
        except Exception:
            logger.warning("deferred run %s %s, but could not mark it so", request.id, outcome, exc_info=True)

    def _hold_back(self, admission: Admission, claim: Claim, message: dict[str, Any]) -> Any:
        options = self.__celery_defer_options__
        store, holder = claim
        run_id: str = self.request.id
        if admission.action == "drop":
            logger.info("deferred run %s of %r dropped: %s", run_id, options.id, admission.reason)
            store.count(f"dropped:{options.id}:{admission.kind}")
            self._finish_after_recording(claim, "dropped")
            return {"dropped": admission.reason}
        try:
            # Kept for this very attempt: a stray copy of an earlier one stays out.
            ttl_ms = int((admission.delay_s + store.settings.lease_s) * 1000)
            store.hand_over_run(run_id, holder, next_attempt=self.request.retries or 0, ttl_ms=ttl_ms)
        except Exception:
            logger.warning("deferred run %s: could not hand its claim over", run_id, exc_info=True)
        self.requeue(
            delay_s=admission.delay_s, reason=admission.reason, kwargs={**message, "passed": admission.passed}
        )

    def _fail_or_retry(self, exc: Exception, claim: Claim | None, message: dict[str, Any]) -> None:
        """End the attempt that raised ``exc``: a retry, or the run's final failure."""
        options = self.__celery_defer_options__
        request = self.request
        attempt: int = request.retries or 0
        delay_s = self._retry_delay_s(attempt, exc)
        if delay_s is None:
            self._finish_after_recording(claim, "failed")
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
            raise self._eager_retry(exc, delay_s, message) from exc
        if claim is not None:
            ttl_ms = int((delay_s + claim[0].settings.lease_s) * 1000)
            try:
                claim[0].hand_over_run(request.id, claim[1], next_attempt=attempt + 1, ttl_ms=ttl_ms)
            except Exception:
                logger.warning("deferred run %s: could not hand its claim over", request.id, exc_info=True)
        raise self.retry(
            exc=exc,
            countdown=delay_s,
            max_retries=options.retries,
            kwargs=message,
            **remaining_time_limits(options, message),
        ) from exc

    def _retry_delay_s(self, attempt: int, exc: Exception) -> float | None:
        """Seconds until the retry ``exc`` calls for, or ``None`` for a final failure."""
        if isinstance(exc, (NonRetriableError, SoftTimeLimitExceeded)):
            return None
        if attempt >= self.__celery_defer_options__.retries:
            return None
        if isinstance(exc, RetryAfterError):
            try:
                return retry_after_delay_s(exc.delay)
            except ValueError:
                logger.error("RetryAfterError delay %r is not a duration; using backoff", exc.delay)
        settings = settings_for(self.app)
        return backoff_delay_s(attempt, base_s=settings.retry_base_delay_s, max_s=settings.retry_max_delay_s)

    def _eager_retry(self, exc: Exception, delay_s: float, kwargs: dict[str, Any]) -> Retry:
        # Task.retry makes the next eager attempt propagate its errors under
        # task_eager_propagates, which would end the retries early; the next
        # attempt of an in-process run keeps throw=False instead.
        request = self.request
        signature = self.signature_from_request(
            request, None, kwargs, countdown=delay_s, retries=request.retries + 1, throw=False
        )
        return Retry(exc=exc, when=delay_s, is_eager=True, sig=signature)

    def requeue(self, *, delay_s: float, reason: str, kwargs: dict[str, Any] | None = None) -> None:
        """Put this run back on the queue after ``delay_s``, spending no retry.

        Raises:
            Requeued: the worker acknowledges this message; the new one carries the run.
            Reject: the new message could not be sent; the broker keeps this one
                when ``acks_late`` is on.
        """
        request = self.request
        signature = self.signature_from_request(
            request, None, kwargs, countdown=max(delay_s, 0.0), retries=request.retries or 0
        )
        hand_over(current_capture.get(), request)
        try:
            signature.apply_async()
        except Exception as exc:
            if self.acks_late:
                logger.error(
                    "deferred run %s could not wait its turn (%s); the broker keeps it", request.id, exc
                )
                raise Reject(exc, requeue=True) from exc
            # The message is already acknowledged: fail for all to see, never vanish.
            logger.error("deferred run %s failed: it could not be put back on the queue", request.id)
            raise
        logger.debug("deferred run %s waits %.3fs: %s", request.id, delay_s, reason)
        raise Requeued(reason)


@contextmanager
def _hold_claim(store: RedisStore, run_id: str, holder: str, lease_ms: int) -> Iterator[None]:
    """Keep the run's claim alive while it runs, however long that is."""
    keeper = default_keeper()
    token = f"claim:{run_id}:{holder}"
    keeper.register(
        token,
        lease_s=lease_ms / 1000,
        renew=functools.partial(store.renew_run, run_id, holder, lease_ms=lease_ms),
    )
    try:
        yield
    finally:
        keeper.unregister(token)


def _execute(self: DeferredFunction, **message: Any) -> Any:
    return self.execute(**message)
