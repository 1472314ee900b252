"""The deterministic plan of a batch: what each order does, and what must run because of it.

Everything follows from the order id, so the tasks (which act on the plan) and
the driver (which checks the outcome against it) agree without talking:

- every 7th order fails for good *after* deferring: its defers still run (SPEC 7.1);
- every order's card is charged in a step (SPEC 6) that defers the receipt
  (``send-email``); the charge must happen once per order, whatever retries follow;
- every 11th order's parent task retries once after deferring: its defers run
  once, after the retry succeeds (SPEC 4.5);
- every 3rd order's stock check times out once *after* the charge step: the
  retry skips the kept charge, so the card is still charged once;
- every 5th order sends a malformed address: a call-site skip, no ``send-email`` run;
- every 4th order's address is greylisted: ``send-email`` fails once, then retries;
- every 6th order's ``score-order`` asks for a retry once (``RetryAfterError``);
- orders come from two business customers in turn (``customer``), the key of
  ``score-order``'s concurrency limit.

Flow control (``concurrency``, ``throttle``) only delays runs, so it changes
none of this; :class:`FlowLimits` holds what the driver checks it against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery_defer.config.durations import parse_duration_s

SEND_EMAIL = "send-email"
SCORE_ORDER = "score-order"
AUDIT_LOG = "audit-log"
#: Every deferred function of the shop, in the order ``order_placed`` defers them.
FUNCTIONS = (SEND_EMAIL, SCORE_ORDER, AUDIT_LOG)

#: The type of ``ctx.event.data`` each handler must see: the schema's type, else a dict.
DATA_TYPES = {SEND_EMAIL: "Email", SCORE_ORDER: "dict", AUDIT_LOG: "dict"}

#: Mail to this domain is refused on the first delivery attempt.
GREYLIST_DOMAIN = "greylist.example"
#: The shop's customers; order ``n`` comes from ``CUSTOMERS[n % 2]``.
CUSTOMERS = ("acme", "globex")


@dataclass(frozen=True, slots=True)
class OrderPlan:
    """What one order does."""

    order_id: int

    @property
    def fails_after_deferring(self) -> bool:
        return self.order_id % 7 == 0

    @property
    def parent_retries_once(self) -> bool:
        return self.order_id % 11 == 0

    @property
    def stock_retries_once(self) -> bool:
        return self.order_id % 3 == 0

    @property
    def bad_email(self) -> bool:
        return self.order_id % 5 == 0

    @property
    def email_greylisted(self) -> bool:
        return self.order_id % 4 == 0 and not self.bad_email

    @property
    def score_retries_once(self) -> bool:
        return self.order_id % 6 == 0

    @property
    def customer(self) -> str:
        return CUSTOMERS[self.order_id % len(CUSTOMERS)]

    @property
    def email(self) -> str:
        if self.bad_email:
            return f"customer{self.order_id}-at-example.com"
        domain = GREYLIST_DOMAIN if self.email_greylisted else "example.com"
        return f"customer{self.order_id}@{domain}"

    @property
    def total_cents(self) -> int:
        return 1000 + (self.order_id * 379) % 9000

    @property
    def parent_attempts(self) -> int:
        return 2 if self.parent_retries_once or self.stock_retries_once else 1

    def expected_runs(self) -> tuple[str, ...]:
        """The deferred functions that must run exactly once for this order."""
        return tuple(fn for fn in FUNCTIONS if not (fn == SEND_EMAIL and self.bad_email))

    def expected_retries(self) -> Counter[str]:
        retries: Counter[str] = Counter()
        if self.email_greylisted:
            retries[SEND_EMAIL] += 1
        if self.score_retries_once:
            retries[SCORE_ORDER] += 1
        return retries

    def expected_skips(self) -> Counter[str]:
        """Call-site skips: the receipt is deferred in the charge step, which runs once per order."""
        return Counter({SEND_EMAIL: 1} if self.bad_email else {})


def order_plan(order_id: int) -> OrderPlan:
    return OrderPlan(order_id)


@dataclass(slots=True)
class Expectations:
    """What a batch of orders ``1..n`` must produce."""

    orders: int
    parents_succeeded: int = 0
    parents_failed: int = 0
    parent_retries: int = 0
    runs: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    skips: Counter[str] = field(default_factory=Counter)
    #: Every (order id, function) that must run exactly once.
    pairs: set[tuple[int, str]] = field(default_factory=set)


def expectations(orders: int) -> Expectations:
    """Return what the orders ``1..orders`` must produce."""
    expected = Expectations(orders)
    for order_id in range(1, orders + 1):
        plan = order_plan(order_id)
        if plan.fails_after_deferring:
            expected.parents_failed += 1
        else:
            expected.parents_succeeded += 1
        expected.parent_retries += plan.parent_attempts - 1
        for fn in plan.expected_runs():
            expected.runs[fn] += 1
            expected.pairs.add((order_id, fn))
        expected.retries.update(plan.expected_retries())
        expected.skips.update(plan.expected_skips())
    return expected


def _key_text(key: object) -> str | None:
    return key if key is None or isinstance(key, str) else "a key function"


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """The flow-control limits of one deferred function, as its config states them.

    Attributes:
        concurrency: most runs executing at once, or ``None`` for no limit.
        concurrency_key: the limit's key expression (then the limit holds per key value).
        throttle: ``(limit, period in seconds, burst)`` of run starts, or ``None``.
    """

    concurrency: int | None = None
    concurrency_key: str | None = None
    throttle: tuple[int, float, int] | None = None

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> FlowLimits:
        """Read the ``concurrency`` (one limit) and ``throttle`` keys of a deferred function's config."""
        concurrency = config.get("concurrency")
        if isinstance(concurrency, int):
            concurrency = {"limit": concurrency}
        throttle = config.get("throttle")
        return cls(
            concurrency=None if concurrency is None else concurrency["limit"],
            concurrency_key=None if concurrency is None else _key_text(concurrency.get("key")),
            throttle=None
            if throttle is None
            else (throttle["limit"], parse_duration_s(throttle["period"]), throttle.get("burst", 1)),
        )

    def describe_throttle(self) -> str:
        if self.throttle is None:
            return "none"
        limit, period_s, burst = self.throttle
        return f"{limit} per {period_s:g}s, burst {burst}"
