"""Start a private Sentinel group: a master, a replica and one sentinel, for tests and benchmarks.

Like ``celery_defer.embedded_redis`` (whose binary finder it shares), nothing on
the runtime path imports this module. All three processes are the same
``redis-server`` binary on free loopback ports (``--sentinel`` makes the sentinel).

One sentinel with quorum 1 is enough here: ``SENTINEL FAILOVER`` forces a failover
without asking other sentinels to agree, which is what a test wants (a failover at
a moment it chooses). An automatic failover after a crash would need a majority of
sentinels; production runs three or more.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from celery_defer.embedded_redis import RedisServer, find_redis_server, free_port
from celery_defer.errors import RedisServerError

logger = logging.getLogger(__name__)

#: The name the sentinel monitors the master by.
MASTER_NAME = "celery-defer"


class SentinelGroup:
    """A master, a replica of it, and a sentinel watching both, all on 127.0.0.1.

    Use it as a context manager. :attr:`url` and :attr:`transport_options` are what
    ``defer_redis_url`` and ``defer_redis_transport_options`` take; :meth:`failover`
    promotes the replica and waits until the old master follows it.

    Args:
        binary: the ``redis-server`` to run; :func:`find_redis_server` when omitted.
        durable: servers keep an fsync'd append-only file (see :class:`RedisServer`).
        down_after_ms: how long the sentinel waits before it calls a silent master down.
    """

    def __init__(
        self, *, binary: str | None = None, durable: bool = False, down_after_ms: int = 2000
    ) -> None:
        self.binary = binary or find_redis_server()
        self.master = RedisServer(binary=self.binary, durable=durable)
        self.replica = RedisServer(binary=self.binary, durable=durable)
        self.sentinel_port = free_port()
        self.down_after_ms = down_after_ms
        self._dir = tempfile.mkdtemp(prefix="celery-defer-sentinel-")
        self._sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel_port}"

    @property
    def transport_options(self) -> dict[str, Any]:
        return {"master_name": MASTER_NAME}

    def sentinel_client(self) -> redis.Redis:
        """A client of the sentinel itself (``SENTINEL ...`` commands)."""
        return redis.Redis(port=self.sentinel_port, decode_responses=True, socket_timeout=5)

    def master_port(self) -> int:
        """The port of the server the sentinel now calls master."""
        with self.sentinel_client() as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)

    def start(self, *, timeout_s: float = 20.0) -> SentinelGroup:
        """Start all three and wait until the replica is in sync and the sentinel knows both."""
        self.master.start()
        self.replica.start()
        with redis.Redis(port=self.replica.port) as replica:
            replica.replicaof("127.0.0.1", self.master.port)
        config = Path(self._dir) / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self._dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self._sentinel = subprocess.Popen(
            [self.binary, str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait(self._in_sync, "the replica to sync and the sentinel to see it", timeout_s)
        except BaseException:
            self.stop()
            raise
        logger.debug("sentinel group up: master %d, replica %d", self.master.port, self.replica.port)
        return self

    def failover(self, *, timeout_s: float = 30.0) -> None:
        """``SENTINEL FAILOVER``, then wait until the promoted replica has the old master as its replica."""
        before = self.master_port()
        with self.sentinel_client() as client:
            client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        self._wait(lambda: self.master_port() != before, "the sentinel to promote the replica", timeout_s)
        self._wait(self._in_sync, "the old master to follow the new one", timeout_s)

    def _in_sync(self) -> bool:
        if self._sentinel is not None and self._sentinel.poll() is not None:
            raise RedisServerError("the sentinel exited at start")
        try:
            port = self.master_port()
            with self.sentinel_client() as client:
                replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as master:
                info = master.info("replication")
        except (redis.RedisError, ValueError, TypeError):
            return False
        synced = info.get("role") == "master" and int(info.get("connected_slaves", 0)) >= 1
        flags = [_fields(entry).get("flags", "") for entry in replicas or []]
        known = any("s_down" not in flag and "disconnected" not in flag for flag in flags)
        return bool(synced and known and info.get("slave0", {}).get("state") == "online")

    @staticmethod
    def _wait(predicate: Any, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise RedisServerError(f"gave up waiting for {what} after {timeout_s} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the sentinel and both servers, and remove their files."""
        if self._sentinel is not None and self._sentinel.poll() is None:
            self._sentinel.terminate()
            try:
                self._sentinel.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._sentinel.kill()
                self._sentinel.wait()
        self._sentinel = None
        self.master.stop()
        self.replica.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _fields(entry: Any) -> dict[str, str]:
    # SENTINEL REPLICAS answers each replica as a flat [name, value, name, value, ...] list
    # (redis-py may already have made it a dict).
    if isinstance(entry, dict):
        return {str(key): str(value) for key, value in entry.items()}
    items = list(entry)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}
