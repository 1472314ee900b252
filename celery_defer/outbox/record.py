"""One recorded ``defer()`` call: the form in which the parent side hands it to the outbox.

A :class:`DeferRecord` is made at the call site (``celery_defer.parent.call_site``),
stored in the outbox as :meth:`DeferRecord.encode` text, and turned into a
message by ``celery_defer.deferred.message.build_message`` when its run finalizes.
Its deferred run's id, :func:`deferred_run_id`, depends only on the parent run id
and the defer id: every copy of the message carries the same one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from celery_defer.outbox.routing import Route

#: Namespace of deterministic deferred run ids (uuid5 of parent run id and defer id).
_RUN_ID_NAMESPACE = uuid.UUID("5d1f7f0e-4d0b-4a43-9a77-2f5c4f0d6c1e")
_NAMESPACE_BYTES = _RUN_ID_NAMESPACE.bytes
#: A JSON string literal, as ``json.dumps`` writes one.
_quote = json.encoder.encode_basestring_ascii


def _nullable(text: str | None) -> str:
    return "null" if text is None else _quote(text)


def deferred_run_id(parent_run_id: str, defer_id: str) -> str:
    """Return the Celery task id of the deferred run caused by one ``defer()`` call.

    The id depends only on the parent run and the defer id, so every copy of the
    message, however it was sent, carries the same id.
    """
    # uuid.uuid5, without its UUID object: a parent with many defers computes one per record.
    name = f"{parent_run_id}\x00{defer_id}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class ParentRef(NamedTuple):
    """The parent run a record belongs to."""

    run_id: str
    root_id: str
    task_name: str


class DeferRecord(NamedTuple):
    """A ``defer()`` call after its checks: what to run, with which data.

    ``data_json`` is the payload already encoded as a JSON object, which is what
    makes the call a snapshot: the caller's object is never read again. ``queue``,
    ``exchange`` and ``routing_key`` are where the deferring app routes it
    (``celery_defer.outbox.routing``); records kept before they existed have only
    the function's ``queue`` option, and go where their sender routes them.
    """

    defer_id: str
    task_name: str
    function_id: str
    data_json: str
    ts_ns: int
    parent: ParentRef
    queue: str | None = None
    priority: int | None = None
    exchange: str | None = None
    routing_key: str | None = None

    @property
    def ts_ms(self) -> int:
        """When ``defer()`` was called, in ms since the epoch."""
        return self.ts_ns // 1_000_000

    @property
    def route(self) -> Route:
        """Where its message goes (see ``celery_defer.outbox.routing``)."""
        return Route(self.queue, self.exchange, self.routing_key)

    @property
    def run_id(self) -> str:
        return deferred_run_id(self.parent.run_id, self.defer_id)

    def encode(self) -> str:
        """Return the record for the outbox: a JSON head, a newline, the JSON payload.

        JSON text never holds a raw newline, so the newline splits the two
        parts, and the payload is spliced in as it is rather than re-encoded.
        """
        # The head is compact JSON, written field by field (strings quoted by
        # json's own C function): a run's records are encoded in one go.
        priority = "null" if self.priority is None else int(self.priority)
        head = (
            f'{{"id":{_quote(self.defer_id)},"task":{_quote(self.task_name)},"fn":{_quote(self.function_id)},'
            f'"ts":{int(self.ts_ns)},"run":{_quote(self.parent.run_id)},"root":{_quote(self.parent.root_id)},'
            f'"ptask":{_quote(self.parent.task_name)},"q":{_nullable(self.queue)},"p":{priority}'
        )
        if self.exchange is not None:
            head += f',"x":{_quote(self.exchange)}'
        if self.routing_key is not None:
            head += f',"rk":{_quote(self.routing_key)}'
        head += "}"
        return f"{head}\n{self.data_json}"

    @classmethod
    def decode(cls, raw: str) -> DeferRecord:
        head, _, data_json = raw.partition("\n")
        doc: dict[str, Any] = json.loads(head)
        return cls(
            defer_id=doc["id"],
            task_name=doc["task"],
            function_id=doc["fn"],
            data_json=data_json,
            ts_ns=int(doc["ts"]),
            parent=ParentRef(doc["run"], doc["root"], doc["ptask"]),
            queue=doc.get("q"),
            priority=doc.get("p"),
            exchange=doc.get("x"),
            routing_key=doc.get("rk"),
        )


def decode_outbox(values: Sequence[str]) -> list[DeferRecord]:
    """Decode the outbox values (``"seq|record"``) in the order they were recorded."""
    ordered: list[tuple[int, str]] = []
    for value in values:
        seq, _, raw = value.partition("|")
        ordered.append((int(seq), raw))
    ordered.sort(key=lambda pair: pair[0])
    return [DeferRecord.decode(raw) for _, raw in ordered]
