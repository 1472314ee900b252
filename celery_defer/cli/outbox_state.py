"""What the outbox holds: finalized runs not yet sent, and attempts running with recorded defers.

Read-only: it reads the ``finalized`` and ``attempts`` zsets of every shard and
the outbox hashes (see ``celery_defer.outbox.redis_outbox``), and changes nothing.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import cast

from celery_defer.redis_clients import reaching
from celery_defer.store import Store


@dataclass(frozen=True, slots=True)
class PendingRun:
    """A parent run that finalized and whose deferred runs are not sent yet.

    Attributes:
        run_id: the parent run.
        task: the parent's task name.
        defers: the defer ids recorded, in call order.
        functions: the deferred function id of each defer.
        age_s: seconds since its oldest defer was recorded.
        due_in_s: seconds until a recovery pass may send it; negative when overdue.
    """

    run_id: str
    task: str
    defers: list[str]
    functions: list[str]
    age_s: float
    due_in_s: float


@dataclass(frozen=True, slots=True)
class LeasedAttempt:
    """An attempt running now, of a parent run that earlier attempts recorded defers for.

    Attributes:
        run_id: the parent run.
        task: the parent's task name.
        defers: the defer ids earlier attempts recorded.
        lease_left_s: seconds left on its lease; negative once it ran out (its worker
            is likely dead, and a recovery pass will finalize the run).
    """

    run_id: str
    task: str
    defers: list[str]
    lease_left_s: float


@dataclass(frozen=True, slots=True)
class OutboxState:
    """The runs shown, and how many there are in all."""

    pending: list[PendingRun]
    pending_total: int
    attempts: list[LeasedAttempt]
    attempts_total: int


def redis_now_ms(store: Store) -> float:
    """Return Redis's clock in ms: the clock every stored time was written with."""
    with reaching("reading the Redis clock"):
        seconds, micros = store.client.time()
    return seconds * 1000 + micros / 1000


def _oldest(shards: list[list[tuple[str, float]]], limit: int) -> list[tuple[str, float]]:
    return heapq.nsmallest(limit, (entry for shard in shards for entry in shard), key=lambda entry: entry[1])


def read_outbox(store: Store, *, limit: int) -> OutboxState:
    """Return up to ``limit`` pending runs and leased attempts, oldest first."""
    keys = store.keys
    with reaching("reading the outbox index"):
        # The oldest ``limit`` of each shard, then the oldest ``limit`` of them all.
        pipe = store.client.pipeline(transaction=False)
        for shard in keys.shards():
            pipe.zrange(keys.finalized(shard), 0, limit - 1, withscores=True)
            pipe.zcard(keys.finalized(shard))
            pipe.zrange(keys.attempts(shard), 0, limit - 1, withscores=True)
            pipe.zcard(keys.attempts(shard))
        replies = pipe.execute()
    finalized = _oldest(replies[0::4], limit)
    finalized_total = sum(cast(list[int], replies[1::4]))
    attempts = _oldest(replies[2::4], limit)
    attempts_total = sum(cast(list[int], replies[3::4]))
    now_ms = redis_now_ms(store)
    pending = []
    for run_id, due_ms in finalized:
        records = store.outbox.pending_records(run_id)
        if not records:  # sent between the two reads
            continue
        pending.append(
            PendingRun(
                run_id=run_id,
                task=records[0].parent.task_name,
                defers=[record.defer_id for record in records],
                functions=[record.function_id for record in records],
                age_s=(now_ms - min(record.ts_ms for record in records)) / 1000,
                due_in_s=(due_ms - now_ms) / 1000,
            )
        )
    leased = []
    for run_id, lease_end_ms in attempts:
        records = store.outbox.pending_records(run_id)
        leased.append(
            LeasedAttempt(
                run_id=run_id,
                task=records[0].parent.task_name if records else "?",
                defers=[record.defer_id for record in records],
                lease_left_s=(lease_end_ms - now_ms) / 1000,
            )
        )
    return OutboxState(pending, int(finalized_total), leased, int(attempts_total))
