"""Run claims: how a deferred run makes sure it completes at most once.

Before its handler starts, an attempt claims its deterministic run id: a key
``claim:<run id>`` holding the attempt's holder token under a lease (renewed while
the handler runs). When the run finalizes, ``done:<run id>`` remembers its outcome
for ``defer_done_ttl``; any later copy finds it and is acknowledged unrun.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from celery_defer import keys
from celery_defer.background import background
from celery_defer.lease_keeper import default_keeper
from celery_defer.redis_io import Scripts, StoreClient

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

    def __init__(self, client: StoreClient, keyspace: keys.KeySpace) -> None:
        self.keys = keyspace
        self._script = Scripts(client, "runs", _SCRIPTS)
        self._take_due = Scripts(client, "indexes", ("take_due",))

    def _run_keys(self, run_id: str) -> list[str]:
        k = self.keys
        return [k.claim(run_id), k.done(run_id), k.inflight(run_id), k.resend(run_id)]

    def claim(self, run_id: str, holder: str, *, lease_ms: int, attempt: int, resend: str) -> ClaimResult:
        """Claim a deferred run for ``holder`` before its handler starts.

        ``resend`` is the message that starts this attempt again: a recovery pass
        sends it if the claim lapses before the run finishes (its worker died).
        """
        reply = self._script(
            "claim",
            self._run_keys(run_id),
            [holder, lease_ms, attempt, run_id, resend, keys.DONE_TTL_S],
            doing=f"claiming deferred run {run_id}",
        )
        return ClaimResult(reply[0], reply[1] if len(reply) > 1 else "")

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

    def finish(self, run_id: str, holder: str, *, outcome: str) -> None:
        """Release the claim; a non-empty ``outcome`` marks the run finalized."""
        self._script(
            "finish",
            self._run_keys(run_id),
            [holder, outcome, keys.DONE_TTL_S, run_id],
            doing=f"finishing deferred run {run_id}",
        )

    def take_lapsed(self, *, limit: int, lease_ms: int) -> list[str]:
        """Take runs in flight whose time came (recovery), ``limit`` per shard.

        A run taken is hidden from other passes for ``lease_ms``.
        """
        calls = [([self.keys.inflight(shard)], [limit, lease_ms]) for shard in self.keys.shards()]
        taken = self._take_due.each("take_due", calls, doing="looking for lapsed deferred runs")
        return [run_id for ids in taken for run_id in ids]

    def message_to_resend(self, run_id: str) -> str | None:
        """The message that starts a lapsed run again, or ``None`` when it needs none."""
        message = self._script(
            "resend", self._run_keys(run_id), [run_id], doing=f"reading deferred run {run_id}"
        )
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
        self.holder = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

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

    def finish(self, outcome: str) -> None:
        """Mark the run finalized with ``outcome`` and let go of the claim.

        Kept trying in the background while Redis is away: a run not marked done
        would be sent again once its claim lapses.
        """

        def attempt() -> bool:
            self.claims.finish(self.run_id, self.holder, outcome=outcome)
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
