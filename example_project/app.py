"""The shop's Celery app: every task is a ``DeferTask``, all state lives in one Redis.

The Redis comes from ``REDIS_URL`` (default ``redis://127.0.0.1:6379``): db 0
carries the broker and celery_defer's state, db 1 the task results. The driver
(``python -m example_project``) calls :func:`configure` again once it knows
which Redis it uses.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from celery import Celery

import celery_defer

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
#: The shop's own queue; its name is under the ``example:`` prefix the driver clears.
QUEUE = "example:orders"


def redis_db_url(base_url: str, db: int) -> str:
    """Return the Redis URL ``base_url`` pointing at database ``db`` (any db in it is replaced)."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def configure(app: Celery, base_url: str) -> None:
    """Point ``app`` (broker, results and celery_defer state) at the Redis ``base_url``."""
    app.conf.update(
        broker_url=redis_db_url(base_url, 0),
        result_backend=redis_db_url(base_url, 1),
        defer_redis_url=redis_db_url(base_url, 0),
    )


app = Celery("example_project", task_cls=celery_defer.DeferTask)
app.conf.update(
    task_acks_late=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    # celery_defer: a quick recovery pass and quick retries, for a demo.
    defer_recovery_interval=2.0,
    defer_retry_base_delay=0.2,
    defer_retry_max_delay=2.0,
)
configure(app, os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
