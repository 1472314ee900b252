"""Run claims: how a deferred run makes sure it completes at most once.

Before its handler starts, an attempt claims its deterministic run id: a key
``claim:<run id>`` holding the attempt's holder token under a lease (renewed while
the handler runs). When the run finalizes, its done marker remembers its outcome
for ``defer_done_ttl`` (``done_markers``); any later copy finds it and is
acknowledged unrun.

Round trips: an attempt that runs costs two (claim; finish), its flow-control
releases riding in the finish's pipeline. The claim's reply carries Redis time,
which keeps the process's clock offset fresh without a ``TIME`` call of its own.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from celery_defer import keys
from celery_defer.background import background
from celery_defer.deferred.done_markers import DoneMarkers, generation_mismatch, outcome_code, outcome_of
from celery_defer.errors import StoreUnavailableError
from celery_defer.lease_keeper import default_keeper
from celery_defer.redis_clients import StoreClient
from celery_defer.redis_clock import RedisClock
from celery_defer.redis_io import Scripts, batched

logger = logging.getLogger(__name__)

_HOST = socket.gethostname()

_SCRIPTS = ("claim", "finish", "renew", "retry", "resend")


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a deferred run found when it tried to claim its run id."""

    state: Literal["ok", "done", "busy"]
    detail: str = ""

    @property
    def busy_for_s(self) -> float:
        return max(int(self.detail or 0), 0) / 1000.0


class RunClaims:
    """Claims and outcomes of one app's deferred runs, in one Redis database.

    Every method raises :class:`~celery_defer.StoreUnavailableError` when Redis fails.
    """

    def __init__(
        self, client: StoreClient, keyspace: keys.KeySpace, *, done_ttl_s: float, clock: RedisClock
    ) -> None:
        self.client = client
        self.keys = keyspace
        self.clock = clock
        self.done = DoneMarkers(keyspace, ttl_s=done_ttl_s, clock=clock)
        self._script = Scripts(client, "runs", _SCRIPTS)
        self._recent: dict[str, tuple[int, list[str], list[str], list[Any]]] = {}
        self._take_due = Scripts(client, "indexes", ("take_due",))

    def _run_keys(self, run_id: str) -> list[str]:
        k = self.keys
        return [k.claim(run_id), k.inflight(run_id), k.resend(run_id)]

    def _marked(self, name: str, run_id: str, args: list[Any], *, doing: str, generation: int) -> Any:
        """Run a script that reads or writes the run's done marker, for ``generation``."""
        run_keys, buckets, marker_args = self._of_run(run_id, generation)
        return self._script(name, [*run_keys, *buckets], [*args, *marker_args], doing=doing)

    def _of_run(self, run_id: str, generation: int) -> tuple[list[str], list[str], list[Any]]:
        # An attempt's claim and finish use the same keys and marker (hashes of the
        # run id): worked out once. Kept for the last few runs only.
        cached = self._recent.get(run_id)
        if cached is None or cached[0] != generation:
            if len(self._recent) >= 64:
                self._recent.clear()
            cached = (
                generation,
                self._run_keys(run_id),
                self.done.buckets(run_id, generation),
                self.done.args(run_id, generation),
            )
            self._recent[run_id] = cached
        return cached[1], cached[2], cached[3]

    def _marked_now(self, name: str, run_id: str, args: list[Any], *, doing: str) -> Any:
        reply = self._marked(name, run_id, args, doing=doing, generation=self.done.generation())
        generation = generation_mismatch(reply)
        if generation is not None:  # a generation began a moment ago, by Redis time
            reply = self._marked(name, run_id, args, doing=doing, generation=generation)
        return reply

    def claim(self, run_id: str, holder: str, *, lease_ms: int, attempt: int, resend: str) -> ClaimResult:
        """Claim a deferred run for ``holder`` before its handler starts.

        ``resend`` is the message that starts this attempt again: a recovery pass
        sends it if the claim lapses before the run finishes (its worker died).
        """
        sent_ns = time.time_ns()
        reply = self._marked_now(
            "claim",
            run_id,
            [holder, lease_ms, attempt, run_id, resend, keys.DONE_TTL_S],
            doing=f"claiming deferred run {run_id}",
        )
        if reply[0] == "ok":
            server_ns = int(reply[1]) * 1_000_000_000 + int(reply[2]) * 1_000
            self.clock.observe(server_ns, sent_ns=sent_ns, received_ns=time.time_ns())
            return ClaimResult("ok")
        if reply[0] == "done":
            return ClaimResult("done", outcome_of(reply[1]))
        return ClaimResult(reply[0], reply[1])

    def renew(self, run_id: str, holder: str, *, lease_ms: int) -> bool:
        """Extend the claim's lease; False when ``holder`` no longer has it."""
        renewed = self._script(
            "renew",
            [self.keys.claim(run_id), self.keys.inflight(run_id)],
            [holder, lease_ms, run_id],
            doing=f"renewing deferred run {run_id}",
        )
        return bool(renewed)

    def hand_over(
        self, run_id: str, holder: str, *, next_attempt: int, ttl_ms: int, resend: str = ""
    ) -> None:
        """Reserve the run for its attempt ``next_attempt``, whose message ``resend`` is about to be sent."""
        self._script(
            "retry",
            [self.keys.claim(run_id), self.keys.inflight(run_id), self.keys.resend(run_id)],
            [holder, next_attempt, ttl_ms, run_id, resend, keys.DONE_TTL_S],
            doing=f"handing deferred run {run_id} to its next attempt",
        )

    def finish(
        self, run_id: str, holder: str, *, outcome: str, also: Callable[[], None] | None = None
    ) -> None:
        """Release the claim; a non-empty ``outcome`` marks the run finalized.

        ``also`` makes script calls (a flow-control release) sent in the same
        pipelined round trip; their failures are logged, never raised.
        """
        doing = f"finishing deferred run {run_id}"
        args: list[Any] = [holder, outcome_code(outcome), run_id]
        generation = self.done.generation()
        if also is None:
            reply = self._marked("finish", run_id, args, doing=doing, generation=generation)
        else:
            with batched(self.client) as batch:
                also()
                self._marked("finish", run_id, args, doing=doing, generation=generation)
            *others, reply = batch.execute(doing)
            for other in others:
                if isinstance(other, Exception):
                    logger.warning("deferred run %s: a call sent with its finish failed: %s", run_id, other)
            if isinstance(reply, Exception):
                raise StoreUnavailableError(f"{doing}: {reply}") from reply
        generation_now = generation_mismatch(reply)
        if generation_now is not None:
            self._marked("finish", run_id, args, doing=doing, generation=generation_now)

    def take_lapsed(self, *, limit: int, lease_ms: int) -> list[str]:
        """Take runs in flight whose time came (recovery), ``limit`` per shard.

        A run taken is hidden from other passes for ``lease_ms``.
        """
        calls = [([self.keys.inflight(shard)], [limit, lease_ms]) for shard in self.keys.shards()]
        taken = self._take_due.each("take_due", calls, doing="looking for lapsed deferred runs")
        return [run_id for ids in taken for run_id in ids]

    def message_to_resend(self, run_id: str) -> str | None:
        """The message that starts a lapsed run again, or ``None`` when it needs none."""
        message = self._marked_now("resend", run_id, [run_id], doing=f"reading deferred run {run_id}")
        return str(message) if message else None


class HeldClaim:
    """One attempt's hold on its run id, from the claim until the run finishes.

    Failures to hand over or finish are logged, never raised: the claim's lease
    runs out by itself, and then the run may be tried again, never lost.
    """

    def __init__(self, claims: RunClaims, run_id: str, *, lease_ms: int, retry_for_s: float) -> None:
        self.claims = claims
        self.run_id = run_id
        self.lease_ms = lease_ms
        self.retry_for_s = retry_for_s
        self.holder = f"{_HOST}:{os.getpid()}:{os.urandom(6).hex()}"

    def take(self, *, attempt: int, resend: str) -> ClaimResult:
        """Claim the run for this attempt (``attempt`` counts retries); see :meth:`RunClaims.claim`."""
        return self.claims.claim(
            self.run_id, self.holder, lease_ms=self.lease_ms, attempt=attempt, resend=resend
        )

    @contextmanager
    def kept_alive(self) -> Iterator[None]:
        """Renew the claim in the background while the attempt runs, however long."""
        keeper = default_keeper()
        token = f"claim:{self.run_id}:{self.holder}"
        keeper.register(
            token,
            lease_s=self.lease_ms / 1000,
            renew=functools.partial(self.claims.renew, self.run_id, self.holder, lease_ms=self.lease_ms),
        )
        try:
            yield
        finally:
            keeper.unregister(token)

    def hand_over(self, *, next_attempt: int, ttl_ms: int, resend: str = "") -> None:
        """Keep the run for its attempt ``next_attempt`` (a retry or a requeue about to be sent)."""
        try:
            self.claims.hand_over(
                self.run_id, self.holder, next_attempt=next_attempt, ttl_ms=ttl_ms, resend=resend
            )
        except Exception:
            logger.warning("deferred run %s: could not hand its claim over", self.run_id, exc_info=True)

    def finish(self, outcome: str, *, also: Callable[[], None] | None = None) -> None:
        """Mark the run finalized with ``outcome`` and let go of the claim.

        ``also`` rides in the same round trip (see :meth:`RunClaims.finish`).
        Kept trying in the background while Redis is away: a run not marked done
        would be sent again once its claim lapses.
        """

        def attempt() -> bool:
            self.claims.finish(self.run_id, self.holder, outcome=outcome, also=also)
            return True

        try:
            attempt()
        except Exception as exc:
            logger.warning("deferred run %s %s, but could not mark it so yet: %s", self.run_id, outcome, exc)
            background().submit(
                f"marking deferred run {self.run_id} {outcome}",
                attempt,
                budget_s=self.retry_for_s,
                on_give_up=functools.partial(
                    logger.error,
                    "deferred run %s %s, but Redis was away too long to mark it so; it may run again",
                    self.run_id,
                    outcome,
                ),
            )
