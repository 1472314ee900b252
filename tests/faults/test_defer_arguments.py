"""A property of ``defer()``: whatever it is given, it never raises, and each call is
either recorded exactly as its JSON snapshot or skipped with one ERROR, while
valid calls around it are recorded as usual.

The capture is driven directly (as a parent run's attempt would), so the test
needs no server; what ``defer()`` recorded is read from the capture.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from celery_defer import DeferTask, create_defer, defer
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.parent.call_site import MAX_ID_LENGTH
from celery_defer.parent.capture import RunCapture, current_capture
from celery_defer.parent.snapshot import MAX_DATA_DEPTH

app = Celery("property", task_cls=DeferTask, set_as_current=False)
app.conf.defer_max_per_run = 10_000
valid_fn = create_defer(app, {"id": "target"}, lambda ctx: None)


@app.task
def plain_task() -> None: ...


FUNCTIONS = st.sampled_from([valid_fn, valid_fn, valid_fn, None, plain_task, len, 42])
ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
TEXT = st.one_of(
    st.text(max_size=12),
    st.text(ANY_CHAR, max_size=6),
    st.sampled_from(["\udc80", "\ud83d\ude00", "😀", "\\udc80", "a\nb", "", "x" * (MAX_ID_LENGTH + 1)]),
    st.integers(MAX_ID_LENGTH - 1, MAX_ID_LENGTH + 1).map(lambda n: "i" * n),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**400),
    st.floats(),  # NaN and infinities included
    TEXT,
    st.binary(max_size=4),
)
KEYS = st.one_of(TEXT, TEXT, st.integers(), st.floats(), st.booleans(), st.none(), st.tuples(st.integers()))


def nested(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        data = {"n": data}
    return data


VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(KEYS, inner, max_size=3),
        st.tuples(inner, inner),
        st.frozensets(st.integers(), max_size=2),
        st.sets(st.integers(), max_size=2),
    ),
    max_leaves=12,
)
DATA = st.one_of(
    st.dictionaries(TEXT, VALUES, max_size=4),
    st.dictionaries(KEYS, VALUES, max_size=3),
    st.integers(MAX_DATA_DEPTH - 2, MAX_DATA_DEPTH + 2).map(nested),
    st.none(),
    VALUES,
)
JSON = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
VALID_IDS = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
VALID_DATA = st.dictionaries(st.text(max_size=8), JSON, max_size=4)
VALID_CALLS = st.tuples(VALID_IDS, st.just(valid_fn), VALID_DATA)
# Hostile in one part at a time (the data, or the id and function), so that each
# kind of refusal is reached often, and sometimes in all of them.
HOSTILE_DATA_CALLS = st.tuples(VALID_IDS, st.just(valid_fn), DATA)
HOSTILE_TARGET_CALLS = st.tuples(st.one_of(TEXT, st.integers(), st.none()), FUNCTIONS, VALID_DATA)
HOSTILE_CALLS = st.tuples(st.one_of(TEXT, st.integers(), st.none()), FUNCTIONS, DATA)
CALLS = st.lists(
    st.one_of(VALID_CALLS, HOSTILE_DATA_CALLS, HOSTILE_DATA_CALLS, HOSTILE_TARGET_CALLS, HOSTILE_CALLS),
    max_size=6,
)


def normalized(value: Any) -> Any:
    """What JSON makes of valid data: tuples become lists."""
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalized(item) for item in value]
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((depth_of(item) for item in value), default=0)
    return 0


def plain_json(value: Any) -> bool:
    """Whether ``value`` is JSON the handler would get back unchanged (an oracle apart
    from the library's checks)."""
    if value is None or isinstance(value, (bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not re.search("[\ud800-\udfff]", value)
    if isinstance(value, (list, tuple)):
        return all(plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and plain_json(key) and plain_json(item) for key, item in value.items()
        )
    return False


def id_ok(defer_id: object) -> bool:
    return (
        isinstance(defer_id, str)
        and 0 < len(defer_id) <= MAX_ID_LENGTH
        and not re.search("[\x00-\x1f\x7f-\x9f\ud800-\udfff]", defer_id)
    )


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def parent_run() -> Iterator[tuple[RunCapture, Errors]]:
    capture = RunCapture(ParentRef("run", "run", "tests.parent"), app, eager=True)
    errors = Errors()
    logger = logging.getLogger("celery_defer")
    logger.addHandler(errors)
    token = current_capture.set(capture)
    try:
        yield capture, errors
    finally:
        current_capture.reset(token)
        logger.removeHandler(errors)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=CALLS)
def test_defer_never_raises_and_records_exactly_or_skips_with_an_error(calls):
    expected: dict[str, Any] = {}
    refused = 0
    with parent_run() as (capture, errors):
        defer("sibling-before", function=valid_fn, data={"n": 1})
        for defer_id, function, data in calls:
            assert defer(defer_id, function=function, data=data) is None
            payload = {} if data is None else data
            if not id_ok(defer_id) or function is not valid_fn:
                refused += 1
            elif defer_id in expected or defer_id == "sibling-before":
                pass  # a repeated id: skipped with a WARNING, the first data kept
            elif (
                not isinstance(payload, dict) or not plain_json(payload) or depth_of(payload) > MAX_DATA_DEPTH
            ):
                refused += 1
            else:
                expected[defer_id] = payload
        defer("sibling-after", function=valid_fn, data={"n": 2})
    event(f"calls recorded: {min(len(expected), 2)}+, refused: {min(refused, 2)}+")
    recorded: dict[str, DeferRecord] = {record.defer_id: record for record in capture.records}
    assert len(recorded) == len(capture.records)
    want = {"sibling-before": {"n": 1}, **expected}
    want.setdefault("sibling-after", {"n": 2})
    assert set(recorded) == set(want)
    for defer_id, payload in want.items():
        assert json.loads(recorded[defer_id].data_json) == normalized(payload)
        assert recorded[defer_id].data_json == json.dumps(payload, separators=(",", ":"))
    assert len(errors.messages) == refused, errors.messages
    assert all(message.startswith("defer(") and "skipped" in message for message in errors.messages)
