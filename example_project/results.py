"""What the shop's tasks saw, kept in Redis under ``example:`` for the driver to check.

- ``example:attempts`` (list): one JSON entry per attempt of a deferred run, written
  as the handler starts: run id, parent run id, function, attempt, start time (ms).
- ``example:completed`` (hash): ``<parent run id>|<function>`` -> handler completions.
- ``example:parents`` (hash): parent run id -> JSON of its last attempt's end
  (order id, attempt, outcome, finish time in ms).
- ``example:active:<function>[:<key value>]`` (counter): handlers of the function
  executing right now (per key value when its concurrency limit has a key).
- ``example:max-active`` (hash): function -> the most handlers seen executing at once.
- ``example:charges`` (hash): order id -> how often its card was charged (the
  ``charge-card`` step's body ran).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from redis.client import Pipeline

logger = logging.getLogger(__name__)

PREFIX = "example:"
ATTEMPTS = f"{PREFIX}attempts"
COMPLETED = f"{PREFIX}completed"
PARENTS = f"{PREFIX}parents"
ACTIVE = f"{PREFIX}active:"
MAX_ACTIVE = f"{PREFIX}max-active"
CHARGES = f"{PREFIX}charges"
#: The demo's keys expire a day after their last write, on a Redis it shares.
TTL_S = 24 * 3600

_clients: dict[tuple[int, str], redis.Redis] = {}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def client_for(app: Celery) -> redis.Redis:
    """A client on the app's celery_defer Redis, one per process (workers fork)."""
    url = app.conf.defer_redis_url
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(url)
    return client


def _write(app: Celery, key: str, command: Callable[[Pipeline], object]) -> None:
    pipe = client_for(app).pipeline(transaction=True)
    command(pipe)
    pipe.expire(key, TTL_S)
    pipe.execute()


def record_attempt(
    app: Celery, *, run_id: str, parent_id: str, function: str, attempt: int, saw: dict[str, Any]
) -> None:
    entry = {
        "run": run_id,
        "parent": parent_id,
        "fn": function,
        "attempt": attempt,
        "start_ms": now_ms(),
        "saw": saw,
    }
    _write(app, ATTEMPTS, lambda pipe: pipe.rpush(ATTEMPTS, json.dumps(entry)))


def record_completion(app: Celery, *, parent_id: str, function: str) -> None:
    _write(app, COMPLETED, lambda pipe: pipe.hincrby(COMPLETED, f"{parent_id}|{function}", 1))


def record_charge(app: Celery, *, order_id: int, amount_cents: int) -> None:
    """Count one charge of an order's card (``amount_cents`` is what a gateway would take)."""
    _write(app, CHARGES, lambda pipe: pipe.hincrby(CHARGES, str(order_id), 1))


def record_parent_end(app: Celery, *, run_id: str, order_id: int, attempt: int, outcome: str) -> None:
    entry = {"order": order_id, "attempt": attempt, "outcome": outcome, "finish_ms": now_ms()}
    _write(app, PARENTS, lambda pipe: pipe.hset(PARENTS, run_id, json.dumps(entry)))


#: INCR the active counter and raise the function's high-water mark, in one step.
_ENTER_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if n > tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[2], ARGV[1], n)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return n
"""


@contextmanager
def running(app: Celery, function: str, *, key: str | None = None) -> Iterator[int]:
    """Count a handler as executing while the block runs; yield how many run now (itself included).

    Pass ``key`` (the value of the function's concurrency key) to count per key
    value, which is what a keyed limit bounds.
    """
    client = client_for(app)
    counter = f"{ACTIVE}{function}" if key is None else f"{ACTIVE}{function}:{key}"
    now_active = int(client.eval(_ENTER_SCRIPT, 2, counter, MAX_ACTIVE, function, TTL_S))
    try:
        yield now_active
    finally:
        client.decr(counter)


@dataclass(frozen=True, slots=True)
class Attempt:
    run_id: str
    parent_id: str
    function: str
    attempt: int
    start_ms: int
    saw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ParentEnd:
    order_id: int
    attempt: int
    outcome: str
    finish_ms: int


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything recorded so far."""

    attempts: list[Attempt]
    completed: dict[tuple[str, str], int]
    parents: dict[str, ParentEnd]
    #: function -> the most handlers seen executing at once (per key value if keyed).
    max_active: dict[str, int] = field(default_factory=dict)
    #: order id -> how often its card was charged.
    charges: dict[int, int] = field(default_factory=dict)


def load(client: redis.Redis) -> Observed:
    """Read everything the tasks recorded."""
    pipe = client.pipeline(transaction=True)
    pipe.lrange(ATTEMPTS, 0, -1)
    pipe.hgetall(COMPLETED)
    pipe.hgetall(PARENTS)
    pipe.hgetall(MAX_ACTIVE)
    pipe.hgetall(CHARGES)
    raw_attempts, raw_completed, raw_parents, raw_max_active, raw_charges = pipe.execute()
    attempts = []
    for raw in raw_attempts:
        doc = json.loads(raw)
        attempts.append(
            Attempt(doc["run"], doc["parent"], doc["fn"], doc["attempt"], doc["start_ms"], doc["saw"])
        )
    completed: dict[tuple[str, str], int] = {}
    for name, count in raw_completed.items():
        parent_id, _, function = name.decode().partition("|")
        completed[(parent_id, function)] = int(count)
    parents = {}
    for run_id, raw in raw_parents.items():
        doc = json.loads(raw)
        parents[run_id.decode()] = ParentEnd(doc["order"], doc["attempt"], doc["outcome"], doc["finish_ms"])
    max_active = {function.decode(): int(count) for function, count in raw_max_active.items()}
    charges = {int(order_id): int(count) for order_id, count in raw_charges.items()}
    return Observed(attempts, completed, parents, max_active, charges)


def clear(client: redis.Redis, *, patterns: tuple[str, ...] = (f"{PREFIX}*",)) -> int:
    """Delete the keys matching ``patterns`` (never the whole database); return how many."""
    deleted = 0
    for pattern in patterns:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
    logger.debug("cleared %d keys matching %s", deleted, patterns)
    return deleted
