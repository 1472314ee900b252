"""Every Redis key celery_defer writes, in one place.

All keys start with the ``defer_key_prefix`` setting. Values that come from
user data (limit keys) are hashed before they become part of a key, so a key
never grows with the data and never carries it in clear.
"""

from __future__ import annotations

import hashlib
import zlib

#: Recorded defers of one parent run (hash: defer id -> record), until dispatched.
OUTBOX = "outbox"
#: Parent runs that finalized and whose defers await dispatch (zset: run id -> due ms).
FINALIZED = "finalized"
#: Attempts of parent runs with recorded defers, while they execute (zset: run id -> lease end ms).
ATTEMPTS = "attempts"
#: A deferred run in progress (string: holder token, with a lease).
CLAIM = "claim"
#: Deferred runs claimed and not yet finished (zset: run id -> ms after which,
#: unclaimed, recovery sends them again).
INFLIGHT = "inflight"
#: The message that starts a deferred run in flight again (string, JSON).
RESEND = "resend"
#: Deferred runs that finalized, grouped in buckets (string of fixed-width
#: entries: a run's :func:`done_marker` then its outcome code), one per
#: generation of ``defer_done_ttl`` seconds; see ``celery_defer.deferred.done_markers``.
DONE = "done"
#: Counters the library keeps for operators (hash: name -> count).
STATS = "stats"
#: Flow-control limiter state (see ``celery_defer.limits``).
LIMIT = "limit"
#: Kept step results of one run (hash: hashed step id -> result), see ``celery_defer.steps``.
STEPS = "steps"

#: How long recorded defers wait for their parent run to finalize.
OUTBOX_TTL_S = 7 * 24 * 3600
#: How long a finished deferred run is remembered by default (``defer_done_ttl``).
DONE_TTL_S = 7 * 24 * 3600
#: Shards per-run keys are spread over (the hash tag ``{<prefix>:<shard>}``), so a
#: Redis Cluster keeps each run's keys in one slot. Must agree with the shard of
#: every other per-run key: ``crc32(run id) % SHARDS``.
SHARDS = 64
#: Done-marker buckets within one shard: 64 x 64 = 4096 buckets in all, so ten
#: million markers a generation make ~50 KB buckets (a lookup scans one).
DONE_BUCKETS_PER_SHARD = 64
#: Hex digits of a run id's done marker: 80 bits.
DONE_MARKER_HEX = 20
#: How long a run's kept steps wait for its next attempt (as long as its defers do).
STEPS_TTL_S = OUTBOX_TTL_S
#: How long kept steps outlive their run's finalization: enough for a late
#: redelivery of the last message to still skip them, short enough not to pile up.
STEPS_FINAL_TTL_S = 600


class KeySpace:
    """Builds the Redis keys under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def outbox(self, run_id: str) -> str:
        return f"{self.prefix}:{OUTBOX}:{run_id}"

    def finalized(self) -> str:
        return f"{self.prefix}:{FINALIZED}"

    def attempts(self) -> str:
        return f"{self.prefix}:{ATTEMPTS}"

    def claim(self, run_id: str) -> str:
        return f"{self.prefix}:{CLAIM}:{run_id}"

    def done_bucket(self, run_id: str, generation: int) -> str:
        """The bucket holding ``run_id``'s done marker in ``generation`` (a sub-bucket of its shard)."""
        shard = zlib.crc32(run_id.encode("utf-8")) % SHARDS
        sub = int.from_bytes(_run_digest(run_id)[10:], "big") % DONE_BUCKETS_PER_SHARD
        return f"{{{self.prefix}:{shard}}}:{DONE}:{sub}:{generation}"

    def inflight(self) -> str:
        return f"{self.prefix}:{INFLIGHT}"

    def resend(self, run_id: str) -> str:
        return f"{self.prefix}:{RESEND}:{run_id}"

    def steps(self, run_id: str) -> str:
        return f"{self.prefix}:{STEPS}:{run_id}"

    def stats(self) -> str:
        return f"{self.prefix}:{STATS}"

    def limit(self, kind: str, function_id: str, key_value: str | None = None) -> str:
        """Key of one flow-control limiter, e.g. ``prefix:limit:throttle:fn:<hash>``."""
        base = f"{self.prefix}:{LIMIT}:{kind}:{function_id}"
        if key_value is None:
            return base
        return f"{base}:{hash_key_value(key_value)}"


def done_marker(run_id: str) -> str:
    """The 80-bit digest (20 hex digits) that stands for ``run_id`` in its done bucket."""
    return _run_digest(run_id)[:10].hex()


def _run_digest(run_id: str) -> bytes:
    return hashlib.blake2b(run_id.encode("utf-8"), digest_size=12, person=b"cd-done").digest()


def hash_key_value(value: str) -> str:
    """Hash a user key value so it can be part of a Redis key."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=12).hexdigest()


# Sub-keys a concurrency limiter keeps beside its key (the zset of holders).


def waiters_key(key: str) -> str:
    """Key of the FIFO wait queue beside a concurrency key."""
    return f"{key}:waiters"


def seen_key(key: str) -> str:
    """Key of the waiters' last-seen times beside a concurrency key."""
    return f"{key}:seen"


def avg_key(key: str) -> str:
    """Key of the average run duration beside a concurrency key."""
    return f"{key}:avg"


def cancel_key(key: str) -> str:
    """Key beside a singleton lock naming the holder already asked to stop (mode ``cancel``)."""
    return f"{key}:cancel"
