"""The library's Redis state of one Celery app: the outbox, run claims, limits, counters.

``store_for(app)`` builds it on first use from the app's settings and keeps it
on the app: one client per app and process, shared by every part. A forked pool
process builds its own: a ``redis.Redis`` pool notices the fork by itself, a
Redis Cluster client does not (its locks and slot map may be copied mid-use).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from celery import Celery

from celery_defer.deferred.claims import RunClaims
from celery_defer.errors import ConfigurationError
from celery_defer.keys import KeySpace
from celery_defer.limits.redis_backend import RedisLimitBackend
from celery_defer.outbox.redis_outbox import RedisOutbox
from celery_defer.redis_clients import StoreClient, connect
from celery_defer.redis_clock import LOCAL_CLOCK, RedisClock
from celery_defer.settings import Settings, settings_for
from celery_defer.stats import Counters


@dataclass(frozen=True, slots=True)
class Store:
    """Everything celery_defer keeps in Redis for one app."""

    client: StoreClient
    settings: Settings
    keys: KeySpace
    outbox: RedisOutbox
    claims: RunClaims
    limits: RedisLimitBackend
    stats: Counters
    clock: RedisClock
    #: The process that built it: a forked child builds its own.
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def build(cls, client: StoreClient, settings: Settings) -> Store:
        keyspace = KeySpace(settings.key_prefix)
        clock = RedisClock(client)
        return cls(
            client=client,
            settings=settings,
            keys=keyspace,
            clock=clock,
            outbox=RedisOutbox(client, settings, keyspace, clock),
            claims=RunClaims(client, keyspace, done_ttl_s=settings.done_ttl_s, clock=clock),
            limits=RedisLimitBackend(client),
            stats=Counters(client, keyspace),
        )


_stores_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # A fork copies the lock as it was: held, if another thread was building a store.
    global _stores_lock
    _stores_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def store_for(app: Celery) -> Store:
    """Return the :class:`Store` of ``app``, made on first use.

    Raises:
        ConfigurationError: no Redis URL is configured, or it is not one.
    """
    store: Store | None = app.__dict__.get("_celery_defer_store")
    settings = settings_for(app)
    if store is not None and store.settings is settings and store.pid == os.getpid():
        return store
    url = settings.require_redis_url()
    with _stores_lock:
        store = Store.build(connect(url, transport_options=settings.redis_transport_options), settings)
        app.__dict__["_celery_defer_store"] = store
        return store


def clock_for(app: Celery) -> RedisClock:
    """The clock to stamp and compare times that cross hosts with (Redis ``TIME``).

    Apps without a state store, and apps that run every task in-process
    (``task_always_eager``), read the local clock: their runs never leave the
    process, and they must not wait on a Redis that may not be there.
    """
    settings = settings_for(app)
    if not settings.redis_url or app.conf.task_always_eager:
        return LOCAL_CLOCK
    try:
        return store_for(app).clock
    except ConfigurationError:
        return LOCAL_CLOCK
