"""Sending Redis commands with less of redis-py's per-call work: one write, one held connection.

redis-py packs a command, or a pipeline, into chunks of about 6 kB and writes
each with its own ``sendall``; the server parses the partial request after each.
A finalizing run's hundred envelopes are some 200 kB: measured on one host, the
pipeline took about 0.7 ms where the same bytes written at once took 0.2 ms.
Here the commands are packed as RESP once, written with one ``sendall``, and
their replies read in order, with redis-py's own connection, encoder and retry
policy (a lost connection is retried as its pipeline would be: the commands are
sent again).

Small calls pay for the pool instead: taking a connection and giving it back
(its "has unread data" probe, a system call, and the pool's bookkeeping) cost
about as much Python time as the round trip itself. A deferred run makes two
script calls (claim, finish), so :class:`HeldConnection` keeps one pooled
connection per process for them, used whenever no other thread of the process
is on it (a prefork pool process: always); a call that finds it busy takes one
from the pool as before. A connection is never shared by two calls at once, and
one left with a reply unread (an error, a signal mid-read) is disconnected. The
pool's probe for a connection the server closed is kept for one idle a while
(:data:`PROBE_AFTER_IDLE_S`); a busy one that fails is retried as the client's
retry policy says (the library's client: three times, reconnecting).

A write whose reply nobody waits for (the parent's clearing of its outbox,
after its messages went out) can be sent with :meth:`HeldConnection.send`:
written at once, its reply read, and handed to a callback, by the next use of
the connection, which reads it before its own request anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import redis

#: A held connection unused this long is probed before use, as the pool probes each one it hands out.
PROBE_AFTER_IDLE_S = 1.0

#: Replies a connection may hold unread before a send reads them first (they are never unbounded).
MAX_UNREAD = 64

#: A command and its arguments, as redis-py's ``execute_command`` takes them.
Command = Sequence[str | bytes | int]
#: What gets the reply of a command sent with :meth:`HeldConnection.send`.
ReplyCallback = Callable[[Any], None]

logger = logging.getLogger(__name__)


def pack(encoder: Any, commands: Sequence[Command]) -> bytes:
    """The RESP request of ``commands``, each argument encoded as redis-py's ``encoder`` would."""
    plain_utf8 = encoder.encoding.lower() in ("utf-8", "utf8") and encoder.encoding_errors == "strict"
    encode = encoder.encode
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if type(arg) is int:
                data = b"%d" % arg
            elif plain_utf8 and type(arg) is str:
                data = arg.encode()
            else:
                data = bytes(encode(arg))
            out.append(b"$%d\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
    return b"".join(out)


def _exchange(connection: Any, commands: Sequence[Command]) -> list[Any]:
    """Write ``commands`` at once on ``connection`` and read their replies (redis-py's retries)."""
    request = pack(connection.encoder, commands)

    def exchange() -> list[Any]:
        connection.send_packed_command([request])
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    def failed(error: BaseException) -> None:
        connection.disconnect()

    try:
        return list(connection.retry.call_with_retry(exchange, failed))
    except BaseException:
        connection.disconnect()  # never use a connection again with replies left unread
        raise


def send_in_one_write(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """Run ``commands`` on ``client``, not as a transaction; return their replies in order.

    A command the server refused has its ``redis.ResponseError`` in its place.

    Raises:
        redis.RedisError: the connection failed (after redis-py's retries); which
            of the commands ran is unknown.
    """
    pool = client.connection_pool
    connection: Any = pool.get_connection()  # redis-py's Connection; its methods are untyped
    try:
        return _exchange(connection, commands)
    finally:
        pool.release(connection)


class HeldConnection:
    """One connection of ``client``'s pool that this process keeps for its calls.

    Fork-safe: a child takes its own connection, never its parent's socket.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._reset()
        _held.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self._used_at = 0.0
        #: Who gets the replies of commands sent and not read yet, in order.
        self._unread: list[ReplyCallback] = []

    def call(self, command: Command) -> Any:
        """Run one command; its reply, or the ``redis.ResponseError`` the server answered with.

        Raises:
            redis.RedisError: the connection failed (after redis-py's retries).
        """
        if not self._lock.acquire(blocking=False):
            return send_in_one_write(self.client, [command])[0]  # another thread is on it
        try:
            return _exchange(self._ready(), [command])[0]
        finally:
            self._lock.release()

    def send(self, command: Command, on_reply: ReplyCallback) -> bool:
        """Write one command now; its reply goes to ``on_reply`` when the connection is next used.

        ``on_reply`` gets the reply, the ``redis.ResponseError`` the server
        answered with, or the ``redis.RedisError`` that lost it; it runs on
        whichever thread uses the connection next, and must not use it. A
        reply that never comes back (the process ends first) is never read.

        Returns:
            False when another thread is on the connection: nothing was written.

        Raises:
            redis.RedisError: the write failed; nothing waits for a reply then.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            connection = self._ready(to_send=True)
            try:
                connection.send_packed_command([pack(connection.encoder, [command])])
            except BaseException as exc:
                callbacks, self._unread = self._unread, []
                self._lose(callbacks, exc)  # earlier replies unread on it are gone too
                raise
            self._unread.append(on_reply)
            return True
        finally:
            self._lock.release()

    def read_replies(self) -> None:
        """Read every reply left unread on the connection now, handing each to its callback.

        For a caller that sent a command with :meth:`send` and then did other
        work while it travelled: this waits for its reply (and earlier ones).
        """
        with self._lock:
            if self._connection is not None and self._unread:
                self._read_unread()

    def _ready(self, *, to_send: bool = False) -> Any:
        """The connection, with no reply left unread on it; call with the lock held.

        ``to_send``: for a command whose reply is read later, earlier replies
        may stay unread, unless the connection was idle long enough to be
        probed or :data:`MAX_UNREAD` of them wait.
        """
        now = time.monotonic()
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        else:
            idle = now - self._used_at > PROBE_AFTER_IDLE_S
            if self._unread and (idle or not to_send or len(self._unread) >= MAX_UNREAD):
                self._read_unread()
            if idle:
                _probe(self._connection)
        self._used_at = now
        return self._connection

    def _read_unread(self) -> None:
        callbacks, self._unread = self._unread, []
        for at, on_reply in enumerate(callbacks):
            reply: Any
            try:
                reply = self._connection.read_response()
            except redis.ResponseError as exc:
                reply = exc
            except (redis.RedisError, OSError) as exc:
                self._lose(callbacks[at:], exc)  # the rest of the replies went with it
                return
            except BaseException:
                self._connection.disconnect()
                raise  # interrupted mid-read (a signal): their callbacks never hear
            _hand(on_reply, reply)

    def _lose(self, callbacks: list[ReplyCallback], exc: BaseException) -> None:
        """Drop the connection; the callbacks of its unread replies get the error instead."""
        self._connection.disconnect()
        lost = exc if isinstance(exc, redis.RedisError) else redis.ConnectionError(str(exc))
        for on_reply in callbacks:
            _hand(on_reply, lost)


def _hand(on_reply: ReplyCallback, reply: Any) -> None:
    try:
        on_reply(reply)
    except Exception:
        logger.exception("a reply callback failed")


def _probe(connection: Any) -> None:
    # What the pool does before it hands a connection out: one with data waiting,
    # or that the server closed, is replaced by a fresh one.
    try:
        if connection.can_read():
            connection.disconnect()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        connection.disconnect()


_held: weakref.WeakSet[HeldConnection] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's lock may have been held by another thread, and its socket is
    # the parent's: the child starts without either.
    for held in list(_held):
        held._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
