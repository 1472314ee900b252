"""Testing code that defers: capture defers instead of sending them, build handler contexts.

Three tools, for a project's own unit tests:

- :func:`capture_defers`: while it is active, every ``defer()`` that passes the
  call-site rules is captured as a :class:`CapturedDefer` instead of being sent;
  no Redis, no broker. Inside a run (``task_always_eager``, ``.apply()``) a
  run's defers are captured when it finalizes, as they would be sent; in plain
  code (a task called as a function, a helper) at the call.
- the pytest fixture ``captured_defers`` (``celery_defer.pytest_plugin``,
  installed with the package), the same list for the duration of a test.
- :func:`make_context`: a ``DeferContext`` to call ``function.handler(ctx)``
  directly, its data validated as a receiving worker would.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Celery, current_app
from pydantic import BaseModel

from celery_defer.config.schemas import PayloadSchema, encode_plain
from celery_defer.deferred.context import DeferContext, DeferEvent, Parent, run_logger
from celery_defer.deferred.function import DeferredFunction
from celery_defer.deferred.handler_call import validate_payload
from celery_defer.deferred.message import event_name
from celery_defer.deferred.payload import T
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.parent.call_site import defer_call
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.parent.sink import active_sink, sinking

__all__ = ["CapturedDefer", "capture_defers", "make_context"]


@dataclass(frozen=True, slots=True)
class CapturedDefer:
    """One ``defer()`` call that passed the call-site rules and was captured.

    Attributes:
        id: the defer id.
        function: the deferred function (``None`` if its task is not registered).
        function_id: the function's config id.
        data: the JSON snapshot of ``data`` (a ``dict``), as the worker would receive it.
        parent_run_id: the run that deferred it; ``None`` for plain code outside a run.
    """

    id: str
    function: DeferredFunction[Any] | None
    function_id: str
    data: dict[str, Any]
    parent_run_id: str | None


class _Capturing:
    """A sink (``celery_defer.parent.sink``) that appends to a list."""

    def __init__(self, captured: list[CapturedDefer]) -> None:
        self.captured = captured
        self._plain: RunCapture | None = None

    def take(self, record: DeferRecord, function: Any, *, in_run: bool) -> None:
        self.captured.append(
            CapturedDefer(
                id=record.defer_id,
                function=function if isinstance(function, DeferredFunction) else None,
                function_id=record.function_id,
                data=json.loads(record.data_json),
                parent_run_id=record.parent.run_id if in_run else None,
            )
        )

    def plain_code_capture(self, function: Any) -> RunCapture:
        # One capture for all plain code in the block, as if it were one run:
        # a repeated id is skipped with a warning, defer_max_per_run counts them all.
        if self._plain is None:
            app = getattr(function, "app", None)
            self._plain = RunCapture(
                parent=ParentRef("", "", ""), app=app if isinstance(app, Celery) else current_app, eager=True
            )
        return self._plain

    def is_plain_code(self, capture: RunCapture) -> bool:
        return capture is self._plain


@contextmanager
def capture_defers() -> Iterator[list[CapturedDefer]]:
    """Capture every ``defer()`` instead of sending it, for the duration of the block.

    Yields:
        The list the captured defers are appended to, in the order they would
        have been sent. Skipped calls are logged as always, and not captured.
    """
    captured: list[CapturedDefer] = []
    with sinking(_Capturing(captured)):
        yield captured


class _ContextDefer:
    """``ctx.defer`` of a :func:`make_context` context: the run's defers, captured at the call.

    They are appended to ``ctx.defer.captured`` and to the active
    :func:`capture_defers` list, if any; the call-site rules apply as in a run.
    """

    def __init__(self, run_id: str, task_name: str, app: Celery) -> None:
        self.captured: list[CapturedDefer] = []
        self._capture = RunCapture(parent=ParentRef(run_id, run_id, task_name), app=app, eager=True)
        self._taken = 0

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        token = current_capture.set(self._capture)
        try:
            defer_call(*args, **kwargs)
        finally:
            current_capture.reset(token)
        sinks = [_Capturing(self.captured), active_sink()]
        for record in self._capture.records[self._taken :]:
            function = self._capture.app.tasks.get(record.task_name)
            for sink in sinks:
                if sink is not None:
                    sink.take(record, function, in_run=True)
        self._taken = len(self._capture.records)


def make_context(
    function: DeferredFunction[T],
    data: T | Mapping[str, Any] | None,
    *,
    attempt: int = 0,
    run_id: str | None = None,
) -> DeferContext[T]:
    """Build the ``DeferContext`` a worker would pass to ``function``'s handler.

    ``data`` goes the way of a real run: validated by the schema and
    snapshotted as JSON as ``defer()`` does, then validated again from JSON as
    the receiving worker does, so ``ctx.event.data`` is what the handler gets
    in production (a model instance with a model schema). ``ctx.defer``
    captures (see :class:`_ContextDefer`); ``ctx.logger`` logs as in a worker.

    Args:
        function: a deferred function made by ``create_defer``.
        data: its data, as for ``defer()``.
        attempt: ``ctx.attempt`` (0 for the first try).
        run_id: ``ctx.run_id``; a new UUID when omitted.

    Raises:
        TypeError: ``function`` is not a deferred function, or ``data`` is not a
            JSON object.
        ValueError: the data fails the schema (``SchemaRejected``).
    """
    options = getattr(function, "__celery_defer_options__", None)
    if not isinstance(function, DeferredFunction) or options is None:
        raise TypeError(f"make_context needs a function made by create_defer, got {function!r}")
    payload = validate_payload(options.schema, json.loads(_snapshot(options.schema, data)))
    run_id = run_id or str(uuid.uuid4())
    parent = Parent(str(uuid.uuid4()), "celery_defer.testing.make_context", "make_context")
    # Seam: when DeferContext gains steps (SPEC section 6), give it an in-memory
    # step store here, so a unit test runs a handler's steps without Redis.
    return DeferContext(
        event=DeferEvent(event_name(options.id), payload, run_id, time.time_ns() // 1_000_000),
        run_id=run_id,
        attempt=attempt,
        parents=[parent],
        logger=run_logger(options.id, run_id),
        defer=_ContextDefer(run_id, function.name, function.app),
    )


def _snapshot(schema: PayloadSchema | None, data: object) -> str:
    if data is None:
        data = {}
    if not isinstance(data, (Mapping, BaseModel)):
        raise TypeError(f"data must be a JSON object (a dict or a pydantic model), got {type(data).__name__}")
    if schema is not None:
        return schema.to_json(data)
    if isinstance(data, BaseModel):
        return data.model_dump_json()
    return encode_plain(data)
