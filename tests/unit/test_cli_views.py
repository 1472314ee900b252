"""The pure parts of ``celery defer``: counters grouped by meaning, tables and durations for people."""

from __future__ import annotations

from celery_defer.cli.counters import CounterReport, group_counters
from celery_defer.cli.tables import pairs, seconds, table


def test_counters_are_grouped_by_function_and_guard_even_when_ids_hold_colons():
    report = group_counters(
        {
            "dropped:billing:invoice:rate_limit": 3,
            "dropped:billing:invoice:idempotency": 1,
            "dropped:mail:singleton": 2,
            "duplicate:billing:invoice": 4,
            "something-else": 5,
        }
    )
    assert report == CounterReport(
        dropped={"billing:invoice": {"idempotency": 1, "rate_limit": 3}, "mail": {"singleton": 2}},
        duplicates={"billing:invoice": 4},
        other={"something-else": 5},
    )


def test_a_table_aligns_columns_and_shows_missing_values_as_a_dash():
    assert table(["ID", "QUEUE", "CONFIG"], [["a", None, "x=1"], ["longer", "q", ""]]).splitlines() == [
        "ID      QUEUE  CONFIG",
        "a       -      x=1",
        "longer  q",
    ]


def test_config_reads_on_one_line():
    config = {
        "retries": 3,
        "concurrency": [{"limit": 5, "keyed": True}],
        "throttle": {"limit": 10, "keyed": False},
    }
    assert pairs(config) == "retries=3 concurrency(limit=5 keyed) throttle(limit=10)"


def test_durations_read_as_people_write_them():
    assert [seconds(v) for v in (1.25, 62, 7500, -3)] == ["1.2s", "1m02s", "2h05m", "-3.0s"]
