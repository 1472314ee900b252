"""How celery_defer runs its Lua scripts: one loader, batches, replica acks.

The clients themselves, and the error policy every call here goes through
(``reaching``), are in ``celery_defer.redis_clients``.

- Scripts live in ``celery_defer/lua/<group>/<name>.lua``; each is loaded with
  ``lua/prelude.lua`` in front, which gives every script the same clock
  (``redis_now_ms()``, Redis ``TIME``). A line ``--#include <group>/<name>``
  pastes in a file of shared Lua functions.
- Script calls made inside :func:`batched` are queued and sent together in one
  pipelined round trip (``Batch.execute``): an attempt's last writes cost one.
- On one server with no replicas to wait for, a single call is one ``EVALSHA``
  written at once on the connection the process holds (``redis_wire``): a
  deferred run's claim and finish pay no pool bookkeeping.
- With replicas that must acknowledge writes (Sentinel: one, by default), a
  script, or a batch, is followed by ``WAIT`` on the same connection: a failover
  then promotes a replica that holds every write a caller was told succeeded, and
  a write the replicas did not confirm fails like any other (callers try again).
- On Redis Cluster every key a script gets shares one hash slot
  (``celery_defer.keys``), so each call goes to the node that owns it, and a
  pipeline (a batch, a walk over every shard) is split by node.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from celery_defer.errors import StoreUnavailableError
from celery_defer.redis_clients import StoreClient, acks_of, reaching
from celery_defer.redis_urls import ReplicaAcks
from celery_defer.redis_wire import HeldConnection

_INCLUDE = re.compile(r"^--#include ([\w/]+)$", re.MULTILINE)
_COMMENT_LINE = re.compile(r"^[ \t]*--.*$", re.MULTILINE)


logger = logging.getLogger(__name__)

#: The scripts' folder, found when this module is imported. Finding it later goes
#: through the import machinery (``importlib.resources`` imports its readers on
#: first use): a pool process forked while another thread of its parent was in
#: there inherits that module's import lock held, and hangs on it for good.
_LUA = resources.files("celery_defer") / "lua"
_PRELUDE = (_LUA / "prelude.lua").read_text("utf-8")


@cache
def lua_source(name: str) -> str:
    """Return the text of script ``name`` (``"outbox/record"``), prelude first, includes pasted in."""
    body = (_LUA / f"{name}.lua").read_text("utf-8")
    body = _INCLUDE.sub(lambda match: (_LUA / f"{match[1]}.lua").read_text("utf-8"), body)
    # Scripts sent as text (``send_later``'s EVAL) carry it on every call: the
    # comment lines go, left empty so the line numbers in Redis's errors do not move.
    return _COMMENT_LINE.sub("", _PRELUDE + body)


class Scripts:
    """The scripts of one group, registered on one client, called by short name.

    Args:
        client: the Redis client.
        group: the folder under ``lua/`` (``outbox``, ``runs``, ``limits``, ``steps``).
        names: the scripts of that folder to register.
    """

    def __init__(self, client: StoreClient, group: str, names: Sequence[str]) -> None:
        self._client = client
        self._acks = acks_of(client)
        # One server, no replicas to wait for: a call is one EVALSHA on the held connection.
        self._held = (
            _held_connection(client)
            if not self._acks.replicas and not isinstance(client, RedisCluster)
            else None
        )
        self._scripts: dict[str, Script] = {
            name: client.register_script(lua_source(f"{group}/{name}")) for name in names
        }

    def __call__(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        doing: str,
        then: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run script ``name``; ``doing`` says what for, in the error when Redis fails.

        Inside :func:`batched` on the same client, the call is queued instead and
        returns ``None``; its reply is in ``Batch.execute``'s list, and goes to
        ``then`` once the batch is sent. Outside a batch, ``then`` gets the reply
        at once, and it is returned as well.
        """
        batch = _batch.get()
        if batch is not None and batch.client is self._client:
            if then is not None:
                batch.thens[len(batch.calls)] = then
            batch.calls.append((self._scripts[name], list(keys), list(args)))
            return None
        reply = self._run(name, keys, args, doing=doing)
        if then is not None:
            then(reply)
        return reply

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any], *, doing: str) -> Any:
        with reaching(doing):
            if self._held is not None:
                return _evalsha_held(self._held, self._scripts[name], keys, args)
            if not self._acks.replicas:
                return self._scripts[name](keys=list(keys), args=list(args))
            replies = _send_acked(self._client, self._acks, [(self._scripts[name], list(keys), list(args))])
        _check_acks(replies[-1], self._acks, doing)
        if isinstance(replies[0], Exception):
            raise StoreUnavailableError(f"{doing}: {replies[0]}") from replies[0]
        return replies[0]

    def send_later(
        self, name: str, keys: Sequence[str], args: Sequence[Any], *, on_reply: Callable[[Any], None]
    ) -> bool:
        """Write a call of script ``name`` now; its reply goes to ``on_reply`` later.

        For a write nobody waits on: the reply is read when this process next
        uses the held connection (see ``HeldConnection.send``). Sent as ``EVAL``
        with the script's text, so a server that forgot its scripts still runs it.

        Returns:
            False, having written nothing, where a call cannot be left unread
            (no held connection, a batch open, another thread on it, a failed
            write): make the call with ``__call__`` instead.
        """
        if self._held is None or _batch.get() is not None:
            return False
        script = self._scripts[name]
        try:
            return self._held.send(["EVAL", _text(script), len(keys), *keys, *args], on_reply)
        except redis.RedisError:
            return False

    def read_replies(self) -> None:
        """Wait for the replies of calls :meth:`send_later` wrote, and hand them out now.

        A reply lost with the connection reaches its callback as the error. An
        exception that interrupts the read (a signal's: a soft time limit)
        propagates, and the callbacks of the replies not read never hear.
        """
        if self._held is not None:
            self._held.read_replies()

    def each(
        self, name: str, calls: Sequence[tuple[Sequence[str], Sequence[Any]]], *, doing: str
    ) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)`` in one pipeline (one round trip per node).

        For walks over every shard of an index.
        """
        script = self._scripts[name]
        with reaching(doing):
            replies = _send_acked(self._client, self._acks, [(script, list(k), list(a)) for k, a in calls])
        if self._acks.replicas:
            _check_acks(replies.pop(), self._acks, doing)
        for reply in replies:
            if isinstance(reply, Exception):
                raise StoreUnavailableError(f"{doing}: {reply}") from reply
        return replies


def _held_connection(client: redis.Redis) -> HeldConnection:
    """The held connection of ``client``, shared by every group of scripts on it."""
    held: HeldConnection | None = client.__dict__.get("_celery_defer_held")
    if held is None:
        held = client.__dict__.setdefault("_celery_defer_held", HeldConnection(client))
    return held


def _evalsha_held(held: HeldConnection, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """``script(keys, args)`` on the held connection, its request written at once.

    A finalizing run records 100 defers in one call (one write, see ``redis_wire``);
    a deferred run's claim and finish are small calls, where the pool's own work
    per call is what this saves.
    """
    for _ in range(2):
        reply = held.call(["EVALSHA", script.sha, len(keys), *keys, *args])
        if not isinstance(reply, NoScriptError):
            break
        script.sha = held.client.script_load(script.script)  # a server that restarted, or another one
    if isinstance(reply, Exception):
        raise reply
    return reply


def _text(script: Script) -> str | bytes:
    text = script.script
    return bytes(text) if isinstance(text, memoryview) else text


class Batch:
    """Script calls queued by :func:`batched`, sent in one pipelined round trip.

    Not a transaction: each script is atomic on its own, and a failing one does
    not stop the others.
    """

    def __init__(self, client: StoreClient) -> None:
        self.client = client
        self.calls: list[tuple[Script, list[str], list[Any]]] = []
        #: What a queued call's reply goes to, by the call's place in ``calls``.
        self.thens: dict[int, Callable[[Any], None]] = {}

    def execute(self, doing: str) -> list[Any]:
        """Send the queued calls; return their replies in order, a failed call's error in its place.

        Raises:
            StoreUnavailableError: Redis could not be reached at all.
        """
        if not self.calls:
            return []
        with reaching(doing):
            replies = _send_acked(self.client, acks_of(self.client), self.calls)
        acks = acks_of(self.client)
        if acks.replicas:
            _check_acks(replies.pop(), acks, doing)
        for index, then in self.thens.items():
            reply = replies[index]
            if isinstance(reply, Exception):
                continue  # the caller sees it in its place in the replies
            try:
                then(reply)
            except Exception:
                logger.warning("%s: handling the reply of a call sent with it failed", doing, exc_info=True)
        return replies


def _send_acked(
    client: StoreClient, acks: ReplicaAcks, calls: Sequence[tuple[Script, list[str], list[Any]]]
) -> list[Any]:
    """Send ``calls`` in one pipeline, then ``WAIT`` when ``acks`` asks for replicas.

    Replies come in order, a failed call's error in its place, then (with ``acks``)
    the fewest replicas any ``WAIT`` saw. EVALSHA goes straight on the pipeline
    (redis-py's own script support in pipelines asks SCRIPT EXISTS first, a round
    trip every time); calls the server had no script for (first use, or a promoted
    replica) are sent again, alone, once their scripts are loaded.
    """
    replies = _pipelined(client, acks, calls)
    acked = replies.pop() if acks.replicas else None
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
    if missing:
        for index in missing:
            script = calls[index][0]
            script.sha = client.script_load(script.script)
        again = _pipelined(client, acks, [calls[index] for index in missing])
        if acks.replicas:
            acked_again = again.pop()
            if not isinstance(acked, Exception):
                acked = acked_again if isinstance(acked_again, Exception) else min(acked, acked_again)
        for index, reply in zip(missing, again, strict=True):
            replies[index] = reply
    return [*replies, acked] if acks.replicas else replies


def _pipelined(
    client: StoreClient, acks: ReplicaAcks, calls: Sequence[tuple[Script, list[str], list[Any]]]
) -> list[Any]:
    # WAIT counts the writes of its own connection: one pipeline keeps them on one.
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        # execute_command: redis-py refuses pipe.evalsha on a cluster (its pipeline
        # cannot load a script); NOSCRIPT replies are handled by _send_acked.
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    if acks.replicas:
        pipe.wait(acks.replicas, acks.timeout_ms)
    return pipe.execute(raise_on_error=False)


def _check_acks(acked: Any, acks: ReplicaAcks, doing: str) -> None:
    if isinstance(acked, Exception):
        raise StoreUnavailableError(f"{doing}: waiting for replicas: {acked}") from acked
    if int(acked) < acks.replicas:
        raise StoreUnavailableError(
            f"{doing}: {acked} of {acks.replicas} replicas confirmed the write within {acks.timeout_ms} ms"
        )


_batch: ContextVar[Batch | None] = ContextVar("celery_defer_batch", default=None)


@contextmanager
def batched(client: StoreClient) -> Iterator[Batch]:
    """Queue the script calls made on ``client`` in this block; send them with ``Batch.execute``."""
    batch = Batch(client)
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
