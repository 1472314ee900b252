"""The flow-control state of one deferred function, as the guards' Lua scripts left it.

Read-only. Keys are found from the function's rules (``GuardSpec.redis_key``);
a keyed rule has one Redis key per key value, named by the value's hash
(``celery_defer.keys.hash_key_value``), so the hash is what is shown. The
layout of each kind's state is the one ``celery_defer/lua/limits/*.lua`` write.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, cast

from celery_defer.cli.catalog import guard_settings
from celery_defer.cli.outbox_state import redis_now_ms
from celery_defer.config.flow_keys import GuardSpec
from celery_defer.keys import avg_key, keyed_limit, line_key, seen_key, waiters_key
from celery_defer.redis_clients import reaching
from celery_defer.store import Store

#: A hashed key value, as ``hash_key_value`` makes it (blake2b, 12 bytes, hex).
_HASH = r"[0-9a-f]{24}"
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclass(frozen=True, slots=True)
class KeyState:
    """The state behind one key value of a rule (``key_hash`` is None for an unkeyed rule)."""

    key_hash: str | None
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RuleState:
    """One flow-control rule and the state of the key values that have any.

    Attributes:
        slot: the rule's name among the function's rules (``concurrency.0``, ``throttle``).
        kind: the config key.
        settings: the rule's config (limit, period_s, ...).
        keys: the key values with state, at most the limit asked for.
        keys_total: how many key values have state.
    """

    slot: str
    kind: str
    settings: dict[str, Any]
    keys: list[KeyState] = field(default_factory=list)
    keys_total: int = 0


def _seconds(ms: float) -> float:
    return round(ms / 1000, 3)


def _key_hashes(store: Store, spec: GuardSpec, base: str) -> list[str]:
    """Return the hashes of the key values of a keyed rule that have any state.

    ``base`` is the rule's unkeyed key, ``{...}``; a key value's key is
    ``{...:<hash>}`` (``keyed_limit``), and its sub-keys follow the closing brace.
    """
    stem = base[:-1]
    pattern = _GLOB_SPECIAL.sub(r"\\\1", stem) + ":*"
    # Sub-keys (waiters, seen, avg) count too: a concurrency key can be all waiters.
    own = re.compile(re.escape(stem) + rf":({_HASH})\}}(?::(?:waiters|seen|avg|line|parked))?$")
    found: set[str] = set()
    with reaching(f"listing the keys of {spec.slot}"):
        for name in store.client.scan_iter(match=pattern, count=500):
            match = own.match(cast(str, name))
            if match:
                found.add(match.group(1))
    return sorted(found)


def read_rules(
    store: Store, function_id: str, specs: tuple[GuardSpec, ...], *, limit: int
) -> list[RuleState]:
    """Return the state of every flow-control rule of a function, ``limit`` key values per rule."""
    now_ms = redis_now_ms(store)
    rules = []
    for spec in specs:
        base = spec.redis_key(store.keys, function_id)
        settings = guard_settings(spec)
        if spec.key is None:
            candidates: list[tuple[str | None, str]] = [(None, base)]
        else:
            candidates = [(h, keyed_limit(base, h)) for h in _key_hashes(store, spec, base)]
        states = []
        for key_hash, key in candidates:
            state = _read_state(store, spec.kind, key, settings, now_ms)
            if state:
                states.append(KeyState(key_hash, state))
        rules.append(RuleState(spec.slot, spec.kind, settings, states[:limit], len(states)))
    return rules


def _read_state(store: Store, kind: str, key: str, settings: dict[str, Any], now_ms: float) -> dict[str, Any]:
    with reaching(f"reading {key}"):
        if kind == "concurrency":
            return _concurrency(store, key, now_ms)
        if kind == "throttle":
            return _throttle(store, key, settings, now_ms)
        if kind == "rate_limit":
            return _rate_limit(store, key, settings, now_ms)
        if kind == "debounce":
            return _debounce(store, key, now_ms)
        return _lock(store, key)  # idempotency and singleton: a holder with a TTL


def _concurrency(store: Store, key: str, now_ms: float) -> dict[str, Any]:
    pipe = store.client.pipeline(transaction=False)
    pipe.zrange(key, 0, -1, withscores=True)
    pipe.zrange(waiters_key(key), 0, -1, withscores=True)
    pipe.zrange(seen_key(key), 0, -1, withscores=True)
    pipe.get(avg_key(key))
    pipe.lrange(line_key(key), 0, -1)
    holders, waiters, seen, avg, line = pipe.execute()
    # Expired leases are removed lazily by the next acquire: they hold nothing now.
    held = [
        {"run_id": run_id, "lease_left_s": _seconds(end - now_ms)} for run_id, end in holders if end > now_ms
    ]
    last_seen = dict(seen)
    queue = [
        {
            "run_id": run_id,
            "waiting_s": _seconds(now_ms - first),
            "last_asked_s_ago": _seconds(now_ms - last_seen.get(run_id, first)),
        }
        for run_id, first in waiters
    ]
    # Parked runs (off the broker, sent by the run that frees a slot), first come first.
    queue += [{"run_id": run_id, "parked": True, "ahead": ahead} for ahead, run_id in enumerate(line)]
    if not held and not queue:
        return {}
    return {
        "held": held,
        "waiters": queue,
        "avg_run_s": None if avg is None else _seconds(float(avg)),
    }


def _throttle(store: Store, key: str, settings: dict[str, Any], now_ms: float) -> dict[str, Any]:
    raw = store.client.get(key)
    if raw is None:
        return {}
    interval_ms = settings["period_s"] * 1000 / settings["limit"]
    burst = settings.get("burst", 1)
    # Same arithmetic as throttle_take.lua (GCRA): a start is allowed once
    # max(tat, now) + interval - burst * interval <= now.
    tat = max(float(cast(str, raw)), now_ms)
    wait_ms = tat + interval_ms - burst * interval_ms - now_ms
    available = max(0, min(burst, math.floor((now_ms - tat) / interval_ms + burst + 1e-9)))
    return {
        "starts_available_now": available,
        "next_start_in_s": _seconds(max(0.0, wait_ms)),
        "theoretical_arrival_in_s": _seconds(tat - now_ms),
    }


def _rate_limit(store: Store, key: str, settings: dict[str, Any], now_ms: float) -> dict[str, Any]:
    period_ms = settings["period_s"] * 1000
    hits = cast(
        list[tuple[str, float]], store.client.zrangebyscore(key, now_ms - period_ms, "+inf", withscores=True)
    )
    if not hits:
        return {}
    full = len(hits) >= settings["limit"]
    # Over the limit, a run is dropped until the oldest hit leaves the window.
    frees_in_ms = hits[0][1] + period_ms - now_ms if full else 0.0
    return {
        "hits_in_window": len(hits),
        "limit": settings["limit"],
        "dropping": full,
        "next_allowed_in_s": _seconds(max(0.0, frees_in_ms)),
    }


def _debounce(store: Store, key: str, now_ms: float) -> dict[str, Any]:
    pipe = store.client.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.pttl(key)
    fields, pttl = pipe.execute()
    if not fields:
        return {}
    return {
        "latest_run_id": fields.get("event"),
        "first_defer_s_ago": _seconds(now_ms - float(fields.get("first", now_ms))),
        "last_defer_s_ago": _seconds(now_ms - float(fields.get("last", now_ms))),
        "expires_in_s": _seconds(max(0, pttl)),
    }


def _lock(store: Store, key: str) -> dict[str, Any]:
    pipe = store.client.pipeline(transaction=False)
    pipe.get(key)
    pipe.pttl(key)
    holder, pttl = pipe.execute()
    if holder is None:
        return {}
    return {"held_by": holder or None, "expires_in_s": _seconds(max(0, pttl))}
