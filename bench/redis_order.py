"""The order runs asked their guard and started, as the benchmark's Redis saw it.

Stamps taken in the worker's pool processes race with what they stamp: a run's
first delivery is stamped before the run asks its guard (its claim, a cold
process's first connection come between), so two runs delivered a moment apart
to two processes can ask the throttle, and so be booked, in the other order. The
asking is the guard's Lua script, and Redis runs one command at a time: the
order of those scripts is the order the runs asked, and the order of the
handlers' ``RPUSH starts`` is the order they started. ``MONITOR`` streams both,
in that order and stamped by the one Redis clock.

A run's ask is its first guard script (an ``EVALSHA`` on a ``:limit:`` key naming
the run: a throttle's booking, a concurrency slot's first request); an
``EVALSHA`` its client follows with ``SCRIPT LOAD`` failed (``NOSCRIPT``, a cold
server) and was sent again, so it does not count.
"""

from __future__ import annotations

import threading
from types import TracebackType

import redis

#: db of the library's state and of the bench's records (see ``waits_app.py``).
STATE_DB = 2
RECORDS_DB = 3


class RedisOrder:
    """Listens to ``MONITOR`` on ``url`` while in the ``with`` block.

    After it: :attr:`asked` (run id -> (position, Redis time ns) of its first
    guard check) and :attr:`started` ((run id, Redis time ns) in start order).
    """

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._monitor = self._client.monitor()
        self._seen: list[tuple[int, int, str, str]] = []
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self.asked: dict[str, tuple[int, int]] = {}
        self.started: list[tuple[str, int]] = []

    def __enter__(self) -> RedisOrder:
        self._monitor.__enter__()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A marker command ends the stream: everything before it has been read.
        self._client.execute_command("ECHO", "redis-order-end")
        self._thread.join(timeout=30)
        self._monitor.__exit__(kind, exc, tb)
        self._client.close()
        self._sort()

    def _listen(self) -> None:
        for entry in self._monitor.listen():
            command: str = entry["command"]
            if command == "ECHO redis-order-end":
                return
            if entry["client_type"] == "lua":
                continue
            if command.startswith(("EVALSHA ", "RPUSH starts ", "SCRIPT LOAD ")):
                client = f"{entry['client_address']}:{entry['client_port']}"
                self._seen.append((entry["db"], round(entry["time"] * 1e9), client, command))

    def _sort(self) -> None:
        calls: list[tuple[int, list[str]]] = []  # guard scripts: (ns, arguments)
        last_call: dict[str, int | None] = {}  # client -> its last EVALSHA, if a guard's
        for db, ns, client, command in self._seen:
            words = command.split(" ")
            if db == RECORDS_DB and words[0] == "RPUSH":
                self.started.append((words[2], ns))
            elif words[0] == "SCRIPT":
                # That client's last EVALSHA failed (NOSCRIPT): it is sent again.
                failed = last_call.pop(client, None)
                if failed is not None:
                    calls[failed] = (0, [])
            elif db == STATE_DB and words[0] == "EVALSHA":
                keys = words[3 : 3 + int(words[2])]
                last_call[client] = None
                if any(":limit:" in key for key in keys):
                    last_call[client] = len(calls)
                    calls.append((ns, words[3 + len(keys) :]))
        runs = {run for run, _ in self.started}
        for ns, args in calls:
            for run in runs.intersection(args):
                self.asked.setdefault(run, (len(self.asked), ns))
