"""Comparing what ran with what the plan says must run: the demo's verdict."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from example_project.plan import DATA_TYPES, FUNCTIONS, Expectations, FlowLimits
from example_project.results import Observed

#: celery_defer's ERROR line for a call-site skip: ``defer('<id>') skipped in run <run id>: ...``.
_SKIP_LINE = re.compile(r"defer\('(?P<defer_id>[^']+)'\) skipped in run (?P<run_id>[0-9a-f-]{36})")


@dataclass(slots=True)
class FunctionRow:
    function: str
    expected: int
    completed: int = 0
    missing: int = 0
    extra: int = 0
    duplicate: int = 0
    retries_expected: int = 0
    retries: int = 0
    skips_expected: int = 0
    skips: int = 0
    latencies_ms: list[int] = field(default_factory=list)
    limits: FlowLimits = field(default_factory=FlowLimits)
    #: The most handlers seen executing at once (per key value when the limit has a key).
    max_active: int = 0

    def percentile_ms(self, pct: float) -> int | None:
        return percentile(self.latencies_ms, pct)


@dataclass(frozen=True, slots=True)
class ThrottleStats:
    """How fast a throttled function's runs started (first attempts: retries are not throttled)."""

    function: str
    limits: FlowLimits
    starts: int
    span_s: float
    #: The most starts within any one period of the throttle.
    peak: int

    @property
    def per_s(self) -> float | None:
        return (self.starts - 1) / self.span_s if self.starts > 1 and self.span_s > 0 else None


@dataclass(frozen=True, slots=True)
class ChargeStats:
    """How often the ``charge-card`` step's body ran, against one charge per order."""

    orders: int
    charges: int
    charged_once: int
    #: Orders whose parent task ran again after the charge (a retry).
    retried: int


@dataclass(slots=True)
class Summary:
    expected: Expectations
    parent_states: Counter[str]
    parent_retries: int
    rows: list[FunctionRow]
    problems: list[str]
    throttles: list[ThrottleStats] = field(default_factory=list)
    charges: ChargeStats | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def latencies_ms(self) -> list[int]:
        return [value for row in self.rows for value in row.latencies_ms]


def percentile(values: list[int], pct: float) -> int | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def peak_in_window(times_ms: list[int], window_ms: float) -> int:
    """The most of ``times_ms`` that fall within any ``window_ms`` (half-open) window."""
    ordered = sorted(times_ms)
    peak, first = 0, 0
    for last, time_ms in enumerate(ordered):
        while time_ms - ordered[first] >= window_ms:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


def count_skips(log_text: str, orders_by_parent: dict[str, int]) -> Counter[str]:
    """Count celery_defer's call-site skip lines per defer id, for this batch's parents."""
    skips: Counter[str] = Counter()
    for match in _SKIP_LINE.finditer(log_text):
        if match["run_id"] in orders_by_parent:
            skips[match["defer_id"]] += 1
    return skips


@dataclass(slots=True)
class _Batch:
    """What one batch's tasks recorded, keyed by order id."""

    starts: Counter[tuple[int, str, int]] = field(default_factory=Counter)
    first_start_ms: dict[tuple[int, str], int] = field(default_factory=dict)
    completions: Counter[tuple[int, str]] = field(default_factory=Counter)
    finish_ms: dict[int, int] = field(default_factory=dict)
    parent_retries: int = 0
    retried_orders: set[int] = field(default_factory=set)
    #: Attempts whose handler saw ``event.data`` of the wrong type.
    wrong_types: list[str] = field(default_factory=list)

    def repeated_attempts(self, pair: tuple[int, str]) -> list[int]:
        return [n for (o, f, n), c in self.starts.items() if (o, f) == pair and c > 1]

    def pairs(self) -> set[tuple[int, str]]:
        return set(self.completions) | {(order, fn) for order, fn, _ in self.starts}


def _batch(observed: Observed, orders_by_parent: dict[str, int], rows: dict[str, FunctionRow]) -> _Batch:
    batch = _Batch()
    for attempt in observed.attempts:
        order_id = orders_by_parent.get(attempt.parent_id)
        if order_id is None or attempt.function not in rows:
            continue  # left over from another batch
        batch.starts[(order_id, attempt.function, attempt.attempt)] += 1
        seen_type = attempt.saw.get("type")
        if seen_type != DATA_TYPES[attempt.function]:
            batch.wrong_types.append(f"order {order_id}: {attempt.function} saw {seen_type}")
        if attempt.attempt > 0:
            rows[attempt.function].retries += 1
        else:
            batch.first_start_ms.setdefault((order_id, attempt.function), attempt.start_ms)
    for (parent_id, fn), count in observed.completed.items():
        if parent_id in orders_by_parent and fn in rows:
            batch.completions[(orders_by_parent[parent_id], fn)] += count
    for parent_id, end in observed.parents.items():
        if parent_id in orders_by_parent:
            batch.finish_ms[end.order_id] = end.finish_ms
            batch.parent_retries += end.attempt
            if end.attempt:
                batch.retried_orders.add(end.order_id)
    return batch


def _check_runs(
    expected: Expectations, batch: _Batch, rows: dict[str, FunctionRow], problems: list[str]
) -> None:
    """Exactly once: each expected (order, function) completed once, nothing else ran."""
    for pair in sorted(expected.pairs | batch.pairs()):
        order_id, fn = pair
        row, count = rows[fn], batch.completions[pair]
        if pair not in expected.pairs:
            row.extra += 1
            problems.append(f"order {order_id}: {fn} ran but must not have")
            continue
        row.completed += min(count, 1)
        if count == 0:
            row.missing += 1
            problems.append(f"order {order_id}: {fn} did not complete")
        repeated = batch.repeated_attempts(pair)
        if count > 1 or repeated:
            row.duplicate += 1
            problems.append(f"order {order_id}: {fn} completed {count}x; repeated: {repeated}")
        if pair in batch.first_start_ms and order_id in batch.finish_ms:
            row.latencies_ms.append(batch.first_start_ms[pair] - batch.finish_ms[order_id])


def _check_charges(
    expected: Expectations, observed: Observed, batch: _Batch, problems: list[str]
) -> ChargeStats:
    """The charge step ran once per order, retried or not."""
    counts = [observed.charges.get(order_id, 0) for order_id in range(1, expected.orders + 1)]
    for order_id, count in enumerate(counts, start=1):
        if count != 1:
            problems.append(f"order {order_id}: card charged {count}x, expected once")
    return ChargeStats(expected.orders, sum(counts), counts.count(1), len(batch.retried_orders))


def _check_concurrency(rows: dict[str, FunctionRow], problems: list[str]) -> None:
    """No limit was exceeded, and every function that ran was observed running."""
    for row in rows.values():
        limit = row.limits.concurrency
        if row.completed and row.max_active < 1:
            problems.append(f"{row.function}: no handler was seen executing (max-active not recorded)")
        if limit is not None and row.max_active > limit:
            per = f" per {row.limits.concurrency_key}" if row.limits.concurrency_key else ""
            problems.append(
                f"{row.function}: {row.max_active} runs executed at once{per}, concurrency limit {limit}"
            )


def _throttle_stats(batch: _Batch, rows: dict[str, FunctionRow]) -> list[ThrottleStats]:
    stats = []
    for fn, row in rows.items():
        if row.limits.throttle is None:
            continue
        _, period_s, _ = row.limits.throttle
        starts = [start for (_, f), start in batch.first_start_ms.items() if f == fn]
        span_s = (max(starts) - min(starts)) / 1000 if starts else 0.0
        stats.append(
            ThrottleStats(fn, row.limits, len(starts), span_s, peak_in_window(starts, period_s * 1000))
        )
    return stats


def check(
    expected: Expectations,
    observed: Observed,
    orders_by_parent: dict[str, int],
    parent_states: dict[str, str],
    skips: Counter[str],
    *,
    limits: Mapping[str, FlowLimits],
) -> Summary:
    """Build the summary of a batch and list everything that differs from the plan.

    ``limits`` are the functions' flow-control limits: exceeding a concurrency
    limit is a problem; throttle figures are only reported.
    """
    problems: list[str] = []
    rows = {
        fn: FunctionRow(
            fn,
            expected.runs[fn],
            retries_expected=expected.retries[fn],
            skips_expected=expected.skips[fn],
            skips=skips[fn],
            limits=limits.get(fn, FlowLimits()),
            max_active=observed.max_active.get(fn, 0),
        )
        for fn in FUNCTIONS
    }
    batch = _batch(observed, orders_by_parent, rows)
    _check_runs(expected, batch, rows, problems)
    _check_concurrency(rows, problems)
    charges = _check_charges(expected, observed, batch, problems)
    problems += batch.wrong_types
    for row in rows.values():
        if row.retries != row.retries_expected:
            problems.append(f"{row.function}: {row.retries} retries, expected {row.retries_expected}")
        if row.skips != row.skips_expected:
            problems.append(f"{row.function}: {row.skips} skips, expected {row.skips_expected}")
    states = Counter(parent_states.values())
    seen = (states["SUCCESS"], states["FAILURE"])
    if seen != (expected.parents_succeeded, expected.parents_failed):
        problems.append(
            f"parents: {seen[0]} succeeded / {seen[1]} failed, expected "
            f"{expected.parents_succeeded} / {expected.parents_failed} (states: {dict(states)})"
        )
    if batch.parent_retries != expected.parent_retries:
        problems.append(f"parents retried {batch.parent_retries}x, expected {expected.parent_retries}")
    return Summary(
        expected,
        states,
        batch.parent_retries,
        list(rows.values()),
        problems,
        _throttle_stats(batch, rows),
        charges,
    )
