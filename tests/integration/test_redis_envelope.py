"""The envelope template renders the text kombu's encoder makes of the envelope dict."""

from __future__ import annotations

import json
import uuid

import pytest
from celery import Celery
from kombu.utils.json import dumps

from celery_defer import DeferTask, create_defer
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.outbox.redis_envelope import EnvelopeTemplate, envelope
from celery_defer.outbox.task_message import build_task_messages

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"to": "a@b.com"},
        {"text": 'quotes " and \\ and \u00e9 and \U0001f600 and \x00', "n": [1, 2.5, None]},
    ],
)
@pytest.mark.parametrize("priority", [None, 0, 5])
def test_template_renders_what_kombu_encodes(redis_url, data, priority):
    app = Celery("envelope", broker=f"{redis_url}/5", task_cls=DeferTask, set_as_current=False)
    create_defer(app, {"id": "fn"}, lambda ctx: None)
    parent = ParentRef(str(uuid.uuid4()), 'root "odd" \u00e9', "t")
    records = [
        DeferRecord(f"d{i}", "celery_defer.fn.fn", "fn", json.dumps(data), i, parent, None, priority)
        for i in range(3)
    ]
    messages = build_task_messages(app, records, enqueued_ms=1)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        channel._next_delivery_tag = lambda: "the-tag"  # the one field that is random
        template = EnvelopeTemplate(channel, messages[0])
        for message in messages:
            assert template.render(message) == dumps(envelope(channel, message))
    app.close()
