"""The shop's deferred functions: side effects of a placed order.

Each config is a plain dict. The flow-control keys only delay runs, never drop
them: ``send-email`` keeps to the e-mail provider's limits (3 connections, 20
messages a second in bursts of 5) and ``score-order`` sends the scoring service
at most 2 requests per customer at a time. Every handler counts itself in
Redis while it executes (``results.running``), so the driver can check that no
limit was ever exceeded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from celery_defer import DeferConfig, DeferContext, RetryAfterError, create_defer
from example_project import results
from example_project.app import app
from example_project.plan import (
    AUDIT_LOG,
    GREYLIST_DOMAIN,
    SCORE_ORDER,
    SEND_EMAIL,
    FlowLimits,
    order_plan,
)
from example_project.schemas import Email

logger = logging.getLogger(__name__)


class GreylistedError(Exception):
    """The receiving mail server asks us to try again later."""


def _start(ctx: DeferContext[Any], function: str, saw: dict[str, Any]) -> None:
    results.record_attempt(
        app,
        run_id=ctx.run_id,
        parent_id=ctx.parents[0].run_id,
        function=function,
        attempt=ctx.attempt,
        saw=saw,
    )


def _done(ctx: DeferContext[Any], function: str) -> None:
    results.record_completion(app, parent_id=ctx.parents[0].run_id, function=function)


SEND_EMAIL_CONFIG: DeferConfig = {
    "id": SEND_EMAIL,
    "schema": Email,
    "retries": 3,
    # The provider's limits: 3 connections at once, 20 messages a second, bursts of 5.
    "concurrency": {"limit": 3},
    "throttle": {"limit": 20, "period": "1s", "burst": 5},
}
SCORE_ORDER_CONFIG: DeferConfig = {
    "id": SCORE_ORDER,
    "retries": 3,
    # The scoring service takes at most 2 requests per customer at a time.
    "concurrency": {"limit": 2, "key": "event.data.customer"},
}
AUDIT_LOG_CONFIG: DeferConfig = {"id": AUDIT_LOG, "retries": 2}

#: The limits the driver checks each function's runs against.
FLOW_LIMITS = {
    config["id"]: FlowLimits.of(config)
    for config in (SEND_EMAIL_CONFIG, SCORE_ORDER_CONFIG, AUDIT_LOG_CONFIG)
}


def send_email_handler(ctx: DeferContext[Email]) -> None:
    email = ctx.event.data
    with results.running(app, SEND_EMAIL):
        _start(ctx, SEND_EMAIL, {"type": type(email).__name__, "to": email.to})
        if ctx.attempt == 0 and email.to.endswith(f"@{GREYLIST_DOMAIN}"):
            raise GreylistedError(f"451 {email.to}: greylisted, try again later")
        time.sleep(0.15)  # the provider's API call
        ctx.logger.info("sent %r to %s", email.subject, email.to)
        _done(ctx, SEND_EMAIL)


send_email = create_defer(app, SEND_EMAIL_CONFIG, send_email_handler)


@create_defer(app, SCORE_ORDER_CONFIG)
async def score_order(ctx: DeferContext[dict[str, Any]]) -> int:
    data = ctx.event.data
    with results.running(app, SCORE_ORDER, key=data["customer"]):
        _start(ctx, SCORE_ORDER, {"type": type(data).__name__, "order_id": data["order_id"]})
        if ctx.attempt == 0 and order_plan(data["order_id"]).score_retries_once:
            raise RetryAfterError("300ms", "scoring model is warming up")
        await asyncio.sleep(0.1)  # a call to the scoring service
        score = min(100, int(data["total_cents"]) // 100)
        _done(ctx, SCORE_ORDER)
    return score


def audit_log_handler(ctx: DeferContext[dict[str, Any]]) -> None:
    data = ctx.event.data
    with results.running(app, AUDIT_LOG):
        _start(ctx, AUDIT_LOG, {"type": type(data).__name__, "action": data.get("action")})
        _done(ctx, AUDIT_LOG)


audit_log = create_defer(app, AUDIT_LOG_CONFIG, audit_log_handler)
