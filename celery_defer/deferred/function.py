"""``DeferredFunction``: the Celery task that runs one deferred function's runs.

One attempt reads top to bottom in :meth:`DeferredFunction.execute`: parse the
message, claim the run id (a copy of a finished run stops here), admit it
through flow control (it may wait or be dropped), run the handler, and finish:
the run is marked done once the defers its handler made are safe in the outbox.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from celery_defer.deferred.admission import Admission, FlowControl, keep_leases
from celery_defer.deferred.attempt_ends import AttemptEnds
from celery_defer.deferred.celery_log import explained
from celery_defer.deferred.claims import HeldClaim
from celery_defer.deferred.context import DeferContext, DeferEvent, Parent, run_logger
from celery_defer.deferred.direct_start import DirectStart, parse_started
from celery_defer.deferred.handler_call import invoke_handler, is_async_callable, validate_payload
from celery_defer.deferred.message import DeferMessage
from celery_defer.deferred.parking import FROM_LINE, send_handoffs
from celery_defer.deferred.payload import T
from celery_defer.deferred.timeouts import check_timeouts, now_ms
from celery_defer.errors import (
    DeferredRunTimeoutError,
    DuplicateRun,
    MalformedMessageError,
    Requeued,
    StoreUnavailableError,
)
from celery_defer.limits.backend import PARK_TTL_MS
from celery_defer.parent.call_site import defer
from celery_defer.settings import settings_for
from celery_defer.steps.current import steps_of_current_run
from celery_defer.store import Store, store_for

logger = logging.getLogger(__name__)


class DeferredFunction(DirectStart[T], AttemptEnds):
    """A deferred function: a real Celery task, made by :func:`celery_defer.create_defer`.

    Its task name is ``celery_defer.fn.<id>``; ``T`` is its payload type. Send work
    to it with :func:`celery_defer.defer`, or :meth:`start` from plain code;
    ``.delay()`` and ``.apply_async()`` with other arguments are refused.
    """

    abstract = True
    serializer = "json"
    handler: Callable[[Any], Any]

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run one attempt of a deferred run (the body of the task)."""
        message = self._parse(args, kwargs)
        if self.request.is_eager:
            # In-process runs are for tests and scripts: no claims, no flow control.
            message, payload, admission = self._admit(message, None, None)
            return self._run(message, payload, admission, None)
        store, claim = self._claim(message)
        if message.store_away_since_ms is not None:
            message = message.replace(store_away_since_ms=None)  # it answered
        with claim.kept_alive():
            message, payload, admission = self._admit(message, store, claim)
            if admission.action != "proceed":
                return self._hold_back(admission, store, claim, message)
            return self._run(message, payload, admission, claim)

    def _parse(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> DeferMessage:
        try:
            return parse_started(self.__celery_defer_options__.id, args, kwargs)
        except MalformedMessageError as exc:
            logger.error(
                "deferred run %s of %r failed: its message is not one defer() sends (%s); not retried",
                self.request.id,
                self.__celery_defer_options__.id,
                exc,
            )
            raise

    def _claim(self, message: DeferMessage) -> tuple[Store, HeldClaim]:
        request = self.request
        try:
            store = store_for(self.app)
            settings = store.settings
            claim = HeldClaim(
                store.claims,
                request.id,
                lease_ms=int(settings.lease_s * 1000),
                retry_for_s=settings.store_wait_s,
            )
            found = claim.take(
                attempt=request.retries or 0, resend=self.resend(message, retries=request.retries or 0)
            )
        except StoreUnavailableError as exc:
            self._wait_for_store(exc, None, message)
        except Exception as exc:
            self._fail_or_retry(exc, None, message)
        if found.state == "done":
            function_id = self.__celery_defer_options__.id
            logger.info(
                "deferred run %s of %r is a copy of a run that already %s; acknowledged",
                request.id,
                function_id,
                found.detail,
            )
            store.stats.count(f"duplicate:{function_id}", run_id=request.id)
            explained(request.id)
            raise DuplicateRun(f"already {found.detail}")
        if found.state == "busy":
            if FROM_LINE in message.passed:
                # Sent from a line while its parked attempt was still handing its
                # claim over (a few ms): come back at once, holding the slot.
                back = message.replace(passed=tuple(s for s in message.passed if s != FROM_LINE))
                self.requeue(delay_s=0.1, reason="its parked attempt is ending", kwargs=back.to_kwargs())
            self.requeue(delay_s=found.busy_for_s + 0.05, reason="another copy has the run")
        return store, claim

    def _admit(
        self, message: DeferMessage, store: Store | None, claim: HeldClaim | None
    ) -> tuple[DeferMessage, Any, Admission]:
        """Validate the payload and pass the flow-control guards.

        Returns the message and payload to run with (debounce may swap in the
        latest event's data) and the guards' answer.
        """
        options = self.__celery_defer_options__
        run_id: str = self.request.id
        try:
            payload = validate_payload(options.schema, message.data)
            if store is None or not options.flow:
                check_timeouts(options, message, self.app)
                return message, payload, Admission("proceed", passed=list(message.passed))
            flow = self._flow(store)
            event = DeferEvent(message.event_name, payload, message.event_id, message.event_ts)
            try:
                check_timeouts(options, message, self.app)
            except DeferredRunTimeoutError:
                flow.abandon(store.keys, event, run_id)
                raise
            retries = self.request.retries or 0

            def parcel(passed: Sequence[str]) -> str:
                slots = (*(slot for slot in passed if slot != FROM_LINE), FROM_LINE)
                return self.resend(message.replace(passed=slots), retries=retries)

            admission = flow.admit(
                store.keys, event, run_id, list(message.passed), message.data, message.event_seq, parcel
            )
            if admission.action == "proceed" and admission.payload is not None:
                message = message.replace(data=json.loads(admission.payload))
                payload = validate_payload(options.schema, message.data)
        except StoreUnavailableError as exc:
            self._wait_for_store(exc, claim, message)
        except Exception as exc:
            self._fail_or_retry(exc, claim, message)
        return message, payload, admission

    def _flow(self, store: Store) -> FlowControl:
        cached: tuple[Store, FlowControl] | None = self.__dict__.get("_flow_cache")
        if cached is None or cached[0] is not store:
            options = self.__celery_defer_options__
            flow = FlowControl(
                options.id,
                options.flow,
                store.limits,
                lease_s=store.settings.lease_s,
                send=functools.partial(send_handoffs, self.app),
            )
            cached = (store, flow)
            self.__dict__["_flow_cache"] = cached
        return cached[1]

    def _run(self, message: DeferMessage, payload: Any, admission: Admission, claim: HeldClaim | None) -> Any:
        options = self.__celery_defer_options__
        run_id: str = self.request.id
        # The claim's clock is the app's (clock_for), with no settings to look up.
        started_ms = message.started_ms or (claim.claims.clock.now_ms() if claim else now_ms(self.app))
        message = message.replace(started_ms=started_ms, passed=tuple(admission.passed))
        steps = steps_of_current_run()
        steps.sleeper = functools.partial(self._sleep_run, message, claim)
        context = DeferContext(
            event=DeferEvent(message.event_name, payload, message.event_id, message.event_ts),
            run_id=run_id,
            attempt=self.request.retries or 0,
            parents=[Parent(message.parent_run_id, message.parent_task_name, message.defer_id)]
            if message.parent_run_id  # a run from .start() has no parent
            else [],
            logger=run_logger(options.id, run_id),
            defer=defer,
            step=steps,
        )
        began = time.monotonic()
        try:
            # A run that holds no slot skips the lease context (a generator per run).
            leases = keep_leases(admission.held, run_id) if admission.held else contextlib.nullcontext()
            with leases:
                result = invoke_handler(self.handler, context, is_async=self._handler_is_async)
        except Requeued:  # a step.sleep: the run goes on later, holding nothing meanwhile
            FlowControl.release(admission.held, run_id, time.monotonic() - began)
            raise
        except Exception as exc:
            FlowControl.release(admission.held, run_id, time.monotonic() - began)
            self._fail_or_retry(exc, claim, message)
        # The slots go back with the finish, in its round trip (a moment later: once
        # the defers the handler made are recorded, when it made some).
        release = (
            functools.partial(FlowControl.release, admission.held, run_id, time.monotonic() - began)
            if admission.held
            else None
        )
        self._finish_once_recorded(claim, "succeeded", also=release)
        return result

    @functools.cached_property
    def _handler_is_async(self) -> bool:
        return is_async_callable(self.handler)

    def _hold_back(self, admission: Admission, store: Store, claim: HeldClaim, message: DeferMessage) -> Any:
        options = self.__celery_defer_options__
        run_id: str = self.request.id
        if admission.action == "drop":
            logger.info("deferred run %s of %r dropped: %s", run_id, options.id, admission.reason)
            store.stats.count(f"dropped:{options.id}:{admission.kind}", run_id=run_id)
            self._finish_once_recorded(claim, "dropped")
            return {"dropped": admission.reason}
        if admission.preempted:
            logger.info("singleton: cancelling run %s for run %s", admission.preempted, run_id)
            self.app.control.revoke(admission.preempted, terminate=True)
        # Kept for this very attempt: a stray copy of an earlier one stays out.
        waiting = message.replace(passed=tuple(admission.passed))
        retries = self.request.retries or 0
        if admission.parked:
            # Parked: the claim lasts as long as the line may, so that recovery does
            # not send the run while the line still holds it.
            sent_from_line = (*(slot for slot in waiting.passed if slot != FROM_LINE), FROM_LINE)
            claim.hand_over(
                next_attempt=retries,
                ttl_ms=PARK_TTL_MS + int(store.settings.lease_s * 1000),
                resend=self.resend(waiting.replace(passed=sent_from_line), retries=retries),
            )
            logger.info(
                "deferred run %s parked in the %s line of %s (%d ahead)",
                run_id,
                admission.kind,
                options.id,
                admission.ahead,
            )
            explained(run_id)
            self.step_aside(reason=admission.reason, back_in_s=PARK_TTL_MS / 1000)
        ttl_ms = int((admission.delay_s + store.settings.lease_s) * 1000)
        claim.hand_over(next_attempt=retries, ttl_ms=ttl_ms, resend=self.resend(waiting, retries=retries))
        logger.info(
            "deferred run %s waiting on %s of %s, %.1f s (%s)",
            run_id,
            admission.kind,
            options.id,
            admission.delay_s,
            admission.reason,
        )
        explained(run_id)
        self.requeue(delay_s=admission.delay_s, reason=admission.reason, kwargs=waiting.to_kwargs())

    def _sleep_run(
        self, message: DeferMessage, claim: HeldClaim | None, delay_s: float, reason: str
    ) -> NoReturn:
        # Kept for this very attempt number, as a flow-control wait is (see _hold_back).
        if claim is not None:
            retries = self.request.retries or 0
            ttl_ms = int((delay_s + settings_for(self.app).lease_s) * 1000)
            claim.hand_over(next_attempt=retries, ttl_ms=ttl_ms, resend=self.resend(message, retries=retries))
        self.requeue(delay_s=delay_s, reason=reason, kwargs=message.to_kwargs())


def execute_message(task: DeferredFunction[Any], *args: Any, **kwargs: Any) -> Any:
    """The body of every deferred function's task (bound: ``task`` is the task)."""
    return task.execute(*args, **kwargs)
