"""How celery_defer talks to Redis: one client recipe, one Lua loader, one error policy.

- Clients decode replies to ``str`` (``decode_responses=True``), so no caller
  handles bytes.
- Scripts live in ``celery_defer/lua/<group>/<name>.lua``; each is loaded with
  ``lua/prelude.lua`` in front, which gives every script the same clock
  (``redis_now_ms()``, Redis ``TIME``).
- The client is a ``redis.Redis`` or, for Redis Cluster, a ``redis.cluster.RedisCluster``
  (:data:`StoreClient`); every key a script gets shares one hash slot
  (``celery_defer.keys``), so redis-py routes each script call to the node that
  owns it, and reloads the script there on ``NOSCRIPT``.
- Any ``redis.RedisError`` becomes :class:`StoreUnavailableError` naming what
  was being done, with the driver's error as ``__cause__``: callers deal with one
  exception whether the server is down, slow, read-only or refused a script.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from celery_defer.errors import ConfigurationError, StoreUnavailableError
from celery_defer.redis_urls import ClusterUrl, is_cluster_url, parse_cluster_url

#: A client of the state store: one Redis server, or a Redis Cluster.
StoreClient: TypeAlias = "redis.Redis | RedisCluster"


#: The scripts' folder, found when this module is imported. Finding it later goes
#: through the import machinery (``importlib.resources`` imports its readers on
#: first use): a pool process forked while another thread of its parent was in
#: there inherits that module's import lock held, and hangs on it for good.
_LUA = resources.files("celery_defer") / "lua"
_PRELUDE = (_LUA / "prelude.lua").read_text("utf-8")


@cache
def lua_source(name: str) -> str:
    """Return the text of script ``name`` (``"outbox/record"``), prelude first."""
    return _PRELUDE + (_LUA / f"{name}.lua").read_text("utf-8")


class Scripts:
    """The scripts of one group, registered on one client, called by short name.

    Args:
        client: the Redis client.
        group: the folder under ``lua/`` (``outbox``, ``runs``, ``limits``, ``steps``).
        names: the scripts of that folder to register.
    """

    def __init__(self, client: StoreClient, group: str, names: Sequence[str]) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(lua_source(f"{group}/{name}")) for name in names
        }

    def __call__(self, name: str, keys: Sequence[str], args: Sequence[Any], *, doing: str) -> Any:
        """Run script ``name``; ``doing`` says what for, in the error when Redis fails."""
        with reaching(doing):
            return self._scripts[name](keys=list(keys), args=list(args))

    def each(
        self, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]], *, doing: str
    ) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)`` in one pipeline (one round trip per node).

        For walks over every shard. A call that finds the script not loaded on its
        node (a restarted or new node) is run again alone, which loads it.
        """
        script = self._scripts[name]
        with reaching(doing):
            pipe = self._client.pipeline(transaction=False)
            for keys, args in calls:
                # execute_command: redis-py blocks pipe.evalsha on a cluster because a
                # pipeline cannot reload a script; a NOSCRIPT reply is handled below.
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            replies: list[Any] = pipe.execute(raise_on_error=False)
            for index, reply in enumerate(replies):
                if isinstance(reply, NoScriptError):
                    keys, args = calls[index]
                    replies[index] = script(keys=list(keys), args=list(args))
                elif isinstance(reply, Exception):
                    raise reply
        return replies


@contextmanager
def reaching(doing: str) -> Iterator[None]:
    """Turn a Redis failure while ``doing`` something into :class:`StoreUnavailableError`."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        raise StoreUnavailableError(f"{doing}: {exc}") from exc


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def connect(url: str) -> StoreClient:
    """Return a client for the library's state store at ``url``.

    ``redis://`` and ``rediss://`` give one server's client; ``redis+cluster://``
    and ``rediss+cluster://`` (``celery_defer.redis_urls``) a Redis Cluster client,
    made with the same decoding, timeouts and retries.

    Raises:
        ConfigurationError: the URL is not one of these.
        StoreUnavailableError: no seed node of a cluster answered.
    """
    if is_cluster_url(url):
        return _connect_cluster(parse_cluster_url(url))
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=_retry(),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"defer_redis_url {url!r} is not a Redis URL redis-py accepts: {exc}",
            key="defer_redis_url",
        ) from exc


def _connect_cluster(parsed: ClusterUrl) -> RedisCluster:
    options: dict[str, Any] = dict(parsed.options)
    if "ssl_check_hostname" in options:
        options["ssl_check_hostname"] = options["ssl_check_hostname"].lower() in ("1", "true", "yes")
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
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=5,
            retry=_retry(),
            **options,
        )
