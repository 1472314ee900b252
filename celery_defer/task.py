"""``DeferTask``: the task base class whose runs may call ``defer()``."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task, states
from celery.exceptions import Ignore, Reject, Retry

from celery_defer.capture import RunCapture, current_capture
from celery_defer.lifecycle import (
    begin_attempt,
    close_attempt,
    dispatch,
    end_attempt,
    finalize_unreturned,
    hand_over,
)

logger = logging.getLogger(__name__)

_FINAL_STATES = frozenset({states.SUCCESS, states.FAILURE})


class Requeued(Ignore):  # type: ignore[misc]
    """The attempt put its message back on the queue for later; the run goes on."""


class DeferTask(Task):  # type: ignore[misc]
    """A Celery task whose runs can call :func:`celery_defer.defer`.

    Use it as the app's ``task_cls`` or per task with ``@app.task(base=DeferTask)``.
    Each attempt's defers are recorded in Redis as its body returns or raises; when
    the run finalizes (success, final failure, revoke, time limit) they become
    deferred runs. Subclasses that override ``after_return`` must call ``super()``.
    """

    abstract = True

    @classmethod
    def on_bound(cls, app: Celery) -> None:
        super().on_bound(app)
        from celery_defer.install import install

        install(app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request_stack.top
        if request is None or request.called_directly or not request.id:
            # A plain function call, not a run: defers go to the enclosing run, if any.
            return super().__call__(*args, **kwargs)
        capture = begin_attempt(self.app, request, self.name)
        token = current_capture.set(capture)
        try:
            result = self.run(*args, **kwargs)
        except (Retry, Requeued):
            self._end_attempt(request, capture, final=False)
            raise
        except Reject as exc:
            self._end_attempt(request, capture, final=not exc.requeue, now=not exc.requeue)
            raise
        except Ignore:
            # replace() or a plain Ignore: no hook follows, so the run ends here.
            self._end_attempt(request, capture, final=True, now=True)
            raise
        except Exception:
            # Eager callers may re-raise before after_return: send right away.
            self._end_attempt(request, capture, final=True, now=capture.eager)
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
            self._end_attempt(request, capture, final=True, now=capture.eager)
            return result
        finally:
            close_attempt(capture)
            current_capture.reset(token)

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's ``retry``, after recording this attempt's defers.

        ``Task.retry`` publishes the next attempt before it raises; recording
        first means that attempt always finds these defers in the outbox.
        """
        hand_over(current_capture.get(), self.request)
        return super().retry(*args, **kwargs)

    def _end_attempt(self, request: Any, capture: RunCapture, *, final: bool, now: bool = False) -> None:
        records = end_attempt(capture, final=final)
        if capture.saved:
            self.on_attempt_recorded(request, final=final)
        if now:
            dispatch(self.app, capture.parent.run_id, records, eager=capture.eager)
        else:
            # after_return runs next (for a final attempt) and sends them.
            request.celery_defer_pending = (capture, records)

    def on_attempt_recorded(self, request: Any, *, final: bool) -> None:
        """Called once the attempt's defers are safe in the outbox; a hook for subclasses."""

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
        pending = getattr(self.request, "celery_defer_pending", None)
        if pending is None or pending[0].parent.run_id != task_id:
            if status == states.FAILURE and not _requeued_on_timeout(self):
                # Celery calls this from the worker's main process after a hard
                # time limit killed the attempt: nothing of it was recorded.
                finalize_unreturned(self.app, task_id)
            return
        capture, records = pending
        self.request.celery_defer_pending = None
        if capture.final and status in _FINAL_STATES:
            dispatch(self.app, task_id, records, eager=capture.eager)


def _requeued_on_timeout(task: Task) -> bool:
    """Whether Celery puts a task back on the queue after its hard time limit.

    Celery 5.7 calls ``after_return`` and sends ``task_failure`` for a hard time
    limit even when the message is requeued (``acks_late`` without
    ``acks_on_timeout``): the run goes on then, so it does not finalize.
    """
    return bool(task.acks_late) and not bool(getattr(task, "acks_on_timeout", True))
