"""Where a run's kept steps live: one Redis hash per run, or a dict for eager runs.

The hash ``steps:<run id>`` maps each step's hashed id to ``"r:<json>"`` (a kept
result) or ``"w:<ms>"`` (a ``step.sleep`` wake-up time, Redis time). A step's
result and the defers its ``fn`` made are written by one script (``lua/steps/keep``),
so the two are kept together or not at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from celery import Celery

from celery_defer import keys
from celery_defer.outbox.record import DeferRecord
from celery_defer.redis_clients import StoreClient, reaching
from celery_defer.redis_io import Scripts
from celery_defer.store import Store, store_for

logger = logging.getLogger(__name__)

#: Prefix of a kept result in the steps hash.
RESULT = "r:"
#: Prefix of a sleep's wake-up time in the steps hash.
WAKE = "w:"


class Loaded(NamedTuple):
    """What an attempt learns at its first step."""

    entries: dict[str, str]
    outbox_ids: frozenset[str]
    leased: bool


class Kept(NamedTuple):
    """The answer to keeping a step: whether this call kept it, and the kept text."""

    kept: bool
    text: str
    leased: bool


class StepMemo(Protocol):
    """The kept steps of runs, by run id and hashed step id."""

    def load(self, run_id: str) -> Loaded: ...

    def keep(self, run_id: str, field: str, text: str, records: Sequence[DeferRecord]) -> Kept: ...

    def sleep_left_ms(self, run_id: str, field: str, duration_ms: int) -> int: ...

    def finish(self, run_id: str) -> None: ...


class RedisStepMemo:
    """Kept steps in Redis. Every method raises ``StoreUnavailableError`` when Redis fails."""

    def __init__(self, client: StoreClient, keyspace: keys.KeySpace, *, lease_ms: int) -> None:
        self.client = client
        self.keys = keyspace
        self.lease_ms = lease_ms
        self._script = Scripts(client, "steps", ("load", "keep", "sleep"))

    def _run_keys(self, run_id: str) -> list[str]:
        return [self.keys.steps(run_id), self.keys.outbox(run_id), self.keys.attempts(run_id)]

    def load(self, run_id: str) -> Loaded:
        flat, ids = self._script(
            "load", self._run_keys(run_id), [run_id, self.lease_ms], doing=f"reading the steps of {run_id}"
        )
        entries = dict(zip(flat[::2], flat[1::2], strict=True))
        return Loaded(entries, frozenset(ids), bool(ids))

    def keep(self, run_id: str, field: str, text: str, records: Sequence[DeferRecord]) -> Kept:
        argv: list[Any] = [run_id, field, text, keys.STEPS_TTL_S, keys.OUTBOX_TTL_S, self.lease_ms]
        for record in records:
            argv += (record.defer_id, record.encode())
        kept, stored, leased = self._script(
            "keep", self._run_keys(run_id), argv, doing=f"keeping a step of {run_id}"
        )
        return Kept(bool(kept), stored, bool(leased))

    def sleep_left_ms(self, run_id: str, field: str, duration_ms: int) -> int:
        left = self._script(
            "sleep",
            [self.keys.steps(run_id)],
            [field, duration_ms, keys.STEPS_TTL_S],
            doing=f"sleeping a step of {run_id}",
        )
        return int(left)

    def finish(self, run_id: str) -> None:
        with reaching(f"expiring the steps of {run_id}"):
            self.client.expire(self.keys.steps(run_id), keys.STEPS_FINAL_TTL_S)


class MemoryStepMemo:
    """Kept steps of eager runs (``task_always_eager``, ``.apply()``), in this process."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def load(self, run_id: str) -> Loaded:
        with self._lock:
            return Loaded(dict(self._runs.get(run_id, {})), frozenset(), False)

    def keep(self, run_id: str, field: str, text: str, records: Sequence[DeferRecord]) -> Kept:
        # An eager attempt's defers stay in its capture: the eager outbox keeps them.
        with self._lock:
            stored = self._runs.setdefault(run_id, {}).setdefault(field, text)
        return Kept(stored is text, stored, False)

    def sleep_left_ms(self, run_id: str, field: str, duration_ms: int) -> int:
        now_ms = int(time.time() * 1000)
        with self._lock:
            stored = self._runs.setdefault(run_id, {}).setdefault(field, f"{WAKE}{now_ms + duration_ms}")
        if not stored.startswith(WAKE):
            return 0
        return int(stored[len(WAKE) :]) - now_ms

    def finish(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


#: The one in-memory step memo of this process.
eager_steps = MemoryStepMemo()


def memo_for(app: Celery, *, eager: bool) -> StepMemo:
    """Return where ``app``'s runs keep their steps (raises ``ConfigurationError`` without Redis)."""
    if eager:
        return eager_steps
    store = store_for(app)
    cached: tuple[Store, RedisStepMemo] | None = app.__dict__.get("_celery_defer_steps")
    if cached is None or cached[0] is not store:
        memo = RedisStepMemo(store.client, store.keys, lease_ms=int(store.settings.lease_s * 1000))
        cached = (store, memo)
        app.__dict__["_celery_defer_steps"] = cached
    return cached[1]


def field_for(step_key: str) -> str:
    """The hash field of a step: its id (with implicit index) hashed, never in clear."""
    return keys.hash_key_value(step_key)


def finish_steps(app: Celery, run_id: str) -> None:
    """A run finalized without its attempt returning: let its kept steps expire soon. Never raises."""
    try:
        memo_for(app, eager=False).finish(run_id)
    except Exception:
        logger.warning("run %s: its kept steps were left to expire", run_id, exc_info=True)
