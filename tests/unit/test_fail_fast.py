"""Mistakes that fail at once with a message saying what to do (the unit-level part of issue 10.3)."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import pytest
from celery import Celery
from pydantic import BaseModel

from celery_defer import ConfigurationError, DeferredFunction, DeferTask, create_defer
from celery_defer.deferred.handler_call import invoke_handler
from celery_defer.errors import DirectStartError, MalformedMessageError
from celery_defer.outbox.record import deferred_run_id
from celery_defer.settings import settings_for


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "celery_defer.settings" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("defer_max_per_rnu", "did you mean defer_max_per_run?"),
        ("DEFER_LEASEE", "did you mean DEFER_LEASE?"),
        ("CELERY_DEFER_REDIS_UR", "did you mean CELERY_DEFER_REDIS_URL?"),
        ("defer_something_else", "known settings: defer_redis_url, defer_key_prefix"),
    ],
)
def test_an_unknown_setting_is_warned_about_with_the_closest_name(caplog, key, hint):
    app = Celery("typo", set_as_current=False)
    app.conf[key] = 5
    settings_for(app)
    (warning,) = warnings_of(caplog)
    assert warning.startswith(f"unknown celery_defer setting {key} is ignored; {hint}")


def test_known_settings_in_every_spelling_are_not_warned_about(caplog):
    app = Celery("fine", set_as_current=False)
    app.conf.update(defer_lease=5, DEFER_MAX_PER_RUN=3, CELERY_DEFER_KEY_PREFIX="p")
    settings = settings_for(app)
    assert (settings.lease_s, settings.max_per_run, settings.key_prefix) == (5.0, 3, "p")
    assert warnings_of(caplog) == []


def test_a_configuration_error_in_a_run_is_not_retried(app):
    attempts: list[int] = []

    def misconfigured(ctx: Any) -> None:
        attempts.append(ctx.attempt)
        raise ConfigurationError("set something")

    fn = create_defer(app, {"id": "misconfigured", "retries": 3}, misconfigured)
    assert fn.start({}, id="once").state == "FAILURE"
    assert attempts == [0]


@pytest.mark.parametrize(
    "start",
    [
        lambda fn: fn.delay({"to": "a"}),
        lambda fn: fn.delay(to="a"),
        lambda fn: fn.apply_async(args=[1, 2]),
        lambda fn: fn.apply_async(kwargs={"event": {}, "parent": {}}),
    ],
    ids=["delay(data)", "delay(**data)", "apply_async(args)", "apply_async(bad kwargs)"],
)
def test_starting_a_deferred_function_like_a_task_fails_at_the_call(app, make_fn, recorder, start):
    fn = make_fn("send-email")
    with pytest.raises(
        DirectStartError, match=r"'send-email' is a deferred function: start it with defer\("
    ) as info:
        start(fn)
    assert "or <it>.start(data, id=...) from plain code" in str(info.value)
    assert recorder.calls == []


def test_calling_a_deferred_function_like_a_function_fails_without_retries(app, make_fn, recorder):
    fn = make_fn("send-email")
    with pytest.raises(MalformedMessageError, match="start it with defer"):
        fn({"to": "a"})
    assert recorder.calls == []


def test_start_runs_the_function_from_plain_code_with_a_deterministic_id(app, make_fn, recorder):
    fn = make_fn("send-email")
    first = fn.start({"to": "a"}, id="backfill-1")
    again = fn.start({"to": "a"}, id="backfill-1")
    assert first.id == again.id == deferred_run_id("start:send-email", "backfill-1")
    assert make_fn("other").start({}, id="backfill-1").id != first.id
    ctx = recorder.calls[0]
    assert (ctx.run_id, ctx.event.data, ctx.parents, ctx.attempt) == (first.id, {"to": "a"}, [], 0)


class Email(BaseModel):
    to: str


def test_start_checks_like_defer_but_raises(app):
    fn = create_defer(app, {"id": "typed", "schema": Email}, lambda ctx: None)
    with pytest.raises(ValueError, match="failed the schema of 'typed'"):
        fn.start({"to": 1}, id="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dict or a pydantic model"):
        fn.start([1], id="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="id must be a non-empty str"):
        fn.start(Email(to="a"), id="")


def test_an_async_handler_traceback_has_no_event_loop_noise():
    async def handler(ctx: Any) -> None:
        await asyncio.sleep(0)
        raise ValueError("handler failed")

    with pytest.raises(ValueError, match="handler failed") as info:
        invoke_handler(handler, None)
    text = "".join(traceback.format_exception(info.value))
    assert info.value.__context__ is None
    assert "no running event loop" not in text
    assert "During handling of the above exception" not in text


def test_a_per_task_base_and_generic_functions_register_as_ever():
    app = Celery("registry", set_as_current=False)
    fn = create_defer(app, {"id": "g"}, lambda ctx: None)
    assert app.tasks["celery_defer.fn.g"] is fn
    assert isinstance(fn, DeferTask)
    assert type(fn).__mro__[1] is DeferredFunction
    assert DeferredFunction[Email].__origin__ is DeferredFunction  # subscriptable at run time too

    @app.task(base=DeferredFunction, bind=True, name="by-hand", lazy=False, shared=False)
    def by_hand(self: Any) -> str:
        return "registered"

    assert app.tasks["by-hand"] is by_hand
