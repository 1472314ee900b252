"""Key expressions: dotted paths walk the event, callables are called; nothing is eval'd."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from celery_defer.config.key_paths import compile_key
from celery_defer.deferred.context import DeferEvent
from celery_defer.errors import KeyExpressionError


class User(BaseModel):
    id: int
    team: str


def event(data: object) -> DeferEvent[object]:
    return DeferEvent("defer/f", data, "event-id", 1)


def test_dotted_paths_walk_dicts_and_models():
    assert compile_key("event.data.user", config_key="k")(event({"user": "u1"})) == "u1"
    assert compile_key("event.data.id", config_key="k")(event(User(id=7, team="a"))) == "7"
    assert compile_key("event.id", config_key="k")(event({})) == "event-id"


def test_callables_get_the_event():
    assert compile_key(lambda e: e.data["n"] * 2, config_key="k")(event({"n": 21})) == "42"


def test_a_missing_path_names_the_expression():
    with pytest.raises(KeyExpressionError, match=r"'event\.data\.user': no 'user'"):
        compile_key("event.data.user", config_key="k")(event({}))


@pytest.mark.parametrize(
    "expr", ["data.user", "event.data[0]", "event.__class__()", "event.__class__", "", 5, "event"]
)
def test_anything_else_is_refused(expr):
    with pytest.raises(ValueError):
        compile_key(expr, config_key="k")
