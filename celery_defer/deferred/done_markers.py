"""Done markers: what a completed deferred run leaves behind, in about 30 bytes.

A late copy of a finished run (a re-sent outbox, a recovery pass, a broker
redelivery) must be acknowledged unrun for ``defer_done_ttl``. One string key
per run costs over 100 bytes of Redis memory (dict entry, key, value object,
expire entry); a busy app finishes millions of runs a week. So markers are
grouped: each run id maps to one of 4096 bucket keys (a sub-bucket of its shard,
so a Redis Cluster keeps it in the run's slot), and a bucket is one string of
fixed-width entries (an 80-bit digest of the run id in hex, then a one-letter
outcome) that a script scans with a plain ``string.find``.

Retention: time is cut into generations of ``defer_done_ttl`` (Redis time).
Markers are written to the current generation's bucket and looked up in it and
the previous one; a bucket expires two generations after its own began. A
marker is therefore kept at least ``defer_done_ttl`` and at most twice it, and
every bucket key has a TTL (SPEC 8.3).

Collisions: a run is taken for done (and never runs) only if its 80-bit digest
equals a marker of another run kept in its two buckets. With 10 million markers
kept and 10^9 lookups, the chance that any lookup ever does is below
1e9 * 1e7 / 2**80 ~ 8e-9 even if every marker were compared; a lookup compares
only with its own buckets' (~2 * 1e7 / 4096), which makes it ~4e-12.
"""

from __future__ import annotations

from typing import Any

from celery_defer import keys
from celery_defer.redis_clock import RedisClock

#: One-letter codes of the outcomes a run finalizes with (none of them a hex digit).
OUTCOME_CODES = {"succeeded": "S", "failed": "F", "dropped": "D", "revoked": "R", "lost": "L"}
_OUTCOMES = {code: outcome for outcome, code in OUTCOME_CODES.items()}
_OTHER = "X"


def outcome_code(outcome: str) -> str:
    """The code stored for ``outcome`` ('' stays '': the run is not finalized)."""
    if not outcome:
        return ""
    return OUTCOME_CODES.get(outcome, _OTHER)


def outcome_of(code: str) -> str:
    """The outcome a stored code stands for, as the duplicate log line says it."""
    return _OUTCOMES.get(code, "finished")


def generation_mismatch(reply: Any) -> int | None:
    """The generation a script said is current, when it refused the one it was given."""
    if isinstance(reply, list) and len(reply) == 2 and reply[0] == "generation":
        return int(reply[1])
    return None


class DoneMarkers:
    """Keys and arguments of one app's done markers, for the run scripts.

    Args:
        keyspace: the app's keys.
        ttl_s: ``defer_done_ttl``, the length of a generation.
        clock: Redis time as this process reads it: the guess of the current
            generation (the scripts check it against Redis ``TIME`` and name the
            right one when a boundary was just crossed).
    """

    def __init__(self, keyspace: keys.KeySpace, *, ttl_s: float, clock: RedisClock) -> None:
        self.keys = keyspace
        self.ttl_s = ttl_s
        self.clock = clock

    def generation(self) -> int:
        """The current generation, as this process's clock reads it."""
        return int(self.clock.guess_ms() / 1000 // self.ttl_s)

    def buckets(self, run_id: str, generation: int) -> list[str]:
        """The buckets a script reads: the previous generation's, then ``generation``'s."""
        return [self.keys.done_bucket(run_id, generation - 1), self.keys.done_bucket(run_id, generation)]

    def args(self, run_id: str, generation: int) -> list[Any]:
        """Marker, generation and ttl, in the order the scripts take them."""
        return [keys.done_marker(run_id), generation, repr(self.ttl_s)]
