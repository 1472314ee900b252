"""The message of a deferred run: what the outbox sends, what the receiver parses once.

A deferred run travels as an ordinary Celery task message (JSON, protocol 2)
whose task id is the run's deterministic id and whose keyword arguments are::

    {
      "event":  {"name": "defer/<fn id>", "id": <run id>, "ts": <ms>, "seq": <ns>,
                 "data": {...}},                  # the JSON snapshot of defer()'s data
      "parent": {"run_id": ..., "task_name": ..., "defer_id": ...},
      "enqueued_ms": <ms>,                       # when it was first sent
      "started_ms": <ms>,                        # set once the handler first started
      "passed": ["rate_limit", ...],             # consuming guards already passed
      "store_away_since_ms": <ms>                # set while the state store is unreachable
    }

The last two are added as the run goes on (a requeue after a flow-control wait,
a retry). :func:`parse_message` checks every field once; anything else is a
:class:`MalformedMessageError`, which fails the run without a retry.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery_defer.errors import MalformedMessageError
from celery_defer.outbox.record import DeferRecord


def event_name(function_id: str) -> str:
    """``event.name`` of a deferred function's events."""
    return f"defer/{function_id}"


@dataclass(frozen=True, slots=True)
class DeferMessage:
    """The parsed keyword arguments of one deferred run's message."""

    event_name: str
    event_id: str
    event_ts: int
    event_seq: int
    data: dict[str, Any]
    parent_run_id: str
    parent_task_name: str
    defer_id: str
    enqueued_ms: int | None = None
    started_ms: int | None = None
    passed: tuple[str, ...] = ()
    store_away_since_ms: int | None = None

    def replace(self, **changes: Any) -> DeferMessage:
        return dataclasses.replace(self, **changes)

    def to_kwargs(self) -> dict[str, Any]:
        """The keyword arguments that carry this message on (a retry, a requeue)."""
        kwargs: dict[str, Any] = {
            "event": {
                "name": self.event_name,
                "id": self.event_id,
                "ts": self.event_ts,
                "seq": self.event_seq,
                "data": self.data,
            },
            "parent": {
                "run_id": self.parent_run_id,
                "task_name": self.parent_task_name,
                "defer_id": self.defer_id,
            },
        }
        if self.enqueued_ms is not None:
            kwargs["enqueued_ms"] = self.enqueued_ms
        if self.started_ms is not None:
            kwargs["started_ms"] = self.started_ms
        if self.passed:
            kwargs["passed"] = list(self.passed)
        if self.store_away_since_ms is not None:
            kwargs["store_away_since_ms"] = self.store_away_since_ms
        return kwargs


def build_message(record: DeferRecord, *, enqueued_ms: int) -> dict[str, Any]:
    """The keyword arguments of the message that starts ``record``'s deferred run."""
    return {
        "event": {
            "name": event_name(record.function_id),
            "id": record.run_id,
            "ts": record.ts_ms,
            # Orders events finer than ts; debounce keeps the latest by it.
            "seq": record.ts_ns,
            "data": json.loads(record.data_json),
        },
        "parent": {
            "run_id": record.parent.run_id,
            "task_name": record.parent.task_name,
            "defer_id": record.defer_id,
        },
        "enqueued_ms": enqueued_ms,
    }


def parse_message(kwargs: Mapping[str, Any], args: Sequence[Any] = ()) -> DeferMessage:
    """Check a deferred run's keyword arguments and return them typed.

    Raises:
        MalformedMessageError: a field is missing or of the wrong type, or the
            message has arguments ``defer()`` never sends (positional ones among them).
    """
    if args:
        raise MalformedMessageError(f"{len(args)} positional arguments; defer() sends keyword arguments only")
    unknown = set(kwargs) - {"event", "parent", "enqueued_ms", "started_ms", "passed", "store_away_since_ms"}
    if unknown:
        raise MalformedMessageError(f"unexpected arguments {sorted(unknown)}")
    event = _mapping(kwargs, "event")
    parent = _mapping(kwargs, "parent")
    passed = kwargs.get("passed") or []
    if not isinstance(passed, list) or not all(isinstance(slot, str) for slot in passed):
        raise MalformedMessageError(f"'passed' must be a list of strings, got {passed!r:.80}")
    return DeferMessage(
        event_name=_field(event, "event.name", str),
        event_id=_field(event, "event.id", str),
        event_ts=_field(event, "event.ts", int),
        event_seq=_field(event, "event.seq", int, default=0),
        data=_field(event, "event.data", dict),
        parent_run_id=_field(parent, "parent.run_id", str),
        parent_task_name=_field(parent, "parent.task_name", str),
        defer_id=_field(parent, "parent.defer_id", str),
        enqueued_ms=_field(kwargs, "enqueued_ms", int, default=None),
        started_ms=_field(kwargs, "started_ms", int, default=None),
        passed=tuple(passed),
        store_away_since_ms=_field(kwargs, "store_away_since_ms", int, default=None),
    )


_MISSING: Any = object()


def _mapping(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    if not isinstance(value, Mapping):
        raise MalformedMessageError(f"{name!r} must be an object, got {type(value).__name__}")
    return value


def _field(doc: Mapping[str, Any], path: str, kind: type, default: Any = _MISSING) -> Any:
    value = doc.get(path.rpartition(".")[2], _MISSING)
    if value is _MISSING or (value is None and default is None):
        if default is _MISSING:
            raise MalformedMessageError(f"{path!r} is missing")
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedMessageError(f"{path!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def resend_message(task_name: str, message: DeferMessage, *, retries: int, options: dict[str, Any]) -> str:
    """JSON of what a recovery pass sends to start an attempt again (its worker died).

    ``options`` are ``send_task`` options: ``queue`` (with ``exchange`` and ``routing_key``
    when a route sets them), ``priority``, ``parent_id``, ``root_id``.
    """
    document = {"task": task_name, "kwargs": message.to_kwargs(), "retries": retries, "options": options}
    return json.dumps(document, separators=(",", ":"))
