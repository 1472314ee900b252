"""Tasks and deferred functions of the shop app (found by ``app.autodiscover_tasks()``)."""

from __future__ import annotations

from pydantic import BaseModel

from celery_defer import DeferContext, create_defer, defer
from tests.django_project.celery import app
from tests.django_project.shop.models import AuditEntry, Order


class Receipt(BaseModel):
    order_id: int
    email: str


class Audit(BaseModel):
    order_id: int
    event: str


def send_receipt_handler(ctx: DeferContext[Receipt]) -> None:
    Order.objects.filter(pk=ctx.event.data.order_id).update(receipt_sent=True)


def audit_handler(ctx: DeferContext[Audit]) -> None:
    AuditEntry.objects.create(
        order_id=ctx.event.data.order_id,
        event=ctx.event.data.event,
        run_id=ctx.run_id,
        parent_task=ctx.parents[0].task_name,
    )


send_receipt = create_defer(
    app, {"id": "send-receipt", "schema": Receipt, "retries": 2}, send_receipt_handler
)
audit = create_defer(app, {"id": "audit", "schema": Audit, "retries": 2}, audit_handler)


@app.task
def order_placed(order_id: int) -> None:
    """Runs once the order is committed; its receipt is sent when it finalizes."""
    order = Order.objects.get(pk=order_id)
    defer("receipt", function=send_receipt, data={"order_id": order.pk, "email": order.email})
