"""Counters for operators: drops per function and guard, duplicates acknowledged.

A counter about a run is kept in its run's shard (``celery_defer.keys``), so a
per-run Lua script may count in the same atomic call on Redis Cluster; readers sum
every shard.
"""

from __future__ import annotations

import logging
from typing import cast

import redis

from celery_defer import keys
from celery_defer.redis_clients import StoreClient, reaching

logger = logging.getLogger(__name__)


class Counters:
    """The library's counters of one app (a Redis hash ``stats`` per shard)."""

    def __init__(self, client: StoreClient, keyspace: keys.KeySpace) -> None:
        self.client = client
        self.keys = keyspace

    def count(self, name: str, amount: int = 1, *, run_id: str) -> None:
        """Add to one counter, in the shard of the run it is about; never fails the caller."""
        key = self.keys.stats(run_id)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(key, name, amount)
            pipe.expire(key, keys.DONE_TTL_S)
            pipe.execute()
        except redis.RedisError:
            logger.warning("could not count %s", name, exc_info=True)

    def counters(self) -> dict[str, int]:
        """Return every counter, summed over the shards: ``dropped:<fn>:<guard>``, ``duplicate:<fn>``."""
        with reaching("reading the counters"):
            pipe = self.client.pipeline(transaction=False)
            for shard in self.keys.shards():
                pipe.hgetall(self.keys.stats(shard))
            shards = cast(list[dict[str, str]], pipe.execute())
        totals: dict[str, int] = {}
        for raw in shards:
            for name, value in raw.items():
                totals[name] = totals.get(name, 0) + int(value)
        return totals
