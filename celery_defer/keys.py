"""Every Redis key celery_defer writes, in one place, and the one place that knows their hash tags.

All keys carry the ``defer_key_prefix`` setting. Values that come from user data
(limit keys) are hashed before they become part of a key, so a key never grows
with the data and never carries it in clear.

Why hash tags: on Redis Cluster a Lua script may only touch keys of one hash slot
(else ``CROSSSLOT``), and the scripts are what makes "nothing lost" and "never
twice" hold: a run's outbox and the index that lets recovery find it change in one
atomic call. So every run belongs to one of :data:`SHARDS` shards (a stable hash of
its run id), every per-run key carries its shard's tag ``{<prefix>:<shard>}``, and
every index (due outboxes, leased attempts, runs in flight, counters) is one key
per shard with that same tag: each per-run script stays single-slot and atomic,
and recovery walks the shards. A flow-control guard's keys share the guard's own
tag (the whole key is the tag; sub-keys are suffixes outside the braces). On a
single Redis the same keys are used; the braces mean nothing there.
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
#: Concurrency lines with parked runs, for recovery (zset: "<limit>:<lease ms>:<guard
#: key>" -> when a run last parked, ms); never touched by a guard's own scripts.
LINES = "lines"
#: Kept step results of one run (hash: hashed step id -> result), see ``celery_defer.steps``.
STEPS = "steps"

#: How many shards per-run keys and their indexes are spread over. Fixed: changing it
#: moves runs to other shards, so whatever is pending under the old count would
#: sit where recovery no longer looks. 64 spreads the indexes evenly enough over
#: up to a dozen or so cluster primaries (64 tags land on 64 slots), while a
#: recovery pass stays a few pipelined round trips (one script per shard and index).
SHARDS = 64

#: How long recorded defers wait for their parent run to finalize.
OUTBOX_TTL_S = 7 * 24 * 3600
#: How long a finished deferred run is remembered by default (``defer_done_ttl``).
DONE_TTL_S = 7 * 24 * 3600
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
    """Builds the Redis keys under one prefix.

    Per-run keys take the run id; an index takes the run id it is about, or a
    shard number (``0 <= shard < SHARDS``) when recovery or a reader walks them all.
    """

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @staticmethod
    def shard(run_id: str) -> int:
        """The shard of a run: the same in every process and on every host."""
        return zlib.crc32(run_id.encode("utf-8")) % SHARDS

    @staticmethod
    def shards() -> range:
        """Every shard number, for walking an index."""
        return range(SHARDS)

    def tag(self, of: str | int) -> str:
        """The hash tag of a run's shard, or of shard ``of`` when it is a number."""
        shard = of if isinstance(of, int) else self.shard(of)
        return f"{{{self.prefix}:{shard}}}"

    def outbox(self, run_id: str) -> str:
        return f"{self.tag(run_id)}:{OUTBOX}:{run_id}"

    def finalized(self, of: str | int) -> str:
        """The finalized index of a run's shard (or of shard ``of``)."""
        return f"{self.tag(of)}:{FINALIZED}"

    def attempts(self, of: str | int) -> str:
        """The leased-attempts index of a run's shard (or of shard ``of``)."""
        return f"{self.tag(of)}:{ATTEMPTS}"

    def claim(self, run_id: str) -> str:
        return f"{self.tag(run_id)}:{CLAIM}:{run_id}"

    def done_bucket(self, run_id: str, generation: int) -> str:
        """The bucket holding ``run_id``'s done marker in ``generation`` (a sub-bucket of its shard)."""
        sub = int.from_bytes(_run_digest(run_id)[10:], "big") % DONE_BUCKETS_PER_SHARD
        return f"{self.tag(run_id)}:{DONE}:{sub}:{generation}"

    def inflight(self, of: str | int) -> str:
        """The runs-in-flight index of a run's shard (or of shard ``of``)."""
        return f"{self.tag(of)}:{INFLIGHT}"

    def resend(self, run_id: str) -> str:
        return f"{self.tag(run_id)}:{RESEND}:{run_id}"

    def steps(self, run_id: str) -> str:
        return f"{self.tag(run_id)}:{STEPS}:{run_id}"

    def stats(self, of: str | int) -> str:
        """The counters of a run's shard (or of shard ``of``); readers sum every shard."""
        return f"{self.tag(of)}:{STATS}"

    def lines(self) -> str:
        """The index of concurrency lines with parked runs: one key, its own hash tag."""
        return f"{{{self.prefix}:{LINES}}}"

    def limit(self, kind: str, function_id: str, key_value: str | None = None) -> str:
        """Key of one flow-control limiter, e.g. ``{prefix:limit:throttle:fn:<hash>}``.

        The whole key is its hash tag, so the sub-keys beside it (:func:`waiters_key`
        and the others, which append outside the braces) share its slot.
        """
        base = f"{self.prefix}:{LIMIT}:{kind}:{function_id}"
        if key_value is not None:
            base = f"{base}:{hash_key_value(key_value)}"
        return f"{{{base}}}"


def keyed_limit(limit_key: str, key_hash: str) -> str:
    """The key of one hashed key value of a limiter whose unkeyed key is ``limit_key``."""
    return f"{limit_key[:-1]}:{key_hash}}}"


def done_marker(run_id: str) -> str:
    """The 80-bit digest (20 hex digits) that stands for ``run_id`` in its done bucket."""
    return _run_digest(run_id)[:10].hex()


def _run_digest(run_id: str) -> bytes:
    return hashlib.blake2b(run_id.encode("utf-8"), digest_size=12, person=b"cd-done").digest()


def hash_key_value(value: str) -> str:
    """Hash a user key value so it can be part of a Redis key."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=12).hexdigest()


# Sub-keys a concurrency limiter keeps beside its key (the zset of holders). They
# append to the key outside its braces, so they stay in its hash slot.


def waiters_key(key: str) -> str:
    """Key of the FIFO wait queue beside a concurrency key."""
    return f"{key}:waiters"


def seen_key(key: str) -> str:
    """Key of the waiters' last-seen times beside a concurrency key."""
    return f"{key}:seen"


def avg_key(key: str) -> str:
    """Key of the average run duration beside a concurrency key."""
    return f"{key}:avg"


def booked_key(key: str) -> str:
    """Key of the runs booked to start, beside a throttle key (zset: run id -> start ms)."""
    return f"{key}:booked"


def began_key(key: str) -> str:
    """Key of the pace of actual starts beside a throttle key (string: next start, ms)."""
    return f"{key}:began"


def kept_starts_key(key: str) -> str:
    """Key of the starts kept for late booked runs beside a throttle key (hash: run id -> ms)."""
    return f"{key}:kept"


def line_key(key: str) -> str:
    """Key of the line of parked runs beside a concurrency key (list of run ids, FIFO)."""
    return f"{key}:line"


def parked_key(key: str) -> str:
    """Key of the parked runs' messages beside a concurrency key (hash: run id -> JSON)."""
    return f"{key}:parked"


def handed_key(key: str) -> str:
    """Key of the runs given a slot and not begun yet beside a concurrency key (zset: run id -> ms)."""
    return f"{key}:handed"


def line_entry(key: str, *, limit: int, lease_ms: int) -> str:
    """Member of the lines index naming a concurrency key with what restarting it needs."""
    return f"{limit}:{lease_ms}:{key}"


def parse_line_entry(entry: str) -> tuple[str, int, int]:
    """``(key, limit, lease_ms)`` of a lines index member.

    Raises:
        ValueError: the member is not one :func:`line_entry` makes.
    """
    limit, lease_ms, key = entry.split(":", 2)
    return key, int(limit), int(lease_ms)


def cancel_key(key: str) -> str:
    """Key beside a singleton lock naming the holder already asked to stop (mode ``cancel``)."""
    return f"{key}:cancel"
