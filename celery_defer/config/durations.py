"""Parsing the duration values that config keys accept."""

from __future__ import annotations

import datetime as dt
import re

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")

Duration = int | float | str | dt.timedelta


def parse_duration_s(value: object) -> float:
    """Return ``value`` as seconds.

    Accepts a non-negative int or float (seconds), a ``timedelta``, or a string
    such as ``"500ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"1d"``.

    Raises:
        ValueError: the value is none of these, or negative.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            raise ValueError(f"expected a duration such as '500ms', '10s', '5m', '1h' or '1d', got {value!r}")
        seconds = float(match.group(1)) * _UNITS_S[match.group(2)]
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"a duration must be a finite number >= 0, got {value!r}")
    return seconds
