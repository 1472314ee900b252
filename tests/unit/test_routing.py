"""Records carry the route their app resolved at defer(); records kept before that still load."""

from __future__ import annotations

import json

from celery import Celery

from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.outbox.routing import Route, resolve_route


def app_with_routes() -> Celery:
    app = Celery("billing", broker="memory://")
    app.conf.task_default_queue = "billing"
    app.conf.task_routes = {"celery_defer.fn.invoice": {"queue": "invoices", "routing_key": "inv.new"}}
    return app


def test_the_route_is_what_the_deferring_apps_router_says():
    app = app_with_routes()
    assert resolve_route(app, "celery_defer.fn.other", None) == Route("billing")
    assert resolve_route(app, "celery_defer.fn.other", "slow") == Route("slow")
    assert resolve_route(app, "celery_defer.fn.invoice", None) == Route("invoices", None, "inv.new")


def test_a_router_that_fails_leaves_the_route_to_the_sender(caplog):
    app = Celery("t", broker="memory://")
    app.conf.task_routes = [lambda *args, **kwargs: 1 / 0]
    assert resolve_route(app, "celery_defer.fn.x", "q") == Route("q")
    assert "routing celery_defer.fn.x failed" in caplog.text


def test_a_record_keeps_its_route_through_the_outbox():
    parent = ParentRef("p", "p", "tasks.parent")
    record = DeferRecord(
        "a", "celery_defer.fn.invoice", "invoice", "{}", 1, parent, "invoices", 3, "x", "inv.new"
    )
    decoded = DeferRecord.decode(record.encode())
    assert decoded == record
    assert decoded.route.send_options() == {"queue": "invoices", "exchange": "x", "routing_key": "inv.new"}


def test_a_record_kept_before_routes_were_carried_still_loads_and_sends():
    head = {"id": "a", "task": "celery_defer.fn.x", "fn": "x", "ts": 1, "run": "p", "root": "p", "ptask": "t"}
    old = DeferRecord.decode(json.dumps({**head, "q": None, "p": None}) + "\n{}")
    assert (old.queue, old.exchange, old.routing_key) == (None, None, None)
    assert old.route.send_options() == {}  # its sender's routing applies, as it always did


def test_a_router_function_is_asked_at_every_defer():
    app = Celery("t", broker="memory://")
    shards = iter(["s1", "s2"])
    app.conf.task_routes = [lambda name, *args, **kwargs: {"queue": next(shards)}]
    assert [resolve_route(app, "celery_defer.fn.x", None).queue for _ in range(2)] == ["s1", "s2"]
