"""The parent task: an order was placed; its side effects are deferred."""

from __future__ import annotations

import logging
from typing import Any

from celery_defer import defer
from example_project import results
from example_project.app import app
from example_project.functions import audit_log, score_order, send_email
from example_project.plan import order_plan

logger = logging.getLogger(__name__)


class PaymentDeclinedError(Exception):
    """The order cannot be completed; it fails for good."""


@app.task(bind=True, max_retries=1, name="example_project.order_placed")
def order_placed(self: Any, order_id: int, email: str, total_cents: int) -> dict[str, Any]:
    """Confirm an order: defer its e-mail, scoring and audit entry, then settle payment.

    The plan (from ``order_id``) decides whether the task retries once after
    deferring, or fails for good after deferring; the defers run either way.
    """
    plan = order_plan(order_id)
    attempt = self.request.retries or 0
    defer(
        "send-email",
        function=send_email,
        data={
            "to": email,
            "subject": f"Order #{order_id} confirmed",
            "body": f"Thanks! We received your order of {total_cents / 100:.2f} EUR.",
        },
    )
    defer(
        "score-order",
        function=score_order,
        data={"order_id": order_id, "customer": plan.customer, "total_cents": total_cents},
    )
    defer("audit-log", function=audit_log, data={"order_id": order_id, "action": "order_placed"})
    if plan.parent_retries_once and attempt == 0:
        results.record_parent_end(
            app, run_id=self.request.id, order_id=order_id, attempt=attempt, outcome="retry"
        )
        raise self.retry(countdown=0.2, exc=ConnectionError("payment gateway timed out"))
    if plan.fails_after_deferring:
        results.record_parent_end(
            app, run_id=self.request.id, order_id=order_id, attempt=attempt, outcome="failed"
        )
        raise PaymentDeclinedError(f"order {order_id}: payment declined")
    results.record_parent_end(
        app, run_id=self.request.id, order_id=order_id, attempt=attempt, outcome="succeeded"
    )
    return {"order_id": order_id, "status": "confirmed"}
