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

from celery.exceptions import Ignore, Retry, SoftTimeLimitExceeded

from celery_defer.backoff import backoff_delay_s, retry_after_delay_s
from celery_defer.call import defer
from celery_defer.config import FunctionOptions
from celery_defer.context import DeferContext, DeferEvent, Parent, run_logger
from celery_defer.errors import DeferredRunTimeoutError, NonRetriableError, RetryAfterError
from celery_defer.flow import Admission, FlowControl, keep_leases
from celery_defer.handler_call import invoke_handler, validate_payload
from celery_defer.limits.lease_keeper import default_keeper
from celery_defer.settings import settings_for
from celery_defer.store import RedisStore, store_for
from celery_defer.task import DeferTask, Requeued

logger = logging.getLogger(__name__)

_HOST = socket.gethostname()


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

    def execute(
        self,
        event: dict[str, Any],
        parent: dict[str, Any],
        enqueued_ms: int | None = None,
        started_ms: int | None = None,
        passed: list[str] | None = None,
    ) -> Any:
        """Run one attempt of a deferred run (the body of the task)."""
        request = self.request
        self._check_timeouts(time.time_ns() // 1_000_000, enqueued_ms, started_ms)
        if request.is_eager:
            # In-process runs are for tests and scripts: no claims, no flow control.
            return self._attempt(event, parent, started_ms, passed or [], None)
        store = store_for(self.app)
        holder = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        lease_ms = int(store.settings.lease_s * 1000)
        claim = store.claim_run(request.id, holder, lease_ms=lease_ms)
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
            self.requeue(delay_s=claim.busy_for_s + 0.05, reason="another copy is running")
        with _hold_claim(store, request.id, holder, lease_ms):
            return self._attempt(event, parent, started_ms, passed or [], (store, holder))

    def _check_timeouts(self, now_ms: int, enqueued_ms: int | None, started_ms: int | None) -> None:
        options = self.__celery_defer_options__
        start_s, finish_s = options.start_timeout_s, options.finish_timeout_s
        if start_s is not None and started_ms is None and enqueued_ms is not None:
            waited_s = (now_ms - enqueued_ms) / 1000
            if waited_s > start_s:
                raise DeferredRunTimeoutError(
                    f"not started within timeouts.start={start_s}s (waited {waited_s:.3f}s)"
                )
        if finish_s is not None and started_ms is not None:
            ran_s = (now_ms - started_ms) / 1000
            if ran_s > finish_s:
                raise DeferredRunTimeoutError(
                    f"not finished within timeouts.finish={finish_s}s (running {ran_s:.3f}s)"
                )

    def _flow(self, store: RedisStore) -> FlowControl:
        cached: tuple[RedisStore, FlowControl] | None = self.__dict__.get("_flow_cache")
        if cached is None or cached[0] is not store:
            options = self.__celery_defer_options__
            cached = (
                store,
                FlowControl(options.id, options.flow, store.limits, lease_s=store.settings.lease_s),
            )
            self.__dict__["_flow_cache"] = cached
        return cached[1]

    def _attempt(
        self,
        event: dict[str, Any],
        parent: dict[str, Any],
        started_ms: int | None,
        passed: list[str],
        claim: tuple[RedisStore, str] | None,
    ) -> Any:
        options = self.__celery_defer_options__
        run_id: str = self.request.id
        admission = Admission("proceed", passed=passed)
        try:
            payload = validate_payload(options.schema, event["data"])
            if claim is not None and options.flow:
                flow_event = DeferEvent(event["name"], payload, event["id"], event["ts"])
                admission = self._flow(claim[0]).admit(
                    claim[0].keys, flow_event, run_id, passed, event["data"], int(event.get("seq", 0))
                )
                if admission.action == "proceed" and admission.payload is not None:
                    event = {**event, "data": json.loads(admission.payload)}
                    payload = validate_payload(options.schema, event["data"])
        except Exception as exc:
            self._fail_or_retry(exc, claim, event, parent, started_ms, passed)
        if admission.action != "proceed":
            assert claim is not None
            return self._hold_back(admission, claim, event, parent)
        if admission.preempted:
            logger.info("singleton: cancelling run %s for run %s", admission.preempted, run_id)
            self.app.control.revoke(admission.preempted, terminate=True)
        started_ms = started_ms or time.time_ns() // 1_000_000
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
            self._fail_or_retry(exc, claim, event, parent, started_ms, admission.passed)
        FlowControl.release(admission.held, run_id, time.monotonic() - began)
        if claim is not None:
            claim[0].finish_run(run_id, claim[1], outcome="succeeded")
        return result

    def _hold_back(
        self,
        admission: Admission,
        claim: tuple[RedisStore, str],
        event: dict[str, Any],
        parent: dict[str, Any],
    ) -> Any:
        options = self.__celery_defer_options__
        store, holder = claim
        run_id: str = self.request.id
        if admission.action == "drop":
            logger.info("deferred run %s of %r dropped: %s", run_id, options.id, admission.reason)
            store.count(f"dropped:{options.id}:{admission.kind}")
            store.finish_run(run_id, holder, outcome="dropped")
            return {"dropped": admission.reason}
        store.finish_run(run_id, holder, outcome="")
        kwargs = {**self.request.kwargs, "event": event, "passed": admission.passed}
        self.requeue(delay_s=admission.delay_s, reason=admission.reason, kwargs=kwargs)

    def _fail_or_retry(
        self,
        exc: Exception,
        claim: tuple[RedisStore, str] | None,
        event: dict[str, Any],
        parent: dict[str, Any],
        started_ms: int | None,
        passed: list[str],
    ) -> None:
        """End the attempt that raised ``exc``: a retry, or the run's final failure."""
        options = self.__celery_defer_options__
        run_id: str = self.request.id
        attempt: int = self.request.retries or 0
        delay_s = self._retry_delay_s(attempt, exc)
        if claim is not None:
            claim[0].finish_run(run_id, claim[1], outcome="" if delay_s is not None else "failed")
        if delay_s is None:
            raise exc
        logger.info(
            "deferred run %s of %r failed (attempt %d), retrying in %.2fs: %r",
            run_id,
            options.id,
            attempt,
            delay_s,
            exc,
        )
        kwargs = {"event": event, "parent": parent, "started_ms": started_ms, "passed": passed}
        if self.request.is_eager:
            raise self._eager_retry(exc, delay_s, kwargs) from exc
        raise self.retry(exc=exc, countdown=delay_s, max_retries=options.retries, kwargs=kwargs) from exc

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
            Requeued: always; the worker acknowledges this message.
        """
        request = self.request
        signature = self.signature_from_request(
            request, None, kwargs, countdown=max(delay_s, 0.0), retries=request.retries or 0
        )
        signature.apply_async()
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


def _execute(self: DeferredFunction, **kwargs: Any) -> Any:
    return self.execute(**kwargs)
