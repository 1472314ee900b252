"""Key expressions of flow-control config: a callable of the event, or a dotted path.

A dotted path such as ``"event.data.user_id"`` is walked attribute by
attribute (or item by item in dicts); nothing is evaluated as code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from celery_defer.errors import KeyExpressionError

_PATH_RE = re.compile(r"^event(\.[A-Za-z][A-Za-z0-9_]*)+$")

KeyFunction = Callable[[Any], str]


def compile_key(expr: object, *, config_key: str) -> KeyFunction:
    """Return a function ``event -> str`` for a key expression.

    Raises:
        ValueError: ``expr`` is neither a callable nor a path like ``event.data.x``.
    """
    if callable(expr):
        return lambda event: _as_text(expr(event), config_key)
    if isinstance(expr, str) and _PATH_RE.fullmatch(expr):
        parts = expr.split(".")[1:]
        return lambda event: _as_text(_walk(event, parts, expr), config_key)
    raise ValueError(
        f"a key must be a callable of the event or a path like 'event.data.user_id', got {expr!r}"
    )


def _walk(value: Any, parts: list[str], expr: str) -> Any:
    for part in parts:
        if isinstance(value, Mapping):
            if part not in value:
                raise KeyExpressionError(f"key {expr!r}: no {part!r} in the event")
            value = value[part]
        else:
            if not hasattr(value, part):
                raise KeyExpressionError(f"key {expr!r}: no {part!r} in the event")
            value = getattr(value, part)
    return value


def _as_text(value: Any, config_key: str) -> str:
    if value is None:
        raise KeyExpressionError(f"{config_key}: the key evaluated to None")
    return value if isinstance(value, str) else str(value)
