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

import redis

from celery_defer import keys
from celery_defer.lease_keeper import default_keeper
from celery_defer.redis_io import Scripts

logger = logging.getLogger(__name__)

_HOST = socket.gethostname()

_SCRIPTS = ("claim", "finish", "renew", "retry")


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

    def __init__(self, client: redis.Redis, keyspace: keys.KeySpace) -> None:
        self.keys = keyspace
        self._script = Scripts(client, "runs", _SCRIPTS)

    def claim(self, run_id: str, holder: str, *, lease_ms: int, attempt: int) -> ClaimResult:
        """Claim a deferred run for ``holder`` before its handler starts."""
        reply = self._script(
            "claim",
            [self.keys.claim(run_id), self.keys.done(run_id)],
            [holder, lease_ms, attempt],
            doing=f"claiming deferred run {run_id}",
        )
        return ClaimResult(reply[0], reply[1] if len(reply) > 1 else "")

    def renew(self, run_id: str, holder: str, *, lease_ms: int) -> bool:
        """Extend the claim's lease; False when ``holder`` no longer has it."""
        renewed = self._script(
            "renew", [self.keys.claim(run_id)], [holder, lease_ms], doing=f"renewing deferred run {run_id}"
        )
        return bool(renewed)

    def hand_over(self, run_id: str, holder: str, *, next_attempt: int, ttl_ms: int) -> None:
        """Reserve the run for its attempt ``next_attempt``, which is about to be sent."""
        self._script(
            "retry",
            [self.keys.claim(run_id)],
            [holder, next_attempt, ttl_ms],
            doing=f"handing deferred run {run_id} to its next attempt",
        )

    def finish(self, run_id: str, holder: str, *, outcome: str) -> None:
        """Release the claim; a non-empty ``outcome`` marks the run finalized."""
        self._script(
            "finish",
            [self.keys.claim(run_id), self.keys.done(run_id)],
            [holder, outcome, keys.DONE_TTL_S],
            doing=f"finishing deferred run {run_id}",
        )


class HeldClaim:
    """One attempt's hold on its run id, from the claim until the run finishes.

    Failures to hand over or finish are logged, never raised: the claim's lease
    runs out by itself, and then the run may be tried again, never lost.
    """

    def __init__(self, claims: RunClaims, run_id: str, *, lease_ms: int) -> None:
        self.claims = claims
        self.run_id = run_id
        self.lease_ms = lease_ms
        self.holder = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def take(self, *, attempt: int) -> ClaimResult:
        """Claim the run for this attempt (``attempt`` counts retries)."""
        return self.claims.claim(self.run_id, self.holder, lease_ms=self.lease_ms, attempt=attempt)

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

    def hand_over(self, *, next_attempt: int, ttl_ms: int) -> None:
        """Keep the run for its attempt ``next_attempt`` (a retry or a requeue about to be sent)."""
        try:
            self.claims.hand_over(self.run_id, self.holder, next_attempt=next_attempt, ttl_ms=ttl_ms)
        except Exception:
            logger.warning("deferred run %s: could not hand its claim over", self.run_id, exc_info=True)

    def finish(self, outcome: str) -> None:
        """Mark the run finalized with ``outcome`` and let go of the claim."""
        try:
            self.claims.finish(self.run_id, self.holder, outcome=outcome)
        except Exception:
            logger.warning(
                "deferred run %s %s, but could not mark it so", self.run_id, outcome, exc_info=True
            )
