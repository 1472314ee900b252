"""Starting a deferred function: by ``defer()`` from a run, or by ``.start()`` from plain code.

A deferred function's message is the one ``defer()`` builds
(``celery_defer.deferred.message``). ``.delay()`` or ``.apply_async(args=...)``
would send something else, which could only fail in a worker later; they are
refused at the call instead, and a worker that receives such a message anyway
(``send_task``) fails the run at once, without retries. Scripts and back-fills
use :meth:`DirectStart.start`: the same message, with a run id derived from
the function and the caller's id, so starting it twice runs it once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from celery import Task
from pydantic import BaseModel

from celery_defer.config.options import FunctionOptions
from celery_defer.config.schemas import encode_plain
from celery_defer.deferred.context import DeferEvent
from celery_defer.deferred.message import DeferMessage, build_message, event_name, parse_message
from celery_defer.deferred.payload import T
from celery_defer.errors import DirectStartError, MalformedMessageError, SchemaRejected
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.settings import settings_for

if TYPE_CHECKING:
    from celery.result import AsyncResult

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def how_to_start(function_id: str) -> str:
    """The sentence every wrong start ends with."""
    return (
        f"{function_id!r} is a deferred function: start it with defer(id, function=<it>, data=...) "
        "inside a task, or <it>.start(data, id=...) from plain code"
    )


def parse_started(function_id: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> DeferMessage:
    """Parse the arguments a deferred run was started with.

    Raises:
        MalformedMessageError: they are not a message ``defer()`` or ``.start()`` sends.
    """
    if args:
        count = f"{len(args)} positional argument{'s' if len(args) > 1 else ''}"
        raise MalformedMessageError(f"it got {count}, and takes none; {how_to_start(function_id)}")
    try:
        return parse_message(kwargs)
    except MalformedMessageError as exc:
        raise MalformedMessageError(f"{exc}; {how_to_start(function_id)}") from exc


class DirectStart(Task, Generic[T]):  # type: ignore[misc]
    """The ways in and the static payload type of :class:`~celery_defer.DeferredFunction`."""

    abstract = True
    __celery_defer_options__: ClassVar[FunctionOptions]

    if TYPE_CHECKING:
        # The keyword arguments defer(id, function=<this>, ...) takes: only type
        # checkers read it (celery_defer.deferred.payload). ``data`` may be omitted.
        def defer_signature(self, *, data: T = ...) -> None: ...

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        """Celery's ``apply_async``, for the messages this library sends (retries, waits).

        Raises:
            DirectStartError: the arguments are not a deferred run's message, as with
                ``send_email.delay(...)``; use ``defer()`` or :meth:`start`.
        """
        try:
            parse_started(self.__celery_defer_options__.id, tuple(args or ()), kwargs or {})
        except MalformedMessageError as exc:
            raise DirectStartError(f"not sent: {exc}") from None
        return super().apply_async(args, kwargs, *rest, **options)

    def start(self, data: T, *, id: str) -> AsyncResult:
        """Start one run of this deferred function from plain code (a script, a back-fill).

        The run is the one ``defer()`` would start, without a parent: same message,
        same validation, retries and flow control. Its run id comes from the
        function's id and ``id``, so starting the same ``id`` again (a re-run
        script) runs it once while the finished-run marker lives (7 days).

        Args:
            data: as for ``defer()``: a ``dict`` or pydantic model valid for the schema.
            id: names this start; reuse it to make a repeat a no-op.

        Returns:
            The Celery ``AsyncResult`` of the run.

        Raises:
            ValueError: the id is empty or has control characters, or the data fails
                the schema or the size limit.
            TypeError: the data is not a JSON object.
        """
        options = self.__celery_defer_options__
        if not isinstance(id, str) or not id or _CONTROL_CHARS.search(id):
            raise ValueError(f"start(): id must be a non-empty str without control characters, got {id!r}")
        data_json = _encode(options, data)
        limit = settings_for(self.app).max_payload_bytes
        if len(data_json.encode("utf-8")) > limit:
            raise ValueError(f"start(): data is over the limit of {limit} bytes (defer_max_payload_bytes)")
        # The parent fields name this start, so the run id is deterministic; the
        # message itself carries no parent run.
        origin = f"start:{options.id}"
        record = DeferRecord(
            id, options.task_name, options.id, data_json, time.time_ns(), ParentRef(origin, origin, "")
        )
        message = build_message(record, enqueued_ms=time.time_ns() // 1_000_000)
        message["parent"] = {"run_id": "", "task_name": "", "defer_id": id}
        sending: dict[str, Any] = {"task_id": record.run_id, "serializer": "json"}
        if options.queue is not None:
            sending["queue"] = options.queue
        priority = _priority(options, record)
        if priority is not None:
            sending["priority"] = priority
        return self.apply_async(kwargs=message, **sending)


def _encode(options: FunctionOptions, data: object) -> str:
    if not isinstance(data, (Mapping, BaseModel)):
        raise TypeError(f"start(): data must be a dict or a pydantic model, got {type(data).__name__}")
    if options.schema is not None:
        try:
            return options.schema.to_json(data)
        except SchemaRejected as exc:
            raise ValueError(f"start(): data failed the schema of {options.id!r}: {exc}") from exc
    if isinstance(data, BaseModel):
        return data.model_dump_json()
    return encode_plain(data)


def _priority(options: FunctionOptions, record: DeferRecord) -> int | None:
    rule = options.priority
    if rule is None or isinstance(rule, int):
        return rule
    payload: Any = json.loads(record.data_json)
    if options.schema is not None:
        payload = options.schema.validate_sync(payload)
    value = rule(DeferEvent(event_name(options.id), payload, record.run_id, record.ts_ms))
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise ValueError(f"start(): priority.run returned {value!r}, not 0..9")
    return value
