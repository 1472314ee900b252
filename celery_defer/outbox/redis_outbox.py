"""The Redis outbox: a parent run's recorded defers, kept until they are sent.

Per run, a hash ``outbox:<run id>`` maps defer id to ``"<seq>|<record>"`` (first
payload wins, ``seq`` keeps call order). Two zsets index runs across the fleet:
``finalized`` (runs whose defers await dispatch, scored by when recovery may send
them) and ``attempts`` (running attempts of runs that have recorded defers,
scored by the end of their lease; see ``celery_defer.outbox.recovery``). Each index
is one zset per shard, beside the outboxes of its shard's runs (``celery_defer.keys``),
so every script here touches one hash slot; recovery walks every shard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from celery_defer import keys
from celery_defer.errors import StoreUnavailableError
from celery_defer.outbox.record import DeferRecord, decode_outbox
from celery_defer.redis_clients import StoreClient, reaching
from celery_defer.redis_clock import RedisClock
from celery_defer.redis_io import Scripts
from celery_defer.settings import Settings

logger = logging.getLogger(__name__)

#: How long after a run finalizes its defers wait for the finalizing hook before
#: a recovery pass may send them instead.
DISPATCH_GRACE_MS = 5_000

_TS = DeferRecord._fields.index("ts_ns")

_SCRIPTS = ("record", "finalize", "complete", "attempt_begin", "attempt_renew")


class RedisOutbox:
    """The outbox of one app's parent runs, in one Redis database.

    Every method raises :class:`~celery_defer.StoreUnavailableError` when Redis fails.
    """

    def __init__(
        self,
        client: StoreClient,
        settings: Settings,
        keyspace: keys.KeySpace,
        clock: RedisClock | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.keys = keyspace
        self.clock = clock or RedisClock(client)
        self._script = Scripts(client, "outbox", _SCRIPTS)
        self._take_due = Scripts(client, "indexes", ("take_due",))

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)

    def recorded_ids(self, run_id: str) -> set[str]:
        """Return the defer ids earlier attempts of ``run_id`` recorded.

        When there are some, the attempt now starting is leased in the attempts
        zset until it records (renew it with :meth:`renew_attempt`).
        """
        fields = self._script(
            "attempt_begin",
            [self.keys.outbox(run_id), self.keys.attempts(run_id)],
            [run_id, self.lease_ms],
            doing=f"reading the outbox of {run_id}",
        )
        return set(fields)

    def renew_attempt(self, run_id: str) -> bool:
        """Extend the lease of a running attempt; False once it ended."""
        renewed = self._script(
            "attempt_renew",
            [self.keys.attempts(run_id)],
            [run_id, self.lease_ms],
            doing=f"renewing the attempt of {run_id}",
        )
        return bool(renewed)

    def claim_stale_attempts(self, *, limit: int, lease_ms: int) -> list[str]:
        """Take runs whose attempt lease ran out (their worker died mid-attempt), ``limit`` per shard."""
        return self._walk(self.keys.attempts, limit, lease_ms, doing="looking for dead attempts")

    def record(
        self, run_id: str, records: list[DeferRecord], *, final: bool, next_attempt_in_s: float = 0.0
    ) -> list[DeferRecord]:
        """Record an attempt's defers; when the run finalizes, return all of its records.

        When it does not (a retry, a requeue), the attempt stays leased for
        ``next_attempt_in_s`` plus one lease: long enough for the next attempt to
        begin and take the lease over, short enough that recovery finalizes the run
        if this worker dies before that attempt was sent.
        """
        kept, script_keys, argv = self._record_call(run_id, records, final, next_attempt_in_s)
        values = self._script("record", script_keys, argv, doing=f"recording the defers of {run_id}")
        return _recorded(kept, values)

    def record_later(self, run_id: str, records: list[DeferRecord]) -> PendingRecord | None:
        """Write the record of a finalizing attempt's defers now; wait for its reply later.

        Once this returns, the write has left this process: a worker killed
        from here on still leaves the records in the outbox (Redis runs a
        command it has read whatever became of its sender). The caller may
        publish them meanwhile, then :meth:`PendingRecord.wait`.

        Returns:
            None, having written nothing, where the call cannot be left unread
            (see ``Scripts.send_later``): call :meth:`record` instead.
        """
        kept, script_keys, argv = self._record_call(run_id, records, True, 0.0)
        pending = PendingRecord(kept, self._script)
        if not self._script.send_later("record", script_keys, argv, on_reply=pending.take):
            return None
        return pending

    def _record_call(
        self, run_id: str, records: list[DeferRecord], final: bool, next_attempt_in_s: float
    ) -> tuple[list[DeferRecord], list[str], list[Any]]:
        """The records as kept, and the keys and arguments of the ``record`` script."""
        hold_ms = int((max(next_attempt_in_s, 0.0) + self.settings.lease_s) * 1000)
        argv: list[Any] = [run_id, keys.OUTBOX_TTL_S, "1" if final else "0", DISPATCH_GRACE_MS, hold_ms]
        # defer() stamps its records with the local clock (no I/O at the call);
        # they are kept in Redis time, which every host that compares them shares.
        offset_ns = self.clock.offset_ns() if records else 0
        # (NamedTuple._replace builds a dict per record; this is the same tuple, made directly.)
        kept = [
            DeferRecord._make((*record[:_TS], record.ts_ns + offset_ns, *record[_TS + 1 :]))
            for record in records
        ]
        for record in kept:
            argv += (record.defer_id, record.encode())
        script_keys = [self.keys.outbox(run_id), self.keys.finalized(run_id), self.keys.attempts(run_id)]
        return kept, script_keys, argv

    def finalize(self, run_id: str) -> list[DeferRecord]:
        """Finalize a run that ended without its attempt returning; return its records."""
        values = self._script(
            "finalize",
            [self.keys.outbox(run_id), self.keys.finalized(run_id), self.keys.attempts(run_id)],
            [run_id, DISPATCH_GRACE_MS],
            doing=f"finalizing {run_id}",
        )
        return decode_outbox(values)

    def pending_records(self, run_id: str) -> list[DeferRecord]:
        """Return what is recorded for ``run_id`` and not yet dispatched."""
        with reaching(f"reading the outbox of {run_id}"):
            values = cast(list[str], self.client.hvals(self.keys.outbox(run_id)))
        return decode_outbox(values)

    def complete(self, run_id: str, defer_ids: Sequence[str]) -> int:
        """Forget the records of ``run_id`` that were published; return how many are left.

        Only those: a record that arrived after the run's records were read stays
        due, for a recovery pass to send.
        """
        left = self._script(
            "complete",
            [self.keys.outbox(run_id), self.keys.finalized(run_id), self.keys.attempts(run_id)],
            [run_id, *defer_ids],
            doing=f"completing the dispatch of {run_id}",
        )
        return int(left)

    def complete_later(self, run_id: str, defer_ids: Sequence[str]) -> bool:
        """:meth:`complete`, its reply read when this process next calls Redis.

        A publishing parent need not wait for it: if it is lost, the records
        stay due and a recovery pass sends them again, copies their receivers
        acknowledge unrun.

        Returns:
            False when it could not be sent so (call :meth:`complete`).
        """

        def on_reply(reply: Any) -> None:
            if isinstance(reply, Exception):
                logger.warning(
                    "run %s: sent, but the outbox was not cleared (%s); a recovery pass sends "
                    "its deferred runs again, and their receivers acknowledge the copies unrun",
                    run_id,
                    reply,
                )

        return self._script.send_later(
            "complete",
            [self.keys.outbox(run_id), self.keys.finalized(run_id), self.keys.attempts(run_id)],
            [run_id, *defer_ids],
            on_reply=on_reply,
        )

    def due_again(self, run_ids: Sequence[str]) -> None:
        """Make finalized runs that a recovery pass took and could not send due now."""
        if run_ids:
            with reaching("giving back undispatched runs"):
                pipe = self.client.pipeline(transaction=False)
                for run_id in run_ids:
                    pipe.zadd(self.keys.finalized(run_id), {run_id: 0}, xx=True)
                pipe.execute()

    def claim_due(self, *, limit: int, lease_ms: int) -> list[str]:
        """Take finalized runs whose dispatch is overdue (recovery), ``limit`` per shard."""
        return self._walk(self.keys.finalized, limit, lease_ms, doing="looking for undispatched runs")

    def _walk(self, index: Callable[[int], str], limit: int, lease_ms: int, *, doing: str) -> list[str]:
        """Take due members of one index in every shard (``limit`` per shard), pipelined."""
        calls = [([index(shard)], [limit, lease_ms]) for shard in self.keys.shards()]
        return [run_id for taken in self._take_due.each("take_due", calls, doing=doing) for run_id in taken]


def _recorded(kept: list[DeferRecord], values: Any) -> list[DeferRecord]:
    """What the ``record`` script's reply says the finalized run's records are."""
    if isinstance(values, int):
        return kept  # the run's records are exactly these: no need to read them back
    return decode_outbox(values)


class PendingRecord:
    """A ``record`` call written by :meth:`RedisOutbox.record_later`, its reply not read yet.

    Attributes:
        records: the records as written (stamped in Redis time).
    """

    def __init__(self, records: list[DeferRecord], scripts: Scripts) -> None:
        self.records = records
        self._scripts = scripts
        self._reply: Any = _UNREAD

    def take(self, reply: Any) -> None:
        """The reply's callback: the script's reply, or the error that came instead."""
        self._reply = reply

    def wait(self) -> list[DeferRecord]:
        """Read the reply: every record of the finalized run (these, and any an earlier attempt kept).

        Raises:
            StoreUnavailableError: the record failed, or whether it was made is not
                known (the connection was lost with its reply).
        """
        if self._reply is _UNREAD:
            self._scripts.read_replies()
        reply = self._reply
        if reply is _UNREAD:
            raise StoreUnavailableError("recording the defers: the reply was lost with the connection")
        if isinstance(reply, Exception):
            raise StoreUnavailableError(f"recording the defers: {reply}") from reply
        return _recorded(self.records, reply)


_UNREAD = object()
