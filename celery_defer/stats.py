"""Counters for operators: drops per function and guard, duplicates acknowledged."""

from __future__ import annotations

import logging
from typing import cast

import redis

from celery_defer import keys
from celery_defer.redis_io import reaching

logger = logging.getLogger(__name__)


class Counters:
    """The library's counters of one app (a Redis hash ``<prefix>:stats``)."""

    def __init__(self, client: redis.Redis, keyspace: keys.KeySpace) -> None:
        self.client = client
        self.keys = keyspace

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one counter; never fails the caller (a failure is logged)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(self.keys.stats(), name, amount)
            pipe.expire(self.keys.stats(), keys.DONE_TTL_S)
            pipe.execute()
        except redis.RedisError:
            logger.warning("could not count %s", name, exc_info=True)

    def counters(self) -> dict[str, int]:
        """Return every counter: ``dropped:<fn>:<guard>``, ``duplicate:<fn>``."""
        with reaching("reading the counters"):
            raw = cast(dict[str, str], self.client.hgetall(self.keys.stats()))
        return {name: int(value) for name, value in raw.items()}
