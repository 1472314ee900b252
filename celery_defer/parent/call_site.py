"""``defer()``: record one deferred run for when the current parent run finalizes."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from celery_defer.config.options import FunctionOptions
from celery_defer.deferred.context import DeferEvent
from celery_defer.deferred.message import event_name
from celery_defer.errors import CallSkipped
from celery_defer.outbox.record import DeferRecord, deferred_run_id
from celery_defer.outbox.routing import resolve_route
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.parent.sink import active_sink
from celery_defer.parent.snapshot import snapshot

if TYPE_CHECKING:
    from celery_defer.deferred.payload import AcceptsData, P

logger = logging.getLogger("celery_defer")

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEYWORDS = frozenset({"function", "data"})

#: The longest defer id accepted, in characters. Ids travel in every message, log
#: line and outbox entry of their run; an id is a name, not a payload.
MAX_ID_LENGTH = 256


def defer_call(*args: Any, **kwargs: Any) -> None:
    """The runtime body of :func:`defer`: any arguments, never raises.

    ``id``, ``function`` and ``data`` are accepted by position too (``defer("id",
    fn, data)``); anything else is logged and the call skipped.
    """
    try:
        defer_id, function, data = _arguments(args, kwargs)
    except CallSkipped as skip:
        logger.error("defer%s skipped: %s", _shown(args, kwargs), skip)
        return
    _defer(defer_id, function, data)


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    names = ("id", "function", "data")
    if len(args) > len(names):
        raise CallSkipped(f"takes at most 3 arguments (id, function, data), got {len(args)} positional")
    given = dict(zip(names, args, strict=False))
    twice = sorted(set(given) & set(kwargs))
    if twice:
        raise CallSkipped(f"{', '.join(twice)} given both by position and by keyword")
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise CallSkipped(f"unexpected keyword arguments {unknown}: use defer(id, function=..., data=...)")
    given.update(kwargs)
    if "id" not in given:
        raise CallSkipped("no id given: use defer(id, function=..., data=...)")
    return given["id"], given.get("function"), given.get("data")


def _shown(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [f"{arg!r:.40}" for arg in args] + [f"{key}=..." for key in kwargs]
    return f"({', '.join(parts)})"


if TYPE_CHECKING:

    def defer(id: str, function: AcceptsData[P], *args: P.args, **kwargs: P.kwargs) -> None:
        """Run ``function`` with ``data`` once the current parent run finalizes."""

else:

    def defer(*args: Any, **kwargs: Any) -> None:
        """Run ``function`` with ``data`` once the current parent run finalizes.

        ``defer(id, *, function, data=None)``. Synchronous and fire-and-forget: it
        returns ``None``, never raises, and the caller goes on at once. A call that
        breaks a rule (SPEC section 4) is logged on the ``celery_defer`` logger and
        skipped. ``function`` and ``data`` may also be given by position.

        Args:
            id: unique within the parent run; a repeated id keeps the first call's data.
            function: a deferred function made by :func:`celery_defer.create_defer`.
            data: a ``dict`` or pydantic model, JSON-serialisable, valid for the
                function's schema. It is copied as JSON now.
        """
        if len(args) == 1 and kwargs.keys() <= _KEYWORDS:  # the documented form, on the fast path
            _defer(args[0], kwargs.get("function"), kwargs.get("data"))
        else:
            defer_call(*args, **kwargs)


def _defer(id: object, function: Any, data: object) -> None:
    capture = current_capture.get()
    sink = active_sink()
    try:
        if capture is None and sink is not None:
            capture = sink.plain_code_capture(function)  # celery_defer.testing captures plain code
        if capture is None:
            raise CallSkipped(
                "called outside a parent run: call it while a task whose base is celery_defer.DeferTask runs"
            )
        record = _build_record(capture, id, function, data)
    except CallSkipped as skip:
        run = ""
        if capture is not None and capture.parent.run_id:
            run = f" in run {capture.parent.run_id} ({capture.parent.task_name})"
        logger.error("defer(%r) skipped%s: %s", id, run, skip)
        return
    except Exception:
        logger.error("defer(%r) skipped: unexpected error", id, exc_info=True)
        return
    if record is not None:
        capture.records.append(record)
        capture.ids.add(record.defer_id)
        if sink is not None and sink.is_plain_code(capture):
            sink.take(record, function, in_run=False)


def _build_record(capture: RunCapture, defer_id: object, function: Any, data: object) -> DeferRecord | None:
    if not isinstance(defer_id, str):
        raise CallSkipped(f"the id must be a str, got {type(defer_id).__name__}")
    if not defer_id:
        raise CallSkipped("the id is empty")
    if _CONTROL_CHARS.search(defer_id):
        raise CallSkipped("the id contains control characters")
    if len(defer_id) > MAX_ID_LENGTH:
        raise CallSkipped(f"the id is {len(defer_id)} characters long, over {MAX_ID_LENGTH} (MAX_ID_LENGTH)")
    if not defer_id.isascii():
        try:
            defer_id.encode("utf-8")
        except UnicodeEncodeError:
            raise CallSkipped("the id cannot be encoded as UTF-8 (it holds a lone surrogate)") from None
    options: FunctionOptions | None = getattr(function, "__celery_defer_options__", None)
    if options is None:
        if function is None:
            raise CallSkipped("no function given: pass function=<a function made by create_defer>")
        raise CallSkipped(f"function {function!r} was not made by celery_defer.create_defer")
    if defer_id in capture.ids:
        logger.warning(
            "defer(%r) skipped in run %s: the id was already used in this run; the first call's data is kept",
            defer_id,
            capture.parent.run_id,
        )
        return None
    if defer_id in capture.earlier_ids:
        logger.debug("defer(%r) already recorded by an earlier attempt; kept", defer_id)
        return None
    settings = capture.settings
    if capture.total >= settings.max_per_run:
        raise CallSkipped(f"the run already made {capture.total} defers, the limit (defer_max_per_run)")
    data_json = snapshot(options, data)
    size = len(data_json) if data_json.isascii() else len(data_json.encode("utf-8"))
    if size > settings.max_payload_bytes:
        raise CallSkipped(
            f"data is {size} bytes of JSON, over the limit of {settings.max_payload_bytes} "
            "(defer_max_payload_bytes)"
        )
    ts_ns = time.time_ns()
    route = resolve_route(capture.app, options.task_name, options.queue)
    return DeferRecord(
        defer_id=defer_id,
        task_name=options.task_name,
        function_id=options.id,
        data_json=data_json,
        ts_ns=ts_ns,
        parent=capture.parent,
        queue=route.queue,
        exchange=route.exchange,
        routing_key=route.routing_key,
        priority=_priority(options, capture, defer_id, data_json, ts_ns // 1_000_000),
    )


def _priority(
    options: FunctionOptions, capture: RunCapture, defer_id: str, data_json: str, ts_ms: int
) -> int | None:
    rule = options.priority
    if rule is None or isinstance(rule, int):
        return rule
    payload: Any = json.loads(data_json)
    if options.schema is not None:
        payload = options.schema.validate_sync(payload)
    event = DeferEvent(
        event_name(options.id), payload, deferred_run_id(capture.parent.run_id, defer_id), ts_ms
    )
    try:
        value = rule(event)
    except Exception:
        logger.error("defer(%r): priority.run raised; sent without priority", defer_id, exc_info=True)
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        logger.error("defer(%r): priority.run returned %r, not 0..9; sent without priority", defer_id, value)
        return None
    return value
