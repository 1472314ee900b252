"""Where a deferred run's message goes, resolved once by the app that defers it.

Several Celery apps may share one Redis database and one ``defer_key_prefix``, each
with its own routes and default queue. Any worker's recovery pass may send any
app's records, so a record carries its destination as its own app's router
resolved it at ``defer()`` time: queue name, and the exchange and routing key when
a route sets them. Sending it then needs nothing from the sender's routing, and
works while every worker of the app that deferred it is down.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, NamedTuple

from celery import Celery
from celery.app.routes import MapRoute
from kombu import Exchange, Queue

logger = logging.getLogger(__name__)


class Route(NamedTuple):
    """A message destination by name: what ``send_task`` takes as ``queue``, ``exchange``, ``routing_key``."""

    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None

    def send_options(self) -> dict[str, Any]:
        """The ``send_task`` options of this route (the ones it sets)."""
        return {name: value for name, value in self._asdict().items() if value is not None}


#: Routes of apps whose routing is a plain mapping (``task_routes`` dicts): the same
#: task and queue option always route alike there, and asking Celery's router costs
#: more than the rest of a ``defer()`` call. Router functions are asked every time.
_known: weakref.WeakKeyDictionary[Celery, dict[tuple[str, str | None], Route]] = weakref.WeakKeyDictionary()
_known_lock = threading.Lock()


def resolve_route(app: Celery, task_name: str, queue: str | None) -> Route:
    """Route ``task_name`` (with the function's ``queue`` option) as ``app`` would send it.

    A router that fails here would fail at sending too: the route is then left to
    the sender, as before records carried one, and the failure is logged. Like the
    ``defer_*`` settings, an app's ``task_routes`` are read on first use.
    """
    known = _known.get(app)
    if known is not None and (task_name, queue) in known:
        return known[(task_name, queue)]
    route = _ask_router(app, task_name, queue)
    if all(isinstance(router, MapRoute) for router in app.amqp.router.routes):
        with _known_lock:
            _known.setdefault(app, {})[(task_name, queue)] = route
    return route


def _ask_router(app: Celery, task_name: str, queue: str | None) -> Route:
    try:
        routed: dict[str, Any] = app.amqp.router.route({"queue": queue} if queue else {}, task_name)
    except Exception:
        logger.warning("routing %s failed; its sender's routing will apply", task_name, exc_info=True)
        return Route(queue=queue)
    destination = routed.get("queue")
    exchange = routed.get("exchange")
    return Route(
        queue=destination.name if isinstance(destination, Queue) else destination,
        exchange=exchange.name if isinstance(exchange, Exchange) else exchange,
        routing_key=routed.get("routing_key"),
    )
