"""The deferred run's message: built from a record, parsed once, malformed ones refused."""

from __future__ import annotations

import pytest

from celery_defer.deferred.message import build_message, parse_message
from celery_defer.errors import MalformedMessageError, NonRetriableError
from celery_defer.outbox.record import DeferRecord, ParentRef


def message() -> dict:
    record = DeferRecord(
        "send",
        "celery_defer.fn.f",
        "f",
        '{"to":"a"}',
        1_700_000_000_123_456_789,
        ParentRef("p", "r", "shop.t"),
    )
    return build_message(record, enqueued_ms=5)


def test_a_built_message_parses_and_carries_on_unchanged():
    kwargs = message()
    parsed = parse_message(kwargs)
    assert parsed.data == {"to": "a"}
    assert (parsed.parent_run_id, parsed.parent_task_name, parsed.defer_id) == ("p", "shop.t", "send")
    assert parsed.to_kwargs() == kwargs
    waited = parsed.replace(started_ms=9, passed=("rate_limit",))
    assert parse_message(waited.to_kwargs()) == waited


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m.pop("event"), "'event'"),
        (lambda m: m.update(event="x"), "'event'"),
        (lambda m: m.pop("parent"), "'parent'"),
        (lambda m: m["event"].update(data=[1, 2]), "'event.data'"),
        (lambda m: m["event"].update(data="text"), "'event.data'"),
        (lambda m: m["event"].pop("id"), "'event.id'"),
        (lambda m: m["event"].update(ts=True), "'event.ts'"),
        (lambda m: m["parent"].update(run_id=3), "'parent.run_id'"),
        (lambda m: m.update(passed="rate_limit"), "'passed'"),
        (lambda m: m.update(started_ms="now"), "'started_ms'"),
        (lambda m: m.update(extra=1), "['extra']"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_field(change, named):
    kwargs = message()
    change(kwargs)
    with pytest.raises(
        MalformedMessageError, match=f".*{named}".replace("[", r"\[").replace("]", r"\]")
    ) as caught:
        parse_message(kwargs)
    assert isinstance(caught.value, NonRetriableError)  # fails the run without a retry


def test_positional_arguments_are_refused():
    with pytest.raises(MalformedMessageError, match="2 positional arguments"):
        parse_message(message(), (1, 2))
