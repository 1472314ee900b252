"""The summary table the demo prints at the end."""

from __future__ import annotations

from example_project.check import ChargeStats, FunctionRow, Summary, ThrottleStats, percentile

_COLUMNS = (
    ("function", 12), ("expected", 8), ("completed", 9), ("missing", 7), ("extra", 5),
    ("dup", 3), ("retries", 7), ("skips", 7), ("p50 ms", 7), ("p95 ms", 7), ("max conc", 8),
)  # fmt: skip
#: Columns whose header reads "seen/expected".
_RATIO_NOTE = "retries and skips read seen/expected; skips are call-site skips (bad data)"
_CONCURRENCY_NOTE = "max conc reads most runs seen executing at once/concurrency limit, - for none"


def _ms(value: int | None) -> str:
    return "-" if value is None else str(value)


def _line(cells: list[str]) -> str:
    parts = [
        cell.ljust(width) if index == 0 else cell.rjust(width)
        for index, (cell, (_, width)) in enumerate(zip(cells, _COLUMNS, strict=True))
    ]
    return "  ".join(parts).rstrip()


def _row(row: FunctionRow) -> list[str]:
    return [
        row.function,
        str(row.expected),
        str(row.completed),
        str(row.missing),
        str(row.extra),
        str(row.duplicate),
        f"{row.retries}/{row.retries_expected}",
        f"{row.skips}/{row.skips_expected}",
        _ms(row.percentile_ms(50)),
        _ms(row.percentile_ms(95)),
        f"{row.max_active}/{_ms(row.limits.concurrency)}",
    ]


def _keyed_note(summary: Summary) -> str:
    keyed = [
        f"{row.function}'s limit holds per {row.limits.concurrency_key}"
        for row in summary.rows
        if row.limits.concurrency is not None and row.limits.concurrency_key
    ]
    return f"{_CONCURRENCY_NOTE}; {', '.join(keyed)}" if keyed else _CONCURRENCY_NOTE


def _throttle_line(stats: ThrottleStats) -> str:
    rate = "-" if stats.per_s is None else f"{stats.per_s:.1f}/s"
    assert stats.limits.throttle is not None
    _, period_s, _ = stats.limits.throttle
    return (
        f"throttle of {stats.function} ({stats.limits.describe_throttle()}): {stats.starts} run starts over "
        f"{stats.span_s:.1f}s, {rate} on average, at most {stats.peak} in any {period_s:g}s "
        "(informational)"
    )


def _charges_line(stats: ChargeStats) -> str:
    return (
        f"card charges (step charge-card): {stats.charges} for {stats.orders} orders, "
        f"{stats.charged_once} charged exactly once; {stats.retried} orders ran again after "
        "their charge and skipped the kept step"
    )


def _total(summary: Summary) -> list[str]:
    rows = summary.rows
    latencies = summary.latencies_ms()
    return [
        "total",
        *(str(sum(getattr(row, name) for row in rows)) for name in
          ("expected", "completed", "missing", "extra", "duplicate")),
        f"{sum(r.retries for r in rows)}/{sum(r.retries_expected for r in rows)}",
        f"{sum(r.skips for r in rows)}/{sum(r.skips_expected for r in rows)}",
        _ms(percentile(latencies, 50)),
        _ms(percentile(latencies, 95)),
        "",
    ]  # fmt: skip


def render(summary: Summary, *, wall_s: float, batch_s: float) -> str:
    """Return the summary as text: parents, the per-function table, latency, verdict."""
    expected, states = summary.expected, summary.parent_states
    others = sum(states.values()) - states["SUCCESS"] - states["FAILURE"]
    latencies = summary.latencies_ms()
    lines = [
        f"orders: {expected.orders}   first order sent -> last deferred run done: {batch_s:.1f}s"
        f"   wall time so far: {wall_s:.1f}s",
        f"parents finished: {states['SUCCESS']} (expected {expected.parents_succeeded})   "
        f"failed after deferring: {states['FAILURE']} (expected {expected.parents_failed})   "
        f"not finished: {others}   retried: {summary.parent_retries} "
        f"(expected {expected.parent_retries})",
        "",
        _line([name for name, _ in _COLUMNS]),
        _line(["-" * width for _, width in _COLUMNS]),
        *(_line(_row(row)) for row in summary.rows),
        _line(_total(summary)),
        f"({_RATIO_NOTE})",
        f"({_keyed_note(summary)})",
        "",
        f"latency parent finish -> deferred start: p50 {_ms(percentile(latencies, 50))} ms, "
        f"p95 {_ms(percentile(latencies, 95))} ms over {len(latencies)} runs",
        *(_throttle_line(stats) for stats in summary.throttles),
        *([_charges_line(summary.charges)] if summary.charges is not None else []),
    ]
    if summary.ok:
        lines.append("RESULT: OK - every expected deferred run ran exactly once")
    else:
        lines.append(f"RESULT: FAILED - {len(summary.problems)} problem(s):")
        lines += [f"  - {problem}" for problem in summary.problems[:30]]
        if len(summary.problems) > 30:
            lines.append(f"  ... and {len(summary.problems) - 30} more")
    return "\n".join(lines)
