"""The library's counters, grouped for ``celery defer stats``: drops and duplicates per function."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CounterReport:
    """Counters by meaning.

    Attributes:
        dropped: function id -> guard kind -> runs dropped by that guard.
        duplicates: function id -> copies of finished runs acknowledged without running.
        other: any other counter, by its raw name.
    """

    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)


def group_counters(counters: dict[str, int]) -> CounterReport:
    """Sort raw counters (``dropped:<fn>:<kind>``, ``duplicate:<fn>``) by meaning.

    Function ids may hold ``:``; guard kinds never do, so the kind is the last part.
    """
    report = CounterReport()
    for name, count in sorted(counters.items()):
        head, _, rest = name.partition(":")
        if head == "dropped" and ":" in rest:
            function_id, _, kind = rest.rpartition(":")
            report.dropped.setdefault(function_id, {})[kind] = count
        elif head == "duplicate" and rest:
            report.duplicates[rest] = count
        else:
            report.other[name] = count
    return report
