"""The JSON envelope kombu's Redis transport pushes for a message, made from a template.

kombu builds each envelope as a dict (``Channel.prepare_message``, then the body
encoding and delivery tag of ``basic_publish``) and encodes it as JSON: for a
run of a hundred defers, that encoding was the largest cost left. Messages of
one function differ only in a few fields, so the envelope of the first one is
made the way kombu makes it, with markers in those fields, encoded once, and
cut at the markers; every message is then the template's pieces joined with
its own JSON-encoded values. The result is the text kombu's encoder produces
for the same dict (``tests/unit/test_redis_envelope.py`` compares them).
"""

from __future__ import annotations

import json
from typing import Any

from kombu.entity import maybe_delivery_mode
from kombu.utils.json import dumps

from celery_defer.outbox.task_message import TaskMessage

#: A JSON string literal, as ``json.dumps`` writes one (ASCII only), without its per-call set-up.
_quote = json.encoder.encode_basestring_ascii

#: The fields that differ from one message of a function to the next.
_FIELDS = ("body", "id", "root_id", "parent_id", "kwargsrepr", "correlation_id", "delivery_tag")
_MARKERS = {field: f"\x00celery-defer:{field}\x00" for field in _FIELDS}


def envelope(channel: Any, message: TaskMessage) -> dict[str, Any]:
    """The envelope of ``message`` as kombu builds it: ``Producer.publish``, then ``basic_publish``."""
    properties = dict(message.properties)
    properties["delivery_mode"] = maybe_delivery_mode(message.delivery_mode)
    built: dict[str, Any] = channel.prepare_message(
        message.body,
        message.priority,
        message.content_type,
        message.content_encoding,
        dict(message.headers),
        properties,
    )
    channel._inplace_augment_message(built, message.exchange, message.routing_key)
    return built


class EnvelopeTemplate:
    """The envelope text of one function's messages, cut where they differ.

    Args:
        channel: the kombu Redis channel the messages go out on.
        first: a message of the function; its constant fields make the template.
    """

    def __init__(self, channel: Any, first: TaskMessage) -> None:
        self._channel = channel
        proto = envelope(channel, first)
        proto["body"] = _MARKERS["body"]
        proto["properties"]["delivery_tag"] = _MARKERS["delivery_tag"]
        proto["properties"]["correlation_id"] = _MARKERS["correlation_id"]
        for field in ("id", "root_id", "parent_id", "kwargsrepr"):
            proto["headers"][field] = _MARKERS[field]
        self.priority = channel._get_message_priority(proto, reverse=False)
        text: str = dumps(proto)
        encoded = {json.dumps(marker): field for field, marker in _MARKERS.items()}
        found = sorted((text.index(token), token) for token in encoded)
        self._pieces: list[str] = []
        self._order: list[int] = []  # which value goes after each piece, as an index into _FIELDS
        start = 0
        for at, token in found:
            self._pieces.append(text[start:at])
            self._order.append(_FIELDS.index(encoded[token]))
            start = at + len(token)
        self._pieces.append(text[start:])  # the tail: one piece more than there are values

    def render(self, message: TaskMessage, delivery_tag: str | None = None) -> str:
        """The envelope text of ``message``, as ``kombu.utils.json.dumps`` would encode it.

        ``delivery_tag`` must be unique to this copy of the message; by default
        the channel makes one (a random UUID, a system call each).
        """
        channel = self._channel
        body, _ = channel.encode_body(message.body, channel.body_encoding)
        run_id = message.run_id
        tag = channel._next_delivery_tag() if delivery_tag is None else delivery_tag
        # In _FIELDS order: body, id, root_id, parent_id, kwargsrepr, correlation_id, delivery_tag.
        values = (body, run_id, message.root_id, message.parent_id, message.kwargsrepr, run_id, tag)
        pieces = self._pieces
        parts = [pieces[0]]
        for at, field in enumerate(self._order, 1):
            parts.append(_quote(values[field]))
            parts.append(pieces[at])
        return "".join(parts)
