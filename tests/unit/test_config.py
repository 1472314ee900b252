"""SPEC sections 2-3: create_defer validates the whole config when it runs."""

from __future__ import annotations

import datetime as dt

import pytest
from celery import Celery
from pydantic import BaseModel

from celery_defer import ConfigurationError, DeferredFunction, DeferTask, create_defer
from celery_defer.config.durations import parse_duration_s


@pytest.fixture
def app() -> Celery:
    return Celery("cfg", task_cls=DeferTask, set_as_current=False)


def handler(ctx: object) -> None:
    return None


@pytest.mark.parametrize("key", ["triggers", "on_failure", "onFailure", "batch_events", "batchEvents"])
def test_unsupported_keys_are_refused_by_name(app, key):
    with pytest.raises(ConfigurationError, match=key) as info:
        create_defer(app, {"id": "f", key: 1}, handler)  # type: ignore[misc]
    assert info.value.key == key
    assert "not supported" in str(info.value)


def test_unknown_key_is_refused_with_a_hint_for_camel_case(app):
    with pytest.raises(ConfigurationError, match=r"rateLimit.*did you mean 'rate_limit'"):
        create_defer(app, {"id": "f", "rateLimit": {}}, handler)  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConfigurationError, match="'colour': unknown key"):
        create_defer(app, {"id": "f", "colour": "red"}, handler)  # type: ignore[typeddict-unknown-key]


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({}, "id"),
        ({"id": ""}, "id"),
        ({"id": "has space"}, "id"),
        ({"id": "f", "name": ""}, "name"),
        ({"id": "f", "retries": 21}, "retries"),
        ({"id": "f", "retries": -1}, "retries"),
        ({"id": "f", "retries": True}, "retries"),
        ({"id": "f", "priority": {"run": 10}}, "priority"),
        ({"id": "f", "priority": 3}, "priority"),
        ({"id": "f", "timeouts": {"start": "soon"}}, "timeouts.start"),
        ({"id": "f", "timeouts": {"finish": 0}}, "timeouts.finish"),
        ({"id": "f", "timeouts": {"later": 1}}, "timeouts"),
        ({"id": "f", "queue": ""}, "queue"),
        ({"id": "f", "schema": 42}, "schema"),
    ],
)
def test_bad_values_name_their_key(app, config, key):
    with pytest.raises(ConfigurationError) as info:
        create_defer(app, config, handler)
    assert info.value.key == key
    assert repr(key) in str(info.value) or key in str(info.value)


def test_a_non_dict_config_is_refused(app):
    with pytest.raises(ConfigurationError, match="config must be a dict"):
        create_defer(app, ["id"], handler)  # type: ignore[arg-type]


def test_a_valid_config_registers_a_real_task(app):
    class Email(BaseModel):
        to: str

    fn = create_defer(
        app,
        {
            "id": "send-email",
            "name": "Send email",
            "schema": Email,
            "retries": 0,
            "priority": {"run": 9},
            "timeouts": {"start": "1m", "finish": dt.timedelta(seconds=30)},
            "queue": "mail",
        },
        handler,
    )
    assert isinstance(fn, DeferredFunction)
    assert fn.name == "celery_defer.fn.send-email"
    assert app.tasks["celery_defer.fn.send-email"] is fn
    assert fn.max_retries == 0
    assert fn.soft_time_limit == 30


def test_decorator_form_and_async_handler(app):
    @create_defer(app, {"id": "score"})
    async def score(ctx: object) -> None: ...

    assert isinstance(score, DeferredFunction)
    assert score.name == "celery_defer.fn.score"


def test_an_id_used_by_another_function_is_refused(app):
    create_defer(app, {"id": "dup"}, handler)

    def other(ctx: object) -> None: ...

    with pytest.raises(ConfigurationError, match="already used"):
        create_defer(app, {"id": "dup"}, other)


def test_a_non_callable_handler_is_refused(app):
    with pytest.raises(ConfigurationError, match="must be callable"):
        create_defer(app, {"id": "f"}, 42)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (0.5, 0.5),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        (dt.timedelta(minutes=2), 120.0),
    ],
)
def test_durations(value, seconds):
    assert parse_duration_s(value) == seconds


@pytest.mark.parametrize("value", ["5 weeks", "-1s", -3, True, None, float("nan"), "1.2.3s"])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration_s(value)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"concurrency": 0}, "concurrency.limit"),
        ({"concurrency": [1, 2, 3]}, "concurrency"),
        ({"concurrency": {"limit": 2, "scope": "world"}}, "concurrency.scope"),
        ({"concurrency": {"limit": 2, "key": "data.user"}}, "concurrency.key"),
        ({"concurrency": {"limit": 2, "key": "event.data.__import__('os')"}}, "concurrency.key"),
        ({"concurrency": {"limit": 2, "colour": 1}}, "concurrency"),
        ({"throttle": {"limit": 5}}, "throttle"),
        ({"throttle": {"limit": 5, "period": "0s"}}, "throttle.period"),
        ({"throttle": {"limit": 5, "period": "1s", "burst": 0}}, "throttle.burst"),
        ({"rate_limit": {"limit": -1, "period": "1s"}}, "rate_limit.limit"),
        ({"debounce": {"period": "5s", "timeout": "1s"}}, "debounce.timeout"),
        ({"debounce": {}}, "debounce"),
        ({"idempotency": 42}, "idempotency.key"),
        ({"singleton": {"mode": "queue"}}, "singleton.mode"),
        ({"singleton": {}}, "singleton"),
    ],
)
def test_bad_flow_control_values_name_their_key(app, config, key):
    with pytest.raises(ConfigurationError) as info:
        create_defer(app, {"id": "f", **config}, handler)
    assert info.value.key == key


def test_every_flow_control_key_is_accepted(app):
    fn = create_defer(
        app,
        {
            "id": "all-keys",
            "concurrency": [{"limit": 5, "key": "event.data.user"}, {"limit": 50, "scope": "app"}],
            "throttle": {"limit": 10, "period": "1m", "burst": 2, "key": lambda event: event.data["user"]},
            "rate_limit": {"limit": 100, "period": "1h"},
            "debounce": {"period": "5s", "key": "event.data.user", "timeout": "1m"},
            "idempotency": "event.data.order_id",
            "singleton": {"key": "event.data.user", "mode": "cancel"},
        },
        handler,
    )
    slots = [spec.slot for spec in fn.__celery_defer_options__.flow]
    assert slots == [
        "debounce",
        "idempotency",
        "rate_limit",
        "singleton",
        "concurrency.0",
        "concurrency.1",
        "throttle",
    ]
