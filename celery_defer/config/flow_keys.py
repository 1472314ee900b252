"""Validating the flow-control keys of a config into :class:`GuardSpec` values."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery_defer.config.durations import parse_duration_s
from celery_defer.config.key_paths import KeyFunction, compile_key
from celery_defer.errors import ConfigurationError
from celery_defer.keys import KeySpace
from celery_defer.limits import (
    ConcurrencyGuard,
    Debounce,
    Guard,
    Idempotency,
    RateLimit,
    Singleton,
    Throttle,
)

#: The order guards are checked in: consuming checks first, a throttle start last.
FLOW_KEYS = ("debounce", "idempotency", "rate_limit", "singleton", "concurrency", "throttle")


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """One flow-control rule of a deferred function, before it meets a backend.

    Attributes:
        kind: the config key.
        slot: names this rule among the function's rules (``concurrency.1``).
        key: the key expression, or ``None`` for one limit across all runs.
        scope: ``fn`` (per function) or ``app`` (shared by every function with it).
        build: makes the guard on a backend.
    """

    kind: str
    slot: str
    key: KeyFunction | None
    scope: str
    build: Callable[..., Guard] = field(repr=False)

    @property
    def holds(self) -> bool:
        """Whether the guard holds a lease while the run executes."""
        return self.kind in ("concurrency", "singleton")

    def redis_key(self, keys: KeySpace, function_id: str, key_value: str | None = None) -> str:
        """Return the Redis key of this rule for one key value (``None``: the rule has no key)."""
        # Rules with scope "app" share their state with every function using the same kind.
        owner = "@app" if self.scope == "app" else function_id
        kind = self.slot if self.scope == "fn" else self.kind
        return keys.limit(kind, owner, key_value)


def _fail(key: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"config key {key!r}: {message}", key=key)


def _mapping(key: str, value: object, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, f"expected a dict with keys {sorted(allowed)}, got {type(value).__name__}")
    unknown = set(value) - allowed
    if unknown:
        raise _fail(key, f"unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = required - set(value)
    if missing:
        raise _fail(key, f"missing {sorted(missing)}")
    return value


def _positive_int(key: str, value: object, *, maximum: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise _fail(key, f"must be an int from 1 to {maximum}, got {value!r}")
    return value


def _period(key: str, value: object) -> float:
    try:
        seconds = parse_duration_s(value)
    except ValueError as exc:
        raise _fail(key, str(exc)) from exc
    if seconds <= 0:
        raise _fail(key, "must be greater than 0")
    return seconds


def _key(config_key: str, options: Mapping[str, Any]) -> KeyFunction | None:
    if "key" not in options:
        return None
    try:
        return compile_key(options["key"], config_key=config_key)
    except ValueError as exc:
        raise _fail(f"{config_key}.key", str(exc)) from exc


def _concurrency(value: object) -> list[GuardSpec]:
    entries = value if isinstance(value, list) else [value]
    if not 1 <= len(entries) <= 2:
        raise _fail("concurrency", f"a list holds one or two limits, got {len(entries)}")
    specs = []
    for index, entry in enumerate(entries):
        options = {"limit": entry} if isinstance(entry, int) and not isinstance(entry, bool) else entry
        options = _mapping("concurrency", options, {"limit", "key", "scope"}, {"limit"})
        limit = _positive_int("concurrency.limit", options["limit"])
        scope = options.get("scope", "fn")
        if scope not in ("fn", "app"):
            raise _fail("concurrency.scope", f"must be 'fn' or 'app', got {scope!r}")
        specs.append(
            GuardSpec(
                "concurrency",
                f"concurrency.{index}",
                _key("concurrency", options),
                scope,
                functools.partial(ConcurrencyGuard, limit=limit),
            )
        )
    return specs


def _throttle(value: object) -> GuardSpec:
    options = _mapping("throttle", value, {"limit", "period", "burst", "key"}, {"limit", "period"})
    limit = _positive_int("throttle.limit", options["limit"])
    period_s = _period("throttle.period", options["period"])
    burst = _positive_int("throttle.burst", options.get("burst", 1))
    return GuardSpec(
        "throttle",
        "throttle",
        _key("throttle", options),
        "fn",
        functools.partial(Throttle, limit=limit, period_s=period_s, burst=burst),
    )


def _rate_limit(value: object) -> GuardSpec:
    options = _mapping("rate_limit", value, {"limit", "period", "key"}, {"limit", "period"})
    limit = _positive_int("rate_limit.limit", options["limit"])
    period_s = _period("rate_limit.period", options["period"])
    return GuardSpec(
        "rate_limit",
        "rate_limit",
        _key("rate_limit", options),
        "fn",
        functools.partial(RateLimit, limit=limit, period_s=period_s),
    )


def _debounce(value: object) -> GuardSpec:
    options = _mapping("debounce", value, {"period", "key", "timeout"}, {"period"})
    period_s = _period("debounce.period", options["period"])
    timeout_s = _period("debounce.timeout", options["timeout"]) if "timeout" in options else None
    if timeout_s is not None and timeout_s < period_s:
        raise _fail("debounce.timeout", f"must be at least the period ({period_s}s)")
    return GuardSpec(
        "debounce",
        "debounce",
        _key("debounce", options),
        "fn",
        functools.partial(Debounce, period_s=period_s, timeout_s=timeout_s),
    )


def _idempotency(value: object) -> GuardSpec:
    return GuardSpec(
        "idempotency",
        "idempotency",
        _key("idempotency", {"key": value}),
        "fn",
        Idempotency,
    )


def _singleton(value: object) -> GuardSpec:
    options = _mapping("singleton", value, {"key", "mode"}, {"mode"})
    mode = options["mode"]
    if mode not in ("skip", "cancel"):
        raise _fail("singleton.mode", f"must be 'skip' or 'cancel', got {mode!r}")
    return GuardSpec(
        "singleton",
        "singleton",
        _key("singleton", options),
        "fn",
        functools.partial(Singleton, mode=mode),
    )


def parse_flow(config: Mapping[str, Any]) -> tuple[GuardSpec, ...]:
    """Return the guard specs of a config's flow-control keys, in checking order."""
    specs: list[GuardSpec] = []
    for key in FLOW_KEYS:
        if key not in config:
            continue
        value = config[key]
        if key == "concurrency":
            specs += _concurrency(value)
        else:
            specs.append(
                {
                    "throttle": _throttle,
                    "rate_limit": _rate_limit,
                    "debounce": _debounce,
                    "idempotency": _idempotency,
                    "singleton": _singleton,
                }[key](value)
            )
    return tuple(specs)
