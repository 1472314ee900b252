"""Code a user writes with celery_defer, correctly typed: mypy --strict must accept all of it."""

from __future__ import annotations

from typing import Any, TypedDict

from celery import Celery
from pydantic import BaseModel

from celery_defer import DeferContext, DeferredFunction, DeferTask, create_defer, defer
from celery_defer.testing import capture_defers, make_context

app = Celery("shop", broker="redis://localhost:6379/0", task_cls=DeferTask)


class Email(BaseModel):
    to: str
    body: str


class Sms(TypedDict):
    to: str
    text: str


def send_email_handler(ctx: DeferContext[Email]) -> None:
    ctx.logger.info("sending to %s", ctx.event.data.to)
    ctx.defer("sms", function=send_sms, data={"to": ctx.event.data.to, "text": ctx.event.data.body})


def send_sms_handler(ctx: DeferContext[Sms]) -> str:
    return ctx.event.data["text"]


send_email = create_defer(app, {"id": "send-email", "schema": Email, "retries": 3}, send_email_handler)
send_sms: DeferredFunction[Sms] = create_defer(app, {"id": "send-sms", "schema": Sms}, send_sms_handler)


@create_defer(app, {"id": "audit"})
async def audit(ctx: DeferContext[dict[str, Any]]) -> None:
    ctx.logger.info("audit %s", ctx.event.data.get("order_id"))


@create_defer(app, {"id": "score", "schema": Email, "throttle": {"limit": 10, "period": "1m"}})
def score(ctx: DeferContext[Email]) -> int:
    return len(ctx.event.data.body)


@app.task
def order_placed(order_id: int) -> None:
    defer("send", function=send_email, data=Email(to="a@b.com", body="hi"))
    defer("sms", function=send_sms, data={"to": "+1", "text": "hi"})
    defer("audit", function=audit, data={"order_id": order_id})
    defer("score", function=score, data=Email(to="a@b.com", body="hi"))
    defer("empty", function=audit)


def backfill() -> str:
    return send_sms.start({"to": "+1", "text": "sorry"}, id="backfill-1").id


def unit_test() -> None:
    with capture_defers() as captured:
        send_email_handler(make_context(send_email, Email(to="a", body="b")))
    assert captured[0].function_id == "send-sms"
