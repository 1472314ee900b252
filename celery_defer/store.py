"""Redis state of celery_defer: the outbox of parent runs and the claims of deferred runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import redis
from celery import Celery
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from celery_defer import keys
from celery_defer.errors import ConfigurationError, StoreUnavailableError
from celery_defer.limits.redis_backend import RedisLimitBackend
from celery_defer.records import DeferRecord, decode_outbox
from celery_defer.settings import Settings, settings_for

logger = logging.getLogger(__name__)

#: How long after a run finalizes its defers wait for the finalizing hook before
#: a recovery pass may send them instead.
DISPATCH_GRACE_MS = 5_000


def load_lua(name: str) -> str:
    """Return the text of ``celery_defer/lua/<name>.lua``."""
    return (resources.files("celery_defer") / "lua" / f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a deferred run found when it tried to claim its run id."""

    state: Literal["ok", "done", "busy"]
    detail: str = ""

    @property
    def busy_for_s(self) -> float:
        return max(int(self.detail or 0), 0) / 1000.0


class RedisStore:
    """The library's state for one Celery app, in one Redis database."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = keys.KeySpace(settings.key_prefix)
        self._record = client.register_script(load_lua("outbox_record"))
        self._finalize = client.register_script(load_lua("outbox_finalize"))
        self._claim_due = client.register_script(load_lua("outbox_claim_due"))
        self._attempt_begin = client.register_script(load_lua("attempt_begin"))
        self._attempt_renew = client.register_script(load_lua("attempt_renew"))
        self._run_claim = client.register_script(load_lua("run_claim"))
        self._run_finish = client.register_script(load_lua("run_finish"))
        self._run_renew = client.register_script(load_lua("run_renew"))
        self._run_retry = client.register_script(load_lua("run_retry"))
        self.limits = RedisLimitBackend(client)

    # -- parent runs: the outbox -------------------------------------------------

    def recorded_ids(self, run_id: str) -> set[str]:
        """Return the defer ids earlier attempts of ``run_id`` recorded.

        When there are some, the attempt now starting is leased in the attempts
        zset until it records (renew it with :meth:`renew_attempt`).
        """
        with _reaching(f"reading the outbox of {run_id}"):
            fields = self._attempt_begin(
                keys=[self.keys.outbox(run_id), self.keys.attempts()],
                args=[run_id, int(self.settings.lease_s * 1000)],
            )
        return {_text(field) for field in fields}

    def renew_attempt(self, run_id: str) -> bool:
        """Extend the lease of a running attempt; False once it ended."""
        with _reaching(f"renewing the attempt of {run_id}"):
            lease_ms = int(self.settings.lease_s * 1000)
            return bool(self._attempt_renew(keys=[self.keys.attempts()], args=[run_id, lease_ms]))

    def claim_stale_attempts(self, *, limit: int, lease_ms: int) -> list[str]:
        """Take runs whose attempt lease ran out: their worker died mid-attempt."""
        with _reaching("looking for dead attempts"):
            ids = self._claim_due(keys=[self.keys.attempts()], args=[limit, lease_ms])
        return [_text(run_id) for run_id in ids]

    def record(self, run_id: str, records: list[DeferRecord], *, final: bool) -> list[DeferRecord]:
        """Record an attempt's defers; when the run finalizes, return all of its records."""
        argv: list[Any] = [run_id, keys.OUTBOX_TTL_S, "1" if final else "0", DISPATCH_GRACE_MS]
        for record in records:
            argv += (record.defer_id, record.encode())
        with _reaching(f"recording the defers of {run_id}"):
            values = self._record(
                keys=[self.keys.outbox(run_id), self.keys.finalized(), self.keys.attempts()], args=argv
            )
        return decode_outbox(values)

    def finalize(self, run_id: str) -> list[DeferRecord]:
        """Finalize a run that ended without its attempt returning; return its records."""
        with _reaching(f"finalizing {run_id}"):
            values = self._finalize(
                keys=[self.keys.outbox(run_id), self.keys.finalized(), self.keys.attempts()],
                args=[run_id, DISPATCH_GRACE_MS],
            )
        return decode_outbox(values)

    def pending_records(self, run_id: str) -> list[DeferRecord]:
        """Return what is recorded for ``run_id`` and not yet dispatched."""
        with _reaching(f"reading the outbox of {run_id}"):
            values = self.client.hvals(self.keys.outbox(run_id))
        return decode_outbox(list(values))

    def complete(self, run_id: str) -> None:
        """Forget a run's outbox once every record of it was published."""
        with _reaching(f"completing the dispatch of {run_id}"):
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.keys.outbox(run_id))
            pipe.zrem(self.keys.finalized(), run_id)
            pipe.zrem(self.keys.attempts(), run_id)
            pipe.execute()

    def claim_due(self, *, limit: int, lease_ms: int) -> list[str]:
        """Take finalized runs whose dispatch is overdue (recovery)."""
        with _reaching("looking for undispatched runs"):
            ids = self._claim_due(keys=[self.keys.finalized()], args=[limit, lease_ms])
        return [_text(run_id) for run_id in ids]

    # -- deferred runs: claims and outcomes --------------------------------------

    def claim_run(self, run_id: str, holder: str, *, lease_ms: int, attempt: int) -> ClaimResult:
        """Claim a deferred run for ``holder`` before its handler starts."""
        with _reaching(f"claiming deferred run {run_id}"):
            reply = self._run_claim(
                keys=[self.keys.claim(run_id), self.keys.done(run_id)], args=[holder, lease_ms, attempt]
            )
        state = _text(reply[0])
        detail = _text(reply[1]) if len(reply) > 1 else ""
        return ClaimResult(state, detail)  # type: ignore[arg-type]

    def renew_run(self, run_id: str, holder: str, *, lease_ms: int) -> bool:
        with _reaching(f"renewing deferred run {run_id}"):
            return bool(self._run_renew(keys=[self.keys.claim(run_id)], args=[holder, lease_ms]))

    def hand_over_run(self, run_id: str, holder: str, *, next_attempt: int, ttl_ms: int) -> None:
        """Reserve the run for its attempt ``next_attempt``, which is about to be sent."""
        with _reaching(f"handing deferred run {run_id} to its retry"):
            self._run_retry(keys=[self.keys.claim(run_id)], args=[holder, next_attempt, ttl_ms])

    def finish_run(self, run_id: str, holder: str, *, outcome: str) -> None:
        """Release the claim; a non-empty ``outcome`` marks the run finalized."""
        with _reaching(f"finishing deferred run {run_id}"):
            self._run_finish(
                keys=[self.keys.claim(run_id), self.keys.done(run_id)],
                args=[holder, outcome, keys.DONE_TTL_S],
            )

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the operator counters; never fails the caller."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hincrby(self.keys.stats(), name, amount)
            pipe.expire(self.keys.stats(), keys.DONE_TTL_S)
            pipe.execute()
        except redis.RedisError:
            logger.warning("could not count %s", name, exc_info=True)

    def counters(self) -> dict[str, int]:
        """Return the operator counters (``dropped:<fn>:<reason>``, ``duplicate:<fn>``, ...)."""
        raw = self.client.hgetall(self.keys.stats())
        return {_text(key): int(value) for key, value in raw.items()}


@contextmanager
def _reaching(what: str) -> Iterator[None]:
    """Turn a Redis failure while doing ``what`` into :class:`StoreUnavailableError`."""
    try:
        yield
    except redis.RedisError as exc:
        raise StoreUnavailableError(f"{what}: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


_stores_lock = threading.Lock()


def store_for(app: Celery) -> RedisStore:
    """Return the :class:`RedisStore` of ``app`` (one client per app, URL and prefix).

    Raises:
        ConfigurationError: no Redis URL is configured.
    """
    store: RedisStore | None = app.__dict__.get("_celery_defer_store")
    settings = settings_for(app)
    if store is not None and store.settings is settings:
        return store
    url = settings.require_redis_url()
    with _stores_lock:
        try:
            client = redis.Redis.from_url(
                url,
                socket_timeout=10,
                socket_connect_timeout=5,
                health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"defer_redis_url {url!r} is not a Redis URL redis-py accepts: {exc}",
                key="defer_redis_url",
            ) from exc
        store = RedisStore(client, settings)
        app.__dict__["_celery_defer_store"] = store
        return store
