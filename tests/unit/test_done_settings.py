"""``defer_done_ttl`` (SPEC section 9) and the done markers' fixed-width entries."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_defer import ConfigurationError
from celery_defer.deferred.done_markers import OUTCOME_CODES, outcome_code, outcome_of
from celery_defer.keys import DONE_MARKER_HEX, SHARDS, KeySpace, done_marker
from celery_defer.settings import read_settings


def app_with(**conf: object) -> Celery:
    app = Celery("t", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.update(conf)
    return app


def test_done_ttl_defaults_to_seven_days_and_takes_seconds():
    assert read_settings(app_with()).done_ttl_s == 7 * 24 * 3600
    assert read_settings(app_with(defer_done_ttl=3600)).done_ttl_s == 3600.0
    assert read_settings(app_with(CELERY_DEFER_DONE_TTL=1.5)).done_ttl_s == 1.5


@pytest.mark.parametrize("value", [0, -1, "7d", True, [1], float("inf"), float("nan")])
def test_a_bad_done_ttl_is_refused_naming_the_setting(value):
    with pytest.raises(ConfigurationError, match="defer_done_ttl must be a positive number") as caught:
        read_settings(app_with(defer_done_ttl=value))
    assert caught.value.key == "defer_done_ttl"


def test_done_ttl_is_a_known_setting(caplog):
    read_settings(app_with(defer_done_ttl=60, defer_store_wait=10))
    assert "unknown celery_defer setting" not in caplog.text


def test_a_marker_is_80_bits_of_hex_and_its_bucket_sits_in_the_run_shard_tag():
    marker = done_marker("run-1")
    assert len(marker) == DONE_MARKER_HEX and int(marker, 16) >= 0
    bucket = KeySpace("app").done_bucket("run-1", 7)
    tag, rest = bucket[1:].split("}", 1)
    prefix, shard = tag.split(":")
    assert prefix == "app" and 0 <= int(shard) < SHARDS
    assert rest.startswith(":done:") and rest.endswith(":7")
    assert "run-1" not in bucket  # a bucket holds many runs


def test_outcomes_round_trip_through_one_letter_that_is_no_hex_digit():
    for outcome, code in OUTCOME_CODES.items():
        assert len(code) == 1 and code not in "0123456789abcdef"
        assert outcome_of(outcome_code(outcome)) == outcome
    assert outcome_code("") == ""  # a run that goes on marks nothing
    assert outcome_of(outcome_code("something new")) == "finished"
