"""The parent task: an order was placed; its side effects are deferred."""

from __future__ import annotations

import logging
from typing import Any

from celery_defer import defer, step
from example_project import results
from example_project.app import app
from example_project.functions import audit_log, score_order, send_email
from example_project.plan import order_plan

logger = logging.getLogger(__name__)


class PaymentDeclinedError(Exception):
    """The order cannot be completed; it fails for good."""


@app.task(bind=True, max_retries=1, name="example_project.order_placed")
def order_placed(self: Any, order_id: int, email: str, total_cents: int) -> dict[str, Any]:
    """Confirm an order: charge the card in a step that defers the receipt, then defer the rest.

    The plan (from ``order_id``) decides whether the task retries once after
    the charge, or fails for good after deferring; the defers run either way,
    and the charge (a step) happens once per order however often the task runs.
    """
    plan = order_plan(order_id)
    attempt = self.request.retries or 0

    def charge_card() -> dict[str, Any]:
        # Runs once per order: a retry gets the kept result, and the receipt deferred
        # here is stored with it in one atomic write.
        results.record_charge(app, order_id=order_id, amount_cents=total_cents)
        charge = {"charge_id": f"ch_{order_id}", "amount_cents": total_cents}
        defer(
            "send-email",
            function=send_email,
            data={
                "to": email,
                "subject": f"Order #{order_id} confirmed",
                "body": f"Thanks! We charged {total_cents / 100:.2f} EUR ({charge['charge_id']}).",
            },
        )
        return charge

    charge = step.run("charge-card", charge_card)
    if plan.stock_retries_once and attempt == 0:
        results.record_parent_end(
            app, run_id=self.request.id, order_id=order_id, attempt=attempt, outcome="retry"
        )
        timeout = TimeoutError(f"stock check timed out after charge {charge['charge_id']}")
        raise self.retry(countdown=0.2, exc=timeout)
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
