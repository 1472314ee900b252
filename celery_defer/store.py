"""The library's Redis state of one Celery app: the outbox, run claims, limits, counters.

``store_for(app)`` builds it on first use from the app's settings and keeps it
on the app: one client per app, shared by every part.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from celery import Celery

from celery_defer.deferred.claims import RunClaims
from celery_defer.keys import KeySpace
from celery_defer.limits.redis_backend import RedisLimitBackend
from celery_defer.outbox.redis_outbox import RedisOutbox
from celery_defer.redis_io import connect
from celery_defer.settings import Settings, settings_for
from celery_defer.stats import Counters


@dataclass(frozen=True, slots=True)
class Store:
    """Everything celery_defer keeps in Redis for one app."""

    client: redis.Redis
    settings: Settings
    keys: KeySpace
    outbox: RedisOutbox
    claims: RunClaims
    limits: RedisLimitBackend
    stats: Counters

    @classmethod
    def build(cls, client: redis.Redis, settings: Settings) -> Store:
        keyspace = KeySpace(settings.key_prefix)
        return cls(
            client=client,
            settings=settings,
            keys=keyspace,
            outbox=RedisOutbox(client, settings, keyspace),
            claims=RunClaims(client, keyspace),
            limits=RedisLimitBackend(client),
            stats=Counters(client, keyspace),
        )


_stores_lock = threading.Lock()


def store_for(app: Celery) -> Store:
    """Return the :class:`Store` of ``app``, made on first use.

    Raises:
        ConfigurationError: no Redis URL is configured, or it is not one.
    """
    store: Store | None = app.__dict__.get("_celery_defer_store")
    settings = settings_for(app)
    if store is not None and store.settings is settings:
        return store
    url = settings.require_redis_url()
    with _stores_lock:
        store = Store.build(connect(url), settings)
        app.__dict__["_celery_defer_store"] = store
        return store
