"""A Celery app that uses celery_defer without a Redis for its state (``CDT_BROKER``, no defer_redis_url).

Its worker must refuse to start. It also carries a misspelt setting, which must be warned about.
With ``CDT_NO_FUNCTIONS=1`` it defines no deferred function: a DeferTask app that
defers nothing, whose worker starts like any Celery worker.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_defer import DeferTask, create_defer

app = Celery("noredis", broker=os.environ.get("CDT_BROKER", "memory://"), task_cls=DeferTask)
app.conf.update(defer_max_per_rnu=10, broker_connection_retry_on_startup=False)

if os.environ.get("CDT_NO_FUNCTIONS") != "1":
    notify = create_defer(app, {"id": "notify"}, lambda ctx: None)
