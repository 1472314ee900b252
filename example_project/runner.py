"""The processes the demo runs: a Redis (unless ``REDIS_URL`` names one) and a Celery worker."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import Celery

from celery_defer.embedded_redis import RedisServer

logger = logging.getLogger(__name__)

#: The directory that holds the ``example_project`` package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def demo_redis() -> Iterator[tuple[str, bool]]:
    """Yield ``(redis url, started here)``: ``REDIS_URL`` if set, else a private redis-server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, False
        return
    with RedisServer() as server:
        logger.info("started redis-server %s at %s", server.binary, server.url)
        yield server.url, True


class Worker:
    """A ``celery -A example_project worker`` subprocess, its log kept in a file.

    Args:
        redis_url: the Redis the worker uses (passed as ``REDIS_URL``).
        concurrency: worker processes.
        log_path: the worker's log file; a new temp file when omitted. Never deleted.
    """

    def __init__(self, redis_url: str, *, concurrency: int = 2, log_path: Path | None = None) -> None:
        self.redis_url = redis_url
        self.concurrency = concurrency
        self.nodename = f"example-shop-{os.getpid()}@{socket.gethostname()}"
        if log_path is None:
            # A file of its own, never inside a directory that is removed on exit
            # (the embedded Redis's is): the path printed must still be there after.
            fd, name = tempfile.mkstemp(prefix="example-shop-worker-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "example_project", "worker",
            "-l", "warning",
            "--concurrency", str(self.concurrency),
            "-n", self.nodename,
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip

    def start(self) -> None:
        env = dict(os.environ, REDIS_URL=self.redis_url)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if part
        )
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.argv(),
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        logger.info("worker %s started (pid %d)", self.nodename, self._process.pid)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, app: Celery, *, timeout_s: float) -> bool:
        """Wait until the worker answers a ping; ``False`` if it died or the time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive:
            replies = app.control.ping(destination=[self.nodename], timeout=0.5)
            if any(self.nodename in reply for reply in replies or []):
                return True
        return False

    def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (warm shutdown), then SIGKILL after ``timeout_s``; return the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("worker did not stop in %.0fs; killing it", timeout_s)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
