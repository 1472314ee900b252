"""SPEC section 4 and 5: the rules of a defer() call, each one as the caller sees it."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from celery_defer import create_defer, defer
from celery_defer.parent.call_site import MAX_ID_LENGTH
from celery_defer.parent.snapshot import MAX_DATA_DEPTH


class Email(BaseModel):
    to: str
    body: str


def run_parent(app: Any, body: Any) -> Any:
    """Run ``body`` as the body of a parent task, eagerly; return the parent's result."""

    def parent_body(self: Any) -> Any:
        return body() or "done"

    task = app.task(name=f"parent.{id(body)}", bind=True, lazy=False, shared=False)(parent_body)
    return task.apply().get()


def skipped(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "celery_defer" and r.levelno == level]


def test_outside_a_parent_run_it_logs_and_returns_none(make_fn, recorder, caplog):
    fn = make_fn()
    assert defer("x", function=fn, data={}) is None
    assert "called outside a parent run" in skipped(caplog)[0]
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("defer_id", "reason"),
    [
        ("", "the id is empty"),
        (42, "must be a str"),
        ("a\nb", "control characters"),
        ("tab\there", "control characters"),
    ],
)
def test_bad_ids_are_skipped(app, make_fn, recorder, caplog, defer_id, reason):
    fn = make_fn()
    assert run_parent(app, lambda: defer(defer_id, function=fn, data={})) == "done"
    assert reason in skipped(caplog)[0]
    assert recorder.calls == []


def test_a_function_not_made_by_create_defer_is_skipped(app, caplog):
    def plain_task() -> None: ...

    plain = app.task(name="plain", lazy=False, shared=False)(plain_task)
    assert run_parent(app, lambda: defer("x", function=plain, data={})) == "done"
    assert "not made by celery_defer.create_defer" in skipped(caplog)[0]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([1, 2], "must be a JSON object"),
        ("text", "must be a JSON object"),
        ({"when": object()}, "not JSON-serialisable"),
        ({"x": float("nan")}, "not JSON-serialisable"),
    ],
)
def test_data_that_is_not_a_json_object_is_skipped(app, make_fn, recorder, caplog, data, reason):
    fn = make_fn()
    run_parent(app, lambda: defer("x", function=fn, data=data))
    assert reason in skipped(caplog)[0]
    assert recorder.calls == []


def test_data_failing_the_schema_is_skipped_and_the_parent_goes_on(app, make_fn, recorder, caplog):
    fn = make_fn(schema=Email)

    def body() -> str:
        defer("bad", function=fn, data={"to": 1})
        defer("good", function=fn, data={"to": "a@b.c", "body": "hi"})
        return "parent finished"

    assert run_parent(app, body) == "parent finished"
    assert "data failed the schema of 'rec'" in skipped(caplog)[0]
    assert recorder.ids == ["good"]
    assert recorder.calls[0].event.data == Email(to="a@b.c", body="hi")


def test_an_async_schema_is_skipped_at_the_call_site(app, make_fn, recorder, caplog):
    async def validate(data: dict[str, Any]) -> dict[str, Any]:
        return data

    fn = make_fn(schema=validate)
    run_parent(app, lambda: defer("x", function=fn, data={}))
    assert "cannot validate synchronously" in skipped(caplog)[0]
    assert recorder.calls == []


def test_data_over_the_size_limit_is_skipped(app, make_fn, recorder, caplog):
    app.conf.defer_max_payload_bytes = 100
    fn = make_fn()

    def body() -> None:
        defer("big", function=fn, data={"x": "y" * 200})
        defer("small", function=fn, data={"x": "y"})

    run_parent(app, body)
    assert "over the limit of 100" in skipped(caplog)[0]
    assert recorder.ids == ["small"]


def test_more_defers_than_the_limit_are_skipped(app, make_fn, recorder, caplog):
    app.conf.defer_max_per_run = 3
    fn = make_fn()
    run_parent(app, lambda: [defer(f"d{i}", function=fn, data={}) for i in range(5)] and None)
    assert recorder.ids == ["d0", "d1", "d2"]
    assert len(skipped(caplog)) == 2
    assert "defer_max_per_run" in skipped(caplog)[0]


def test_a_repeated_id_keeps_the_first_data_with_a_warning(app, make_fn, recorder, caplog):
    fn = make_fn()

    def body() -> None:
        defer("same", function=fn, data={"n": 1})
        defer("same", function=fn, data={"n": 2})

    run_parent(app, body)
    assert [ctx.event.data for ctx in recorder.calls] == [{"n": 1}]
    assert "already used in this run" in skipped(caplog, logging.WARNING)[0]


def test_data_is_a_snapshot_taken_at_the_call(app, make_fn, recorder):
    fn = make_fn()

    def body() -> None:
        data = {"items": [1]}
        defer("snap", function=fn, data=data)
        data["items"].append(2)
        data["late"] = True

    run_parent(app, body)
    assert recorder.calls[0].event.data == {"items": [1]}


def test_captured_data_is_the_snapshot_the_worker_receives(app, make_fn, captured_defers):
    fn = make_fn(schema=Email)
    data = {"to": "a@b.c", "body": "hi", "extra": "dropped by the model"}
    run_parent(app, lambda: defer("snap", function=fn, data=data))
    data["to"] = "changed"
    assert [(c.id, c.data) for c in captured_defers] == [("snap", {"to": "a@b.c", "body": "hi"})]


@pytest.mark.parametrize(
    "call",
    [
        lambda fn: defer("pos", fn, {"n": 1}),  # type: ignore[call-arg]
        lambda fn: defer("pos", fn, data={"n": 1}),
    ],
    ids=["function and data by position", "function by position"],
)
def test_function_and_data_may_be_given_by_position(app, make_fn, captured_defers, call):
    fn = make_fn()
    run_parent(app, lambda: call(fn))
    assert [(c.id, c.data) for c in captured_defers] == [("pos", {"n": 1})]


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        ((), {}, "no id given"),
        ((1, 2, 3), {"x": 4}, "unexpected keyword arguments ['x']"),
        (("a", None, {}, 4), {}, "at most 3 arguments"),
        (("a",), {"id": "b"}, "id given both by position and by keyword"),
        ((1, 2, 3), {}, "the id must be a str"),
    ],
)
def test_defer_never_raises_whatever_the_arguments(app, caplog, captured_defers, args, kwargs, reason):
    assert run_parent(app, lambda: defer(*args, **kwargs)) == "done"
    assert reason in skipped(caplog)[0]
    assert captured_defers == []


def test_pydantic_models_typed_dicts_dataclasses_and_callables_are_schemas(app, recorder):
    class Point(TypedDict):
        x: int

    @dataclasses.dataclass
    class Box:
        w: int

    def upper(data: dict[str, Any]) -> dict[str, Any]:
        return {"s": str(data["s"]).upper()}

    by_model = create_defer(app, {"id": "m", "schema": Email}, recorder)
    by_typed_dict = create_defer(app, {"id": "t", "schema": Point}, recorder)
    by_dataclass = create_defer(app, {"id": "d", "schema": Box}, recorder)
    by_callable = create_defer(app, {"id": "c", "schema": upper}, recorder)

    def body() -> None:
        defer("m", function=by_model, data=Email(to="x", body="y"))
        defer("t", function=by_typed_dict, data={"x": "3"})
        defer("d", function=by_dataclass, data={"w": 2})
        defer("c", function=by_callable, data={"s": "abc"})

    run_parent(app, body)
    data = {ctx.parents[0].defer_id: ctx.event.data for ctx in recorder.calls}
    assert data == {"m": Email(to="x", body="y"), "t": {"x": 3}, "d": Box(w=2), "c": {"s": "ABC"}}


def test_without_a_schema_data_is_a_plain_dict_and_models_are_dumped(app, make_fn, recorder):
    fn = make_fn()
    run_parent(app, lambda: defer("m", function=fn, data=Email(to="x", body="y")))
    assert recorder.calls[0].event.data == {"to": "x", "body": "y"}
    assert type(recorder.calls[0].event.data) is dict


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        data = {"n": data}
    return data


@pytest.mark.parametrize(
    ("defer_id", "reason"),
    [
        ("x" * (MAX_ID_LENGTH + 1), f"over {MAX_ID_LENGTH} (MAX_ID_LENGTH)"),
        ("bad-\udc80", "cannot be encoded as UTF-8"),
        ("\ud83d", "cannot be encoded as UTF-8"),
    ],
)
def test_ids_too_long_or_not_utf8_are_skipped_and_siblings_run(
    app, make_fn, recorder, caplog, defer_id, reason
):
    fn = make_fn()

    def body() -> None:
        defer("before", function=fn, data={"n": 1})
        defer(defer_id, function=fn, data={"n": 2})
        defer("after", function=fn, data={"n": 3})

    run_parent(app, body)
    assert len(skipped(caplog)) == 1
    assert reason in skipped(caplog)[0]
    assert recorder.ids == ["before", "after"]


def test_ids_at_the_limits_are_accepted(app, make_fn, recorder, caplog):
    fn = make_fn()
    long_id, non_ascii = "x" * MAX_ID_LENGTH, "café-😀"
    run_parent(app, lambda: [defer(i, function=fn, data={}) for i in (long_id, non_ascii)] and None)
    assert skipped(caplog) == []
    assert recorder.ids == [long_id, non_ascii]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (nested(MAX_DATA_DEPTH + 1), f"nested deeper than {MAX_DATA_DEPTH} levels"),
        ({"list": [[[[{"deep": nested(MAX_DATA_DEPTH)}]]]]}, "nested deeper than"),
        (nested(5000), "nested deeper than"),
        ({1: "a"}, "key that is not a str (1)"),
        ({"outer": [{"inner": {2.5: "b"}}]}, "key that is not a str (2.5)"),
        ({None: 1}, "key that is not a str (None)"),
        ({True: 1}, "key that is not a str (True)"),
        ({("t",): 1}, "not JSON-serialisable"),
        ({"s": "a\udc80b"}, "surrogate"),
        ({"list": ["ok", "\ud83d"]}, "surrogate"),
        ({"\udc80": 1}, "surrogate"),
        ({"pair": "\ud83d\ude00", "emoji": "😀"}, "surrogate"),
    ],
)
def test_data_that_would_poison_a_worker_or_change_on_the_way_is_skipped(
    app, make_fn, recorder, caplog, data, reason
):
    fn = make_fn()

    def body() -> None:
        defer("bad", function=fn, data=data)
        defer("sibling", function=fn, data={"n": 1})

    run_parent(app, body)
    assert len(skipped(caplog)) == 1
    assert reason in skipped(caplog)[0]
    assert recorder.ids == ["sibling"]


def test_data_within_the_limits_arrives_exactly_as_passed(app, make_fn, recorder, caplog):
    fn = make_fn()
    cases = [
        nested(MAX_DATA_DEPTH),
        {"emoji": "😀", "escaped": "\\udc80", "keys": {"1": "str key"}},
        {"n": 2**200, "f": -0.0, "empty": {}, "list": []},
    ]
    run_parent(app, lambda: [defer(f"d{i}", function=fn, data=d) for i, d in enumerate(cases)] and None)
    assert skipped(caplog) == []
    assert [ctx.event.data for ctx in recorder.calls] == cases


def test_validated_data_nested_too_deep_is_skipped(app, make_fn, recorder, caplog):
    fn = make_fn(schema=lambda data: data)
    run_parent(app, lambda: defer("deep", function=fn, data=nested(MAX_DATA_DEPTH + 1)))
    assert f"nested deeper than {MAX_DATA_DEPTH} levels" in skipped(caplog)[0]
    assert recorder.calls == []
