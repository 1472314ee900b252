"""How celery_defer talks to Redis: one client recipe, one Lua loader, one error policy.

- Clients decode replies to ``str`` (``decode_responses=True``), so no caller
  handles bytes.
- Scripts live in ``celery_defer/lua/<group>/<name>.lua``; each is loaded with
  ``lua/prelude.lua`` in front, which gives every script the same clock
  (``redis_now_ms()``, Redis ``TIME``). A line ``--#include <group>/<name>``
  pastes in a file of shared Lua functions.
- Script calls made inside :func:`batched` are queued and sent together in one
  pipelined round trip (``Batch.execute``): an attempt's last writes cost one.
- Any ``redis.RedisError`` becomes :class:`StoreUnavailableError` naming what
  was being done, with the driver's error as ``__cause__``: callers deal with one
  exception whether the server is down, slow, read-only or refused a script.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from celery_defer.errors import ConfigurationError, StoreUnavailableError

_INCLUDE = re.compile(r"^--#include ([\w/]+)$", re.MULTILINE)


@cache
def lua_source(name: str) -> str:
    """Return the text of script ``name`` (``"outbox/record"``), prelude first, includes pasted in."""
    lua = resources.files("celery_defer") / "lua"
    prelude = (lua / "prelude.lua").read_text("utf-8")
    body = (lua / f"{name}.lua").read_text("utf-8")
    body = _INCLUDE.sub(lambda match: (lua / f"{match[1]}.lua").read_text("utf-8"), body)
    return prelude + body


class Scripts:
    """The scripts of one group, registered on one client, called by short name.

    Args:
        client: the Redis client.
        group: the folder under ``lua/`` (``outbox``, ``runs``, ``limits``, ``steps``).
        names: the scripts of that folder to register.
    """

    def __init__(self, client: redis.Redis, group: str, names: Sequence[str]) -> None:
        self._client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(lua_source(f"{group}/{name}")) for name in names
        }

    def __call__(self, name: str, keys: Sequence[str], args: Sequence[Any], *, doing: str) -> Any:
        """Run script ``name``; ``doing`` says what for, in the error when Redis fails.

        Inside :func:`batched` on the same client, the call is queued instead and
        returns ``None``; its reply is in ``Batch.execute``'s list.
        """
        batch = _batch.get()
        if batch is not None and batch.client is self._client:
            batch.calls.append((self._scripts[name], list(keys), list(args)))
            return None
        with reaching(doing):
            return self._scripts[name](keys=list(keys), args=list(args))


class Batch:
    """Script calls queued by :func:`batched`, sent in one pipelined round trip.

    Not a transaction: each script is atomic on its own, and a failing one does
    not stop the others.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls: list[tuple[Script, list[str], list[Any]]] = []

    def execute(self, doing: str) -> list[Any]:
        """Send the queued calls; return their replies in order, a failed call's error in its place.

        Raises:
            StoreUnavailableError: Redis could not be reached at all.
        """
        if not self.calls:
            return []
        with reaching(doing):
            # EVALSHA straight on the pipeline: redis-py's own script support in
            # pipelines asks SCRIPT EXISTS first, a round trip every time.
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in self.calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies: list[Any] = pipe.execute(raise_on_error=False)
            for index, reply in enumerate(replies):
                if isinstance(reply, redis.exceptions.NoScriptError):  # first use on this server
                    script, keys, args = self.calls[index]
                    try:
                        replies[index] = script(keys=keys, args=args)
                    except redis.ResponseError as exc:  # the script's own error, in its place
                        replies[index] = exc
        return replies


_batch: ContextVar[Batch | None] = ContextVar("celery_defer_batch", default=None)


@contextmanager
def batched(client: redis.Redis) -> Iterator[Batch]:
    """Queue the script calls made on ``client`` in this block; send them with ``Batch.execute``."""
    batch = Batch(client)
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)


@contextmanager
def reaching(doing: str) -> Iterator[None]:
    """Turn a Redis failure while ``doing`` something into :class:`StoreUnavailableError`."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailableError(f"{doing}: {exc}") from exc


def connect(url: str) -> redis.Redis:
    """Return a client for the library's state store at ``url``.

    Raises:
        ConfigurationError: redis-py does not accept the URL.
    """
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"defer_redis_url {url!r} is not a Redis URL redis-py accepts: {exc}",
            key="defer_redis_url",
        ) from exc
