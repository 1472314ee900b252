"""Mistakes mypy must report; each line that must fail ends with ``# E: <error code>``."""

from __future__ import annotations

from typing import TypedDict

from celery import Celery
from pydantic import BaseModel

from celery_defer import DeferContext, DeferTask, create_defer, defer

app = Celery("shop", broker="redis://localhost:6379/0", task_cls=DeferTask)


class Email(BaseModel):
    to: str
    body: str


class Sms(BaseModel):
    to: str


class EmailDict(TypedDict):
    to: str
    body: str


def send_email_handler(ctx: DeferContext[Email]) -> None:
    print(ctx.event.data.too)  # E: attr-defined


def send_sms_handler(ctx: DeferContext[Sms]) -> None: ...


def mail_dict_handler(ctx: DeferContext[EmailDict]) -> None: ...


send_email = create_defer(app, {"id": "send-email", "schema": Email}, send_email_handler)
mail_dict = create_defer(app, {"id": "mail-dict", "schema": EmailDict}, mail_dict_handler)
sms_on_email = create_defer(app, {"id": "sms", "schema": Email}, send_sms_handler)  # E: call-overload


@app.task
def plain_task() -> None: ...


@app.task
def order_placed() -> None:
    defer("a", function=send_email, data={"to": 1})  # E: arg-type
    defer("b", function=mail_dict, data={"to": 1, "body": "hi"})  # E: typeddict-item
    defer("c", function=send_email, data=Sms(to="x"))  # E: arg-type
    defer("d", function=plain_task, data={})  # E: arg-type
    defer("e", function=send_email, dat=Email(to="a", body="b"))  # E: call-arg
    send_email.start({"to": 1}, id="x")  # E: arg-type
