"""The state store's clients: one recipe per kind of URL, and one error policy.

- ``redis://``, ``rediss://``, ``unix://``: a :class:`StateClient` (``redis.Redis``).
- ``sentinel://`` URLs: the master Sentinel names, followed through failovers.
- ``redis+cluster://``, ``rediss+cluster://``: a ``RedisCluster``.

Every client decodes replies to ``str`` (``decode_responses=True``) and retries
a dropped connection a few times. Any ``redis.RedisError`` becomes
:class:`StoreUnavailableError` naming what was being done (:func:`reaching`),
with the driver's error as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeAlias, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from celery_defer.errors import ConfigurationError, StoreUnavailableError
from celery_defer.redis_urls import (
    ClusterUrl,
    ReplicaAcks,
    check_transport_options,
    is_cluster_url,
    is_sentinel_url,
    parse_cluster_url,
    parse_sentinel_url,
    replica_acks,
)


class StateClient(redis.Redis):
    """The state store's client: a ``redis.Redis`` that knows which replicas must ack a script."""

    replica_acks: ReplicaAcks = ReplicaAcks()


#: A client of the state store: one Redis server (or Sentinel's master), or a Redis Cluster.
StoreClient: TypeAlias = "redis.Redis | RedisCluster"


def acks_of(client: StoreClient) -> ReplicaAcks:
    """The replica acknowledgement ``client``'s script writes wait for (none for other clients)."""
    return client.replica_acks if isinstance(client, StateClient) else ReplicaAcks()


@contextmanager
def reaching(doing: str) -> Iterator[None]:
    """Turn a Redis failure while ``doing`` something into :class:`StoreUnavailableError`."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        raise StoreUnavailableError(f"{doing}: {exc}") from exc


def _client_options() -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


def connect(url: str, *, transport_options: Mapping[str, Any] | None = None) -> StoreClient:
    """Return a client for the library's state store at ``url``.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL, ``sentinel://``
            URLs separated by ``;``, or ``redis+cluster://`` / ``rediss+cluster://``
            (see ``celery_defer.redis_urls``).
        transport_options: ``defer_redis_transport_options``.

    Raises:
        ConfigurationError: redis-py does not accept the URL, or an option is wrong.
        StoreUnavailableError: no seed node of a cluster answered.
    """
    options = check_transport_options(transport_options)
    acks = replica_acks(url, options)
    if is_cluster_url(url):
        if acks.replicas:
            raise ConfigurationError(
                "defer_redis_transport_options['min_replica_acks'] is not supported with Redis Cluster",
                key="defer_redis_transport_options",
            )
        return _cluster(parse_cluster_url(url))
    client = _sentinel_master(url, options) if is_sentinel_url(url) else _single_server(url)
    client.replica_acks = acks
    return client


def _sentinel_master(url: str, options: Mapping[str, Any]) -> StateClient:
    # The pool asks the sentinels for the master on every new connection, and drops a
    # connection whose server answers READONLY (a demoted master) as a ConnectionError:
    # the retry below reconnects to whichever server was promoted.
    target = parse_sentinel_url(url, options)
    client_options = _client_options()
    sentinel_kwargs = {
        "socket_timeout": client_options["socket_timeout"],
        "socket_connect_timeout": client_options["socket_connect_timeout"],
        **target.sentinel_kwargs,
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        min_other_sentinels=target.min_other_sentinels,
        sentinel_kwargs=sentinel_kwargs,
    )
    credentials = {"username": target.username, "password": target.password}
    master = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.master_name,
        redis_class=StateClient,
        db=target.db,
        **{name: value for name, value in credentials.items() if value is not None},
        **client_options,
    )
    return cast(StateClient, master)


def _single_server(url: str) -> StateClient:
    try:
        return cast(StateClient, StateClient.from_url(url, **_client_options()))
    except ValueError as exc:
        raise ConfigurationError(
            f"defer_redis_url {url!r} is not a Redis URL redis-py accepts: {exc}",
            key="defer_redis_url",
        ) from exc


def _cluster(parsed: ClusterUrl) -> RedisCluster:
    options: dict[str, Any] = dict(parsed.options)
    if "ssl_check_hostname" in options:
        options["ssl_check_hostname"] = options["ssl_check_hostname"].lower() in ("1", "true", "yes")
    client_options = _client_options()
    # A cluster client takes its retry itself, and no per-connection retry or health check.
    for name in ("health_check_interval", "retry_on_error"):
        client_options.pop(name)
    seeds = ", ".join(f"{host}:{port}" for host, port in parsed.nodes)
    # The client asks a seed node for the slot map at once: that is the first call.
    with reaching(f"reaching the Redis Cluster at {seeds}"):
        return RedisCluster(
            startup_nodes=[
                ClusterNode(host, port)  # type: ignore[no-untyped-call]
                for host, port in parsed.nodes
            ],
            username=parsed.username,
            password=parsed.password,
            ssl=parsed.tls,
            **client_options,
            **options,
        )
