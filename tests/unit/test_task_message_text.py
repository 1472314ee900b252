"""A deferred run's keyword arguments, as sent, decode to the message ``build_message`` makes.

The text is laid out as kombu writes a dict, with the data spliced in as the
call site encoded it (compact): a receiver decodes the same document.
"""

from __future__ import annotations

import json
import uuid

import pytest

from celery_defer.deferred.message import build_message
from celery_defer.outbox.record import DeferRecord, ParentRef, deferred_run_id
from celery_defer.outbox.task_message import _kwargs_text

_AWKWARD = 'a "quoted" \\ back\\slash, é, \u2603, \U0001f600, \n tab\t \x01 </script>'


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"to": "someone@example.com", "n": 3, "x": 1.5, "big": 2**70, "neg": -0.0, "ok": True, "no": None},
        {"nested": {"list": [1, [2, {"deep": [None, False, 1e-7, 1e300]}]], "": ""}, "text": _AWKWARD},
        {_AWKWARD: [_AWKWARD, {"k": _AWKWARD}]},
    ],
)
@pytest.mark.parametrize(
    "ids", [("d1", "run-1", "root-1", "shop.order"), (_AWKWARD, _AWKWARD, "r", _AWKWARD)]
)
def test_kwargs_text_decodes_to_the_message(data, ids):
    defer_id, run_id, root_id, parent_task = ids
    # The record's data as the call site stores it: compact, strict JSON.
    data_json = json.dumps(data, separators=(",", ":"), allow_nan=False)
    record = DeferRecord(
        defer_id,
        "celery_defer.fn.f",
        f"fn {_AWKWARD}",
        data_json,
        1700000000123456789,
        ParentRef(run_id, root_id, parent_task),
        "q",
        None,
    )
    text = _kwargs_text(record, record.run_id, 1700000000999)
    assert json.loads(text) == build_message(record, enqueued_ms=1700000000999)
    assert json.loads(text)["event"]["data"] == data


def test_run_ids_are_uuid5_of_parent_run_and_defer_id():
    namespace = uuid.UUID("5d1f7f0e-4d0b-4a43-9a77-2f5c4f0d6c1e")
    for parent, defer_id in [("run-1", "send"), (_AWKWARD, _AWKWARD), ("", ""), (str(uuid.uuid4()), "d99")]:
        assert deferred_run_id(parent, defer_id) == str(uuid.uuid5(namespace, f"{parent}\x00{defer_id}"))
