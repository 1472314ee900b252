"""``Steps``: memoized units of work within one run (SPEC section 6).

A step's ``fn`` runs once per run: its JSON result is kept (``celery_defer.steps.memo``)
and every later attempt of the run (retry, redelivery, re-entry after a wait or a
``step.sleep``) gets the kept result without calling ``fn``. The defers ``fn``
makes are kept with the result in one atomic write, so they count as recorded
even if the attempt never returns. A ``Steps`` lives for one attempt: the
implicit indexes of repeated ids restart with each attempt, as the body does.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

from celery_defer.config.durations import Duration, parse_duration_s
from celery_defer.deferred.handler_call import is_async_callable, run_coroutine
from celery_defer.errors import StepResultError
from celery_defer.parent.attempt import lease_attempt
from celery_defer.parent.capture import RunCapture
from celery_defer.steps.memo import RESULT, WAKE, StepMemo, field_for, memo_for
from celery_defer.store import store_for

logger = logging.getLogger(__name__)

#: Puts the run back on the queue after ``delay_s`` (the reason is for logs); never returns.
Sleeper = Callable[[float, str], NoReturn]

_MISSING: Any = object()


class Steps:
    """The steps of one attempt: ``ctx.step`` in a handler, ``celery_defer.step`` in a parent.

    Without a run (``Steps()``), :meth:`run` just calls ``fn`` and :meth:`sleep`
    just sleeps: there is nothing to remember.

    Attributes:
        sleeper: how :meth:`sleep` puts the run back on the queue.
    """

    def __init__(self, capture: RunCapture | None = None, *, sleeper: Sleeper | None = None) -> None:
        self._capture = capture
        self.sleeper = sleeper
        self._counts: dict[str, int] = {}
        self._memo: StepMemo | None = None
        self._entries: dict[str, str] = {}

    @property
    def run_id(self) -> str | None:
        """The run these steps belong to; ``None`` outside a run."""
        return self._capture.parent.run_id if self._capture is not None else None

    def run(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once per run and return its result as JSON round-trips it.

        ``fn`` may be ``async def``: it runs to completion on an event loop of its own.

        Raises:
            StepResultError: the result is not JSON-serialisable (the run fails, no retry).
            StoreUnavailableError: Redis could not keep the result (the attempt fails).
        """
        key = self._next_key(step_id)
        if self._capture is None:
            return _call(fn, args, kwargs)
        field = field_for(key)
        found = self._found(field)
        if found is not _MISSING:
            return found
        start = len(self._capture.records)
        return self._keep(key, field, _call(fn, args, kwargs), start)

    async def run_async(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """:meth:`run` for ``async def`` code: ``await ctx.step.run_async(id, fn, ...)``.

        ``fn`` may be sync or ``async def``; it is awaited on the caller's loop.
        The Redis calls of a step are short blocking calls on that loop.
        """
        key = self._next_key(step_id)
        if self._capture is None:
            return await _await(fn(*args, **kwargs))
        field = field_for(key)
        found = self._found(field)
        if found is not _MISSING:
            return found
        start = len(self._capture.records)
        return self._keep(key, field, await _await(fn(*args, **kwargs)), start)

    def sleep(self, step_id: str, duration: Duration) -> None:
        """End the attempt and resume the run after ``duration``, holding no worker slot.

        The wake-up time is kept on Redis time at the first call; on re-entry the
        same ``step_id`` returns at once once it has passed. Eager runs sleep in place.
        ``duration`` is seconds, a ``timedelta`` or a string such as ``"5m"``.

        Raises:
            Requeued: the run was put back on the queue (let it propagate).
        """
        key = self._next_key(step_id)
        duration_s = parse_duration_s(duration)
        capture = self._capture
        if capture is None:
            time.sleep(duration_s)
            return
        memo = self._load()
        field = field_for(key)
        stored = self._entries.get(field)
        if stored is not None and not stored.startswith(WAKE):
            return
        left_ms = memo.sleep_left_ms(capture.parent.run_id, field, int(duration_s * 1000))
        if left_ms <= 0:
            return
        if capture.eager or self.sleeper is None:
            time.sleep(left_ms / 1000)
            return
        self.sleeper(left_ms / 1000, f"step.sleep({key!r})")

    def close(self) -> None:
        """The attempt ended: once its run has finalized, its kept steps may go. Never raises."""
        capture = self._capture
        if capture is None or not capture.final or (self._memo is None and not capture.eager):
            return
        try:
            memo_for(capture.app, eager=capture.eager).finish(capture.parent.run_id)
        except Exception:
            logger.warning("run %s: its kept steps were left to expire", capture.parent.run_id, exc_info=True)

    def _next_key(self, step_id: str) -> str:
        if not isinstance(step_id, str) or not step_id:
            raise ValueError(f"a step id must be a non-empty str, got {step_id!r}")
        index = self._counts.get(step_id, 0)
        self._counts[step_id] = index + 1
        return step_id if index == 0 else f"{step_id}:{index}"

    def _load(self) -> StepMemo:
        if self._memo is not None:
            return self._memo
        capture = self._capture
        assert capture is not None
        memo = memo_for(capture.app, eager=capture.eager)
        loaded = memo.load(capture.parent.run_id)
        self._entries = loaded.entries
        # Defers kept by steps of an attempt that was not a retry (re-entry after
        # a sleep): this attempt must finalize them like an earlier attempt's.
        capture.earlier_ids |= loaded.outbox_ids
        if loaded.leased:
            self._hold_lease()
        self._memo = memo
        return memo

    def _found(self, field: str) -> Any:
        self._load()
        stored = self._entries.get(field)
        if stored is None or not stored.startswith(RESULT):
            return _MISSING
        return json.loads(stored[len(RESULT) :])

    def _keep(self, key: str, field: str, result: Any, start: int) -> Any:
        capture = self._capture
        assert capture is not None and self._memo is not None
        run_id = capture.parent.run_id
        try:
            text = RESULT + json.dumps(result, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StepResultError(
                f"step {key!r} of run {run_id} returned a {type(result).__name__}, which is not "
                f"JSON-serialisable ({exc}); the run fails without retries",
                step_id=key,
                run_id=run_id,
            ) from exc
        in_step = [] if capture.eager else capture.records[start:]
        kept = self._memo.keep(run_id, field, text, in_step)
        self._entries[field] = kept.text
        if in_step:
            # Now in the outbox (or, if another attempt kept this step first, with
            # its defers instead): the end of this attempt must not record them again.
            del capture.records[start:]
            if kept.kept:
                capture.earlier_ids |= {record.defer_id for record in in_step}
        if kept.leased:
            self._hold_lease()
        return json.loads(kept.text[len(RESULT) :])

    def _hold_lease(self) -> None:
        # The lease an attempt with earlier defers holds (parent/attempt.py), so the
        # attempt's end releases it: if this worker dies, the lease runs out and
        # recovery finalizes the run with the kept defers.
        capture = self._capture
        assert capture is not None
        if capture.leased:
            return
        lease_attempt(store_for(capture.app).outbox, capture.parent.run_id)
        capture.leased = True


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if is_async_callable(fn):
        return run_coroutine(lambda: fn(*args, **kwargs))
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        return run_coroutine(lambda: result)
    return result


async def _await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
