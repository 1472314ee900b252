"""Plain-text tables and one-line summaries for the ``celery defer`` commands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return rows under headers, each column as wide as its widest cell (the last one unpadded)."""
    cells = [[str(h) for h in headers], *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [value.ljust(widths[i]) for i, value in enumerate(row[:-1])]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def pairs(values: Mapping[str, Any]) -> str:
    """Return ``k=v`` pairs on one line; nested dicts as ``k(k=v ...)``, lists joined by ``+``."""
    parts = []
    for name, value in values.items():
        if isinstance(value, Mapping):
            parts.append(f"{name}({pairs(value)})")
        elif isinstance(value, list):
            parts.append("+".join(f"{name}({pairs(item)})" for item in value))
        elif value is True:
            parts.append(name)
        elif value is False or value is None:
            continue
        else:
            parts.append(f"{name}={_cell(value)}")
    return " ".join(parts)


def seconds(value: float) -> str:
    """Return a duration for people: ``1.5s``, ``3m02s``, ``2h05m``."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 60:
        return f"{sign}{value:.1f}s"
    if value < 3600:
        return f"{sign}{int(value // 60)}m{int(value % 60):02d}s"
    return f"{sign}{int(value // 3600)}h{int(value % 3600 // 60):02d}m"
