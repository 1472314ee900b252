"""``DeferTask``: the task base class whose runs may call ``defer()``."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, NoReturn

from celery import Celery, Task, states
from celery.exceptions import Ignore, Reject, Retry, TimeLimitExceeded

from celery_defer.errors import Requeued, StepResultError
from celery_defer.outbox.dispatch import dispatch, finalize_in_background
from celery_defer.outbox.record import DeferRecord
from celery_defer.parent.attempt import (
    begin_attempt,
    close_attempt,
    end_attempt,
    hand_over,
    mark_finalized,
    take_finalized,
)
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.parent.send_while_recording import settle_record, write_record
from celery_defer.parent.worker_signals import install
from celery_defer.steps.current import current_steps, open_steps

logger = logging.getLogger(__name__)


def _inside_own_run(run_id: str) -> bool:
    # Celery copies the run's request into the one it pushes for a plain call, so
    # a task calling itself inside its run looks like the run: tell them apart by
    # the attempt already open for that run id.
    active = current_capture.get()
    return active is not None and active.parent.run_id == run_id


class DeferTask(Task):  # type: ignore[misc]
    """A Celery task whose runs can call :func:`celery_defer.defer`.

    Use it as the app's ``task_cls`` or per task with ``@app.task(base=DeferTask)``.
    Each attempt's defers are recorded in Redis as its body returns or raises; when
    the run finalizes (success, final failure, revoke, time limit) they become
    deferred runs, sent right after the record as Celery sends ``link`` callbacks:
    before the parent's result is stored. Subclasses that override
    ``after_return`` must call ``super()``.
    """

    abstract = True

    @classmethod
    def on_bound(cls, app: Celery) -> None:
        super().on_bound(app)
        install(app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request_stack.top
        if request is None or request.called_directly or not request.id or _inside_own_run(request.id):
            # A plain function call, not a run (the task may also call itself inside
            # its own run): Celery's own request handling; defers go to the
            # enclosing run, if any.
            return super().__call__(*args, **kwargs)
        capture = begin_attempt(self.app, request, self.name)
        steps = open_steps(self, capture)
        token = current_capture.set(capture)
        steps_token = current_steps.set(steps)
        try:
            result = self.run(*args, **kwargs)
        except (Retry, Requeued):
            self._end_attempt(request, capture, final=False)
            raise
        except Reject as exc:
            self._end_attempt(request, capture, final=not exc.requeue)
            raise
        except Ignore:
            # replace() or a plain Ignore: the run ends here.
            self._end_attempt(request, capture, final=True)
            raise
        except Exception:
            self._end_attempt(request, capture, final=True)
            raise
        except BaseException:
            # Terminated mid-attempt (revoke with terminate, a signal): the body never
            # returned, so its defers are not kept; earlier attempts' still run.
            if capture.records:
                logger.info(
                    "run %s interrupted; the %d defers of this attempt are dropped",
                    capture.parent.run_id,
                    len(capture.records),
                )
            raise
        else:
            self._end_attempt(request, capture, final=True)
            return result
        finally:
            steps.close()
            close_attempt(capture)
            current_steps.reset(steps_token)
            current_capture.reset(token)

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``retry``, after recording this attempt's defers.

        ``Task.retry`` publishes the next attempt before it raises; recording
        first means that attempt always finds these defers in the outbox.
        """
        exc = kwargs.get("exc")
        if isinstance(exc, StepResultError):
            raise exc  # retrying cannot make the result JSON: fail now (autoretry_for too)
        hand_over(current_capture.get(), self.request, next_attempt_in_s=self._retry_in_s(kwargs))
        return super().retry(*args, **kwargs)

    def _retry_in_s(self, options: dict[str, Any]) -> float:
        """When the next attempt of a ``retry(**options)`` is due, in seconds from now."""
        eta = options.get("eta")
        if isinstance(eta, datetime):
            return (eta if eta.tzinfo else eta.replace(tzinfo=timezone.utc)).timestamp() - time.time()
        countdown = options.get("countdown")
        if countdown is None:
            countdown = self.default_retry_delay
        return float(countdown or 0)

    def requeue(self, *, delay_s: float, reason: str, kwargs: dict[str, Any] | None = None) -> NoReturn:
        """Put this run back on the queue after ``delay_s``, spending no retry.

        The attempt's defers are recorded first (as ``retry()`` does), then the same
        message is sent again with an ETA, and the attempt ends with ``Requeued``:
        a non-final end, so nothing finalizes and the pool slot is free meanwhile.
        Flow-control waits, waits for Redis and ``step.sleep`` all come here.

        Raises:
            Requeued: the worker acknowledges this message; the new one carries the run.
            Reject: the new message could not be sent; the broker keeps this one
                when ``acks_late`` is on.
        """
        request = self.request
        signature = self.signature_from_request(
            request, None, kwargs, countdown=max(delay_s, 0.0), retries=request.retries or 0
        )
        hand_over(current_capture.get(), request, next_attempt_in_s=delay_s)
        try:
            signature.apply_async()
        except Exception as exc:
            if self.acks_late:
                logger.error("run %s could not wait (%s: %s); the broker keeps it", request.id, reason, exc)
                raise Reject(exc, requeue=True) from exc
            # The message is already acknowledged: fail for all to see, never vanish.
            logger.error("run %s failed: it could not be put back on the queue (%s)", request.id, reason)
            raise
        logger.debug("run %s waits %.3fs: %s", request.id, delay_s, reason)
        raise Requeued(reason)

    def step_aside(self, *, reason: str, back_in_s: float) -> NoReturn:
        """End this attempt without sending a message in its place, spending no retry.

        For a run that something else sends on later (a run parked in a
        concurrency line is sent by the run that frees a slot). The attempt's
        defers are recorded first, as in :meth:`requeue`; ``back_in_s`` bounds
        how long until the next attempt is due.

        Raises:
            Requeued: the worker acknowledges this message.
        """
        hand_over(current_capture.get(), self.request, next_attempt_in_s=back_in_s)
        raise Requeued(reason)

    def _end_attempt(self, request: Any, capture: RunCapture, *, final: bool) -> None:
        pending = write_record(capture) if final else None
        if pending is not None:
            # Published while their record is on its way (see send_while_recording.py).
            sent = self._send_finalized(capture.parent.run_id, pending.records, eager=False)
            settle_record(capture, pending, all_sent=sent is True)
            mark_finalized(capture.parent.run_id)
            return
        records = end_attempt(capture, final=final)
        if capture.saved and capture.when_saved is not None:
            capture.when_saved()
        if final:
            # Sent as soon as they are durable, before Celery stores the result:
            # where Celery sends a ``link`` callback (see the module docstring of
            # parent/attempt.py for why this keeps every guarantee).
            self._send_finalized(capture.parent.run_id, records, eager=capture.eager)
            mark_finalized(capture.parent.run_id)

    def _send_finalized(self, run_id: str, records: list[DeferRecord], *, eager: bool) -> bool:
        """Start the deferred runs of a run that finalized in this attempt.

        Returns:
            False when not every one was sent (the rest stay due in the outbox).
        """
        return dispatch(self.app, run_id, records, eager=eager)

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Any,
        kwargs: Any,
        einfo: Any,
    ) -> None:
        super().after_return(status, retval, task_id, args, kwargs, einfo)
        if take_finalized(task_id) or self.request.is_eager:
            # Finalized and sent by __call__ already; an eager run cannot be killed.
            return
        if status == states.FAILURE and not self._requeued_on_timeout():
            # Celery calls this from the worker's main process after a hard time
            # limit killed the attempt: nothing of it was recorded, and what
            # earlier attempts recorded is sent from here.
            finalize_in_background(self.app, task_id)

    def finalize_interrupted(self, run_id: str, exc: BaseException | None) -> None:
        """Finalize a run whose attempt never returned (revoke, kill, hard time limit).

        Called from the worker's main process through Celery's signals; what
        earlier attempts recorded is sent.
        """
        if isinstance(exc, TimeLimitExceeded) and self._requeued_on_timeout():
            return
        finalize_in_background(self.app, run_id)

    def _requeued_on_timeout(self) -> bool:
        """Whether Celery puts this task back on the queue after its hard time limit.

        Celery 5.7 calls ``after_return`` and sends ``task_failure`` for a hard time
        limit even when the message is requeued (``acks_late`` without
        ``acks_on_timeout``): the run goes on then, so it does not finalize.
        """
        return bool(self.acks_late) and not bool(getattr(self, "acks_on_timeout", True))
