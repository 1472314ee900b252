"""``DeferredFunction``: the Celery task that runs one deferred function's runs."""

from __future__ import annotations

import functools
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
from celery_defer.errors import (
    CeleryDeferError,
    DeferredRunTimeoutError,
    NonRetriableError,
    RetryAfterError,
)
from celery_defer.handler_call import call_handler
from celery_defer.limits.lease_keeper import default_keeper
from celery_defer.settings import read_settings
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
    ) -> Any:
        """Run one attempt of a deferred run (the body of the task)."""
        options = self.__celery_defer_options__
        request = self.request
        run_id: str = request.id
        attempt: int = request.retries or 0
        now_ms = time.time_ns() // 1_000_000
        self._check_timeouts(options, attempt, now_ms, enqueued_ms, started_ms)
        started_ms = started_ms or now_ms
        if request.is_eager:
            return self._attempt(options, run_id, attempt, event, parent, started_ms, None)
        store = store_for(self.app)
        holder = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        lease_ms = int(store.settings.claim_lease_s * 1000)
        claim = store.claim_run(run_id, holder, lease_ms=lease_ms)
        if claim.state == "done":
            logger.info(
                "deferred run %s of %r is a copy of a run that already %s; acknowledged",
                run_id,
                options.id,
                claim.detail,
            )
            store.count(f"duplicate:{options.id}")
            raise DuplicateRun(f"already {claim.detail}")
        if claim.state == "busy":
            self.requeue(delay_s=claim.busy_for_s + 0.05, reason="another copy is running")
        with _hold_claim(store, run_id, holder, lease_ms):
            return self._attempt(options, run_id, attempt, event, parent, started_ms, (store, holder))

    def _check_timeouts(
        self,
        options: FunctionOptions,
        attempt: int,
        now_ms: int,
        enqueued_ms: int | None,
        started_ms: int | None,
    ) -> None:
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

    def _attempt(
        self,
        options: FunctionOptions,
        run_id: str,
        attempt: int,
        event: dict[str, Any],
        parent: dict[str, Any],
        started_ms: int,
        claim: tuple[RedisStore, str] | None,
    ) -> Any:
        def make_context(payload: Any) -> DeferContext[Any]:
            return DeferContext(
                event=DeferEvent(event["name"], payload, event["id"], event["ts"]),
                run_id=run_id,
                attempt=attempt,
                parents=[Parent(parent["run_id"], parent["task_name"], parent["defer_id"])],
                logger=run_logger(options.id, run_id),
                defer=defer,
            )

        try:
            result = call_handler(self.handler, options.schema, event["data"], make_context)
        except Exception as exc:
            delay_s = self._retry_delay_s(options, attempt, exc)
            if claim is not None:
                claim[0].finish_run(run_id, claim[1], outcome="" if delay_s is not None else "failed")
            if delay_s is None:
                raise
            logger.info(
                "deferred run %s of %r failed (attempt %d), retrying in %.2fs: %r",
                run_id,
                options.id,
                attempt,
                delay_s,
                exc,
            )
            retry_kwargs = {"event": event, "parent": parent, "started_ms": started_ms}
            if self.request.is_eager:
                raise self._eager_retry(exc, delay_s, retry_kwargs) from exc
            raise self.retry(
                exc=exc, countdown=delay_s, max_retries=options.retries, kwargs=retry_kwargs
            ) from exc
        if claim is not None:
            claim[0].finish_run(run_id, claim[1], outcome="succeeded")
        return result

    def _retry_delay_s(self, options: FunctionOptions, attempt: int, exc: Exception) -> float | None:
        """Seconds until the retry ``exc`` calls for, or ``None`` for a final failure."""
        if isinstance(exc, (NonRetriableError, SoftTimeLimitExceeded)):
            return None
        if attempt >= options.retries:
            return None
        if isinstance(exc, RetryAfterError):
            try:
                return retry_after_delay_s(exc.delay)
            except ValueError:
                logger.error("RetryAfterError delay %r is not a duration; using backoff", exc.delay)
        settings = read_settings(self.app)
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

    def requeue(self, *, delay_s: float, reason: str) -> None:
        """Put this run back on the queue after ``delay_s``, spending no retry.

        Raises:
            Requeued: always; the worker acknowledges this message.
        """
        request = self.request
        signature = self.signature_from_request(
            request, None, None, countdown=max(delay_s, 0.0), retries=request.retries or 0
        )
        signature.apply_async()
        logger.debug("deferred run %s requeued for %.2fs: %s", request.id, delay_s, reason)
        raise Requeued(reason)


@contextmanager
def _hold_claim(store: RedisStore, run_id: str, holder: str, lease_ms: int) -> Iterator[None]:
    """Keep the run's claim alive while its handler runs, however long that is."""
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


__all__ = ["CeleryDeferError", "DeferredFunction", "DuplicateRun"]
