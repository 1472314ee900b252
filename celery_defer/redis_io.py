"""How celery_defer talks to Redis: one client recipe, one Lua loader, one error policy.

- Clients decode replies to ``str`` (``decode_responses=True``), so no caller
  handles bytes.
- Scripts live in ``celery_defer/lua/<group>/<name>.lua``; each is loaded with
  ``lua/prelude.lua`` in front, which gives every script the same clock
  (``redis_now_ms()``, Redis ``TIME``).
- With replicas that must acknowledge writes (Sentinel: one, by default), each
  script is followed by ``WAIT`` on the same connection: a failover then promotes a
  replica that holds every write a caller was told succeeded, and a write the
  replicas did not confirm fails like any other (callers try again).
- Any ``redis.RedisError`` becomes :class:`StoreUnavailableError` naming what
  was being done, with the driver's error as ``__cause__``: callers deal with one
  exception whether the server is down, slow, read-only or refused a script.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry
from redis.sentinel import Sentinel

from celery_defer.errors import ConfigurationError, StoreUnavailableError
from celery_defer.redis_urls import (
    ReplicaAcks,
    check_transport_options,
    is_sentinel_url,
    parse_sentinel_url,
    replica_acks,
)


class StateClient(redis.Redis):
    """The state store's client: a ``redis.Redis`` that knows which replicas must ack a script."""

    replica_acks: ReplicaAcks = ReplicaAcks()


@cache
def lua_source(name: str) -> str:
    """Return the text of script ``name`` (``"outbox/record"``), prelude first."""
    lua = resources.files("celery_defer") / "lua"
    prelude = (lua / "prelude.lua").read_text("utf-8")
    return prelude + (lua / f"{name}.lua").read_text("utf-8")


class Scripts:
    """The scripts of one group, registered on one client, called by short name.

    Args:
        client: the Redis client.
        group: the folder under ``lua/`` (``outbox``, ``runs``, ``limits``, ``steps``).
        names: the scripts of that folder to register.
    """

    def __init__(self, client: redis.Redis, group: str, names: Sequence[str]) -> None:
        self._client = client
        self._acks = client.replica_acks if isinstance(client, StateClient) else ReplicaAcks()
        self._scripts: dict[str, Script] = {
            name: client.register_script(lua_source(f"{group}/{name}")) for name in names
        }

    def __call__(self, name: str, keys: Sequence[str], args: Sequence[Any], *, doing: str) -> Any:
        """Run script ``name``; ``doing`` says what for, in the error when Redis fails."""
        with reaching(doing):
            if not self._acks.replicas:
                return self._scripts[name](keys=list(keys), args=list(args))
            reply, acked = self._run_acked(self._scripts[name], [*keys, *args], len(keys))
        if int(acked) < self._acks.replicas:
            raise StoreUnavailableError(
                f"{doing}: {acked} of {self._acks.replicas} replicas confirmed the write "
                f"within {self._acks.timeout_ms} ms"
            )
        return reply

    def _run_acked(self, script: Script, keys_and_args: list[Any], key_count: int) -> list[Any]:
        # WAIT counts the writes of its own connection: one pipeline keeps both on one.
        # EVALSHA goes in directly (redis-py's pipelined scripts ask SCRIPT EXISTS first,
        # a round trip each time); a server without the script (a promoted replica's
        # cache starts empty) gets it loaded, and the pair is sent again.
        try:
            return self._evalsha_and_wait(script.sha, keys_and_args, key_count)
        except redis.exceptions.NoScriptError:
            script.sha = self._client.script_load(script.script)
            return self._evalsha_and_wait(script.sha, keys_and_args, key_count)

    def _evalsha_and_wait(self, sha: str, keys_and_args: list[Any], key_count: int) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        pipe.evalsha(sha, key_count, *keys_and_args)
        pipe.wait(self._acks.replicas, self._acks.timeout_ms)
        return pipe.execute()


@contextmanager
def reaching(doing: str) -> Iterator[None]:
    """Turn a Redis failure while ``doing`` something into :class:`StoreUnavailableError`."""
    try:
        yield
    except redis.RedisError as exc:
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


def connect(url: str, *, transport_options: Mapping[str, Any] | None = None) -> redis.Redis:
    """Return a client for the library's state store at ``url``.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL, or ``sentinel://``
            URLs separated by ``;`` (see ``celery_defer.redis_urls``).
        transport_options: ``defer_redis_transport_options``.

    Raises:
        ConfigurationError: redis-py does not accept the URL, or an option is wrong.
    """
    options = check_transport_options(transport_options)
    acks = replica_acks(url, options)
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
