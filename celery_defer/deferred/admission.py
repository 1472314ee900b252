"""Admission of a deferred run through its flow-control guards (SPEC section 3).

Every check-and-take is one atomic Redis script (see ``celery_defer.limits``).
A run that must wait holds nothing meanwhile: behind a throttle it is put back
on the queue once, for the start time the throttle booked for it (the booking
travels in ``passed``, so it starts without asking again); behind a concurrency
limit it parks in the key's line with the message that starts it again, and the
run that frees a slot sends it. A run that is dropped never starts its handler.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from celery_defer.config.flow_keys import GuardSpec
from celery_defer.keys import KeySpace
from celery_defer.lease_keeper import default_keeper
from celery_defer.limits import ConcurrencyGuard, Guard, LimitBackend, Singleton, Throttle
from celery_defer.limits.base import to_ms
from celery_defer.limits.concurrency import SendHandoffs
from celery_defer.limits.lines import Lines

logger = logging.getLogger(__name__)

#: Marks, among the passed slots, a debounced run whose event was pushed.
DEBOUNCE_PUSHED = "debounce:pushed"
#: Among the passed slots, ``<slot>:booked`` marks a run whose throttle start is booked.
BOOKED = ":booked"
#: A booked run that came late waits this long at most in the worker to keep the
#: pace; a longer wait puts it back on the queue (holding its new start).
BEGIN_SLEEP_CAP_S = 1.0


@dataclass(slots=True)
class Admission:
    """The guards' joint answer for one attempt of a deferred run.

    Attributes:
        action: ``proceed``, ``wait`` or ``drop``.
        delay_s: for ``wait``, when to check again.
        reason: for ``wait`` and ``drop``, which guard said so and why.
        kind: the config key of the guard that did not proceed.
        passed: slots of consuming guards already passed (not checked again).
        held: guards holding a lease while the run executes, with their keys.
        payload: JSON of the data to run with instead (debounce: the latest).
        preempted: a run id to cancel (singleton mode ``cancel``).
        parked: for ``wait``, the run is parked in a concurrency line: it is
            sent again by the run that frees a slot, not put back on the queue.
        ahead: for a parked run, how many runs were parked before it.
    """

    action: Literal["proceed", "wait", "drop"]
    delay_s: float = 0.0
    reason: str = ""
    kind: str = ""
    passed: list[str] = field(default_factory=list)
    held: list[tuple[Guard, str]] = field(default_factory=list)
    payload: str | None = None
    preempted: str | None = None
    parked: bool = False
    ahead: int = 0


#: Builds the message that starts a parked run again, given the slots it passed.
Parcel = Callable[[Sequence[str]], str]


class FlowControl:
    """The guards of one deferred function, bound to one backend.

    Args:
        send: publishes parked runs a release handed a slot to; without it,
            runs wait by polling instead of parking.
    """

    def __init__(
        self,
        function_id: str,
        specs: Sequence[GuardSpec],
        backend: LimitBackend,
        *,
        lease_s: float,
        send: SendHandoffs | None = None,
    ) -> None:
        self.function_id = function_id
        self.backend = backend
        self.rules = [(spec, self._build(spec, backend, lease_s, send)) for spec in specs]

    @staticmethod
    def _build(spec: GuardSpec, backend: LimitBackend, lease_s: float, send: SendHandoffs | None) -> Guard:
        if spec.kind == "concurrency":
            return spec.build(backend, lease_s=lease_s, send=send)
        return spec.build(backend, lease_s=lease_s) if spec.holds else spec.build(backend)

    def _redis_key(self, keys: KeySpace, spec: GuardSpec, event: Any) -> str:
        value = spec.key(event) if spec.key is not None else None
        return spec.redis_key(keys, self.function_id, value)

    def admit(
        self,
        keys: KeySpace,
        event: Any,
        run_id: str,
        passed: Sequence[str],
        data: Any,
        event_seq: int = 0,
        parcel: Parcel | None = None,
    ) -> Admission:
        """Check every guard the run has not passed yet, in order.

        With ``parcel`` a run that finds no concurrency slot parks in the line
        (``admission.parked``) with the message ``parcel(passed)`` makes.

        Raises:
            StoreUnavailableError: a guard could not reach Redis; nothing is held.
            ValueError: a key expression failed for this event.
        """
        admission = Admission("proceed", passed=list(passed))
        preempting: list[tuple[GuardSpec, Guard, str]] = []
        try:
            for index, (spec, guard) in enumerate(self.rules):
                if spec.slot in admission.passed:
                    continue
                key = self._redis_key(keys, spec, event)
                if isinstance(guard, Throttle) and spec.slot + BOOKED in admission.passed:
                    # Its start was booked when it first asked: no second check.
                    admission.passed.remove(spec.slot + BOOKED)
                    admission.passed.append(spec.slot)
                    begun = guard.begin(key, holder=run_id)
                    wait_s = begun.wait_ms / 1000
                    if wait_s > BEGIN_SLEEP_CAP_S:
                        guard.leave_turn(key, begun, holder=run_id)
                        return self._stop(
                            admission, run_id, "wait", spec, wait_s, "late for its booked start"
                        )
                    time.sleep(wait_s)
                    guard.await_turn(key, begun, holder=run_id)
                    continue
                if _preempts(guard):
                    # Taking a cancel-mode lock displaces the running holder for good:
                    # done only once every other guard said proceed (below).
                    preempting.append((spec, guard, key))
                    continue
                if spec.kind == "debounce" and DEBOUNCE_PUSHED not in admission.passed:
                    delay_s = guard.push(  # type: ignore[attr-defined]
                        key, event_id=run_id, payload=json.dumps(data, separators=(",", ":")), order=event_seq
                    )
                    admission.passed.append(DEBOUNCE_PUSHED)
                    return self._stop(admission, run_id, "wait", spec, delay_s, "debounced")
                if isinstance(guard, ConcurrencyGuard) and parcel is not None:
                    decision = guard.check(key, holder=run_id, parcel=parcel(admission.passed))
                else:
                    decision = guard.check(key, holder=run_id)
                if decision.action == "drop":
                    self._give_back(keys, event, run_id, admission.passed)
                if decision.reserved:
                    admission.passed.append(spec.slot + BOOKED)
                if decision.parked:
                    assert isinstance(guard, ConcurrencyGuard)
                    Lines(self.backend, keys.lines()).note(
                        key, limit=guard.limit, lease_ms=to_ms(guard.lease_s)
                    )
                    admission.parked, admission.ahead = True, decision.ahead
                    self._leave_later_lines(keys, event, run_id, index)
                if decision.action != "proceed":
                    return self._stop(
                        admission, run_id, decision.action, spec, decision.delay_s, decision.reason
                    )
                if guard.lease_s is not None:
                    admission.held.append((guard, key))
                    if isinstance(guard, ConcurrencyGuard):
                        guard.await_turn(key, decision.behind_ms, holder=run_id)
                else:
                    admission.passed.append(spec.slot)
                admission.payload = decision.payload or admission.payload
            for spec, guard, key in preempting:
                # Had the running holder been cancelled before a later guard said
                # wait, the newcomer would not start either; and a lock given back
                # by that wait would have let the next newcomer run beside the old
                # run. The newcomer waits here until the holder it cancelled ended.
                decision = guard.check(key, holder=run_id)
                admission.preempted = decision.preempted or admission.preempted
                if decision.action != "proceed":
                    return self._stop(
                        admission, run_id, decision.action, spec, decision.delay_s, decision.reason
                    )
                admission.held.append((guard, key))
        except BaseException:
            self.release(admission.held, run_id)
            raise
        return admission

    def _stop(
        self,
        admission: Admission,
        run_id: str,
        action: Literal["wait", "drop"],
        spec: GuardSpec,
        delay_s: float,
        why: str,
    ) -> Admission:
        # A run that does not start must not sit on a slot while it waits.
        self.release(admission.held, run_id)
        admission.held = []
        admission.action = action
        admission.delay_s = delay_s
        admission.kind = spec.kind
        admission.reason = f"{spec.kind}: {why}" if why else spec.kind
        return admission

    def _leave_later_lines(self, keys: KeySpace, event: Any, run_id: str, index: int) -> None:
        # A run sent from the line of a later concurrency rule holds the slot it
        # was handed there; parked in an earlier line now, it gives that slot on.
        for spec, guard in self.rules[index + 1 :]:
            if spec.kind == "concurrency":
                guard.release(self._redis_key(keys, spec, event), holder=run_id)

    def _give_back(self, keys: KeySpace, event: Any, run_id: str, passed: Sequence[str]) -> None:
        # A run dropped before it starts has not used its idempotency key value:
        # keeping it would drop the next legitimate run as a duplicate.
        for spec, guard in self.rules:
            if spec.kind == "idempotency" and spec.slot in passed:
                try:
                    guard.release(self._redis_key(keys, spec, event), holder=run_id)
                except Exception:
                    logger.warning("could not give back the idempotency key of dropped run %s", run_id)

    def abandon(self, keys: KeySpace, event: Any, run_id: str) -> None:
        """Leave every slot and waiting line the run may be in; best effort.

        For a run that ends before its handler starts (a start timeout, an
        error), so that it does not keep a place in line until that expires,
        nor an idempotency key value it never used.
        """
        for spec, guard in self.rules:
            if spec.holds or spec.kind == "idempotency":
                try:
                    guard.release(self._redis_key(keys, spec, event), holder=run_id)
                except Exception:
                    logger.debug("could not leave %s for run %s", spec.slot, run_id, exc_info=True)

    @staticmethod
    def release(held: Sequence[tuple[Guard, str]], run_id: str, run_s: float | None = None) -> None:
        """Give back the leases a run held; failures are logged, leases expire anyway."""
        for guard, key in held:
            try:
                guard.release(key, holder=run_id, run_s=run_s)
            except Exception:
                logger.warning("could not release %s lease %s; it expires by itself", guard.kind, key)


def _preempts(guard: Guard) -> bool:
    return isinstance(guard, Singleton) and guard.mode == "cancel"


@contextmanager
def keep_leases(held: Sequence[tuple[Guard, str]], run_id: str) -> Iterator[None]:
    """Renew the run's leases in the background while its handler executes."""
    keeper = default_keeper()
    tokens = []
    for guard, key in held:
        token = f"{guard.kind}:{key}:{run_id}"
        assert guard.lease_s is not None
        keeper.register(
            token, lease_s=guard.lease_s, renew=functools.partial(guard.renew, key, holder=run_id)
        )
        tokens.append(token)
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, Exception):
            # Terminated (a singleton newcomer revoked this run: SystemExit from
            # the pool's SIGTERM handler): the handler is over, so its locks go
            # now rather than when their leases run out; the caller releases
            # them itself after an ordinary exception.
            FlowControl.release(held, run_id)
        raise
    finally:
        for token in tokens:
            keeper.unregister(token)
