"""The AMQP 0-9-1 frames of a run's messages, made from a template and written at once.

py-amqp encodes every message's properties (the header table of Celery's
protocol) in Python, field by field, and writes each message with a
``sendall`` of its own after looking at the socket for a ``connection.blocked``
notice: per message, more than all the rest of a parent's dispatch. Messages
of one function differ only in their ids, their arguments and their body, so
the properties of the first are encoded by py-amqp itself with markers in
those fields and cut there; every message is then the template's pieces with
its own values (length prefixes set anew), framed as a ``basic.publish``
method frame, a content header frame and body frames, and a whole run's
frames go out in one write, after one look for a blocked notice.

A template is used only where it reproduces py-amqp's bytes for its first
message exactly (checked when it is made); other messages, and channels in
confirm mode (each publish waits for its confirm), take ``Producer.publish``.
"""

from __future__ import annotations

import contextlib
from operator import itemgetter
from struct import pack
from typing import Any

from amqp import Message as AmqpMessage
from amqp.channel import Channel as AmqpChannel
from amqp.serialization import dumps as amqp_dumps
from kombu.entity import maybe_delivery_mode

from celery_defer.outbox.task_message import TaskMessage

_BASIC = 60
_PUBLISH = 40
_FRAME_END = b"\xce"
#: Header fields and the one property that differ from one message of a function to the next.
_TABLE_FIELDS = ("id", "root_id", "parent_id", "kwargsrepr")
#: What goes in the cuts: each table field's length and value, the table's length, the correlation id.
_SLOTS = (
    "table length",
    *(name for field in _TABLE_FIELDS for name in (f"{field} length", field)),
    "correlation_id length",
    "correlation_id",
)
_MARKERS = {field: f"\x00celery-defer:{field}\x00" for field in (*_TABLE_FIELDS, "correlation_id")}


def frames_apply(channel: Any) -> bool:
    """Whether ``channel`` takes prebuilt frames: py-amqp's, open, not in confirm mode."""
    connection = getattr(channel, "connection", None)
    return (
        isinstance(channel, AmqpChannel)
        and connection is not None
        and channel.is_open
        and not getattr(connection, "confirm_publish", False)
    )


def amqp_message(message: TaskMessage) -> Any:
    """``message`` as kombu's ``Producer.publish`` hands it to py-amqp."""
    properties = dict(message.properties)
    properties["delivery_mode"] = maybe_delivery_mode(message.delivery_mode)
    return AmqpMessage(
        message.body.encode(message.content_encoding),
        priority=0 if message.priority is None else message.priority,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        application_headers=dict(message.headers),
        **properties,
    )


class FrameTemplate:
    """The frames of one function's messages on one channel, cut where they differ.

    Raises:
        ValueError: py-amqp's encoding could not be cut here (a template that
            would not reproduce it is never made).
    """

    def __init__(self, channel: Any, first: TaskMessage) -> None:
        self._channel_id: int = channel.channel_id
        self._chunk = int(channel.connection.frame_max) - 8
        marked = amqp_message(first)  # py-amqp's Message (its encoding methods are untyped)
        headers = marked.properties["application_headers"]
        for field in _TABLE_FIELDS:
            headers[field] = _MARKERS[field]
        marked.properties["correlation_id"] = _MARKERS["correlation_id"]
        props: bytes = marked._serialize_properties()
        table: bytes = amqp_dumps("F", (headers,))
        table_at = props.find(table[4:]) - 4
        if table_at < 0 or props[table_at : table_at + 4] != table[:4]:
            raise ValueError("the header table was not found in the encoded properties")
        # Cut points: (where the cut starts, where the template goes on, what goes between).
        cuts: list[tuple[int, int, str]] = [(table_at, table_at + 4, "table length")]
        for field, marker in _MARKERS.items():
            encoded = marker.encode()
            at = props.find(encoded)
            if at < 0 or props.find(encoded, at + 1) >= 0:
                raise ValueError(f"the {field} field was not found once in the encoded properties")
            prefix = 1 if field == "correlation_id" else 4  # a shortstr property; long strings in the table
            cuts.append((at - prefix, at + len(encoded), field))
        cuts.sort()
        # The properties as one bytes format: the template's pieces (a literal
        # '%' doubled) with a '%b' for each value or length prefix cut out.
        fmt: list[bytes] = []
        self._slots: list[str] = []
        start = 0
        for cut_at, resume_at, field in cuts:
            fmt.append(props[start:cut_at].replace(b"%", b"%%"))
            if field == "table length":
                fmt.append(b"%b")
                self._slots.append(field)
            else:
                fmt.append(b"%b%b")
                self._slots += [f"{field} length", field]
            start = resume_at
        fmt.append(props[start:].replace(b"%", b"%%"))
        self._format = b"".join(fmt)
        self._pick = itemgetter(*(_SLOTS.index(slot) for slot in self._slots))
        self._table_fixed = len(table) - 4 - sum(len(_MARKERS[field].encode()) for field in _TABLE_FIELDS)
        method = pack(">HH", _BASIC, _PUBLISH) + amqp_dumps(
            "Bssbb", (0, first.exchange, first.routing_key, 0, 0)
        )
        self._method_frame = self._frame(1, method)
        if self._properties(first) != amqp_message(first)._serialize_properties():
            raise ValueError("the template does not reproduce py-amqp's encoding")

    def _frame(self, kind: int, payload: bytes) -> bytes:
        return b"".join((pack(">BHI", kind, self._channel_id, len(payload)), payload, _FRAME_END))

    def _properties(self, message: TaskMessage) -> bytes:
        run_id = message.run_id.encode()
        if len(run_id) > 255:
            raise ValueError("a correlation id longer than a short string")
        root_id, parent_id = message.root_id.encode(), message.parent_id.encode()
        kwargsrepr = message.kwargsrepr.encode()
        table_length = self._table_fixed + len(run_id) + len(root_id) + len(parent_id) + len(kwargsrepr)
        values = (  # in the order of _SLOTS
            pack(">I", table_length),
            pack(">I", len(run_id)),
            run_id,
            pack(">I", len(root_id)),
            root_id,
            pack(">I", len(parent_id)),
            parent_id,
            pack(">I", len(kwargsrepr)),
            kwargsrepr,
            bytes((len(run_id),)),
            run_id,
        )
        properties: bytes = self._format % self._pick(values)
        return properties

    def render(self, message: TaskMessage) -> bytes:
        """The frames that publish ``message``: method, content header, body."""
        body = message.body.encode(message.content_encoding)
        properties = self._properties(message)
        # The content header frame: its frame head, then class, weight and body size.
        frames = [
            self._method_frame,
            pack(">BHIHHQ", 2, self._channel_id, 12 + len(properties), _BASIC, 0, len(body)),
            properties,
            _FRAME_END,
        ]
        for at in range(0, len(body), self._chunk):
            piece = body[at : at + self._chunk]
            frames += (pack(">BHI", 3, self._channel_id, len(piece)), piece, _FRAME_END)
        return b"".join(frames)


def write_frames(channel: Any, frames: list[bytes]) -> None:
    """Write ``frames`` on ``channel``'s connection in one go, as py-amqp's publish would.

    As py-amqp does before each publish, a ``connection.blocked`` notice the
    broker sent is read first (once for the batch), so its callbacks run.
    """
    connection = channel.connection
    if connection.client_properties.get("capabilities", {}).get("connection.blocked", False):
        with contextlib.suppress(TimeoutError):  # nothing to read: the usual case
            connection.drain_events(timeout=0)
    connection.transport.write(b"".join(frames))
    connection.bytes_sent += 1  # what py-amqp's heartbeat check looks at: something was written
