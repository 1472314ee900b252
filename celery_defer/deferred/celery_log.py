"""Celery's own line for an attempt the library has already explained, left out.

An attempt that waits (a throttle, a concurrency line) or is a copy of a
finished run ends with an ``Ignore`` (``Requeued``, ``DuplicateRun``), and
Celery's tracer then logs ``Task <name>[<id>] ignored`` at INFO. The library
has just logged the same end as what it is ("waiting on throttle of
send-email, 1.2 s"), so that bare line says nothing more: a filter on Celery's
tracer logger drops it for exactly the attempts named through :func:`explained`.
Every other line of Celery's stays as it is.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

#: Celery's tracer logger, which logs the ``ignored`` line.
TRACE_LOGGER = "celery.app.trace"
#: Ids remembered at most: a line Celery never logs (eager runs) must not pile up.
_REMEMBERED = 1024

_ids: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()
_installed = False


class _ExplainedIgnores(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or data.get("description") != "ignored":
            return True
        with _lock:
            return _ids.pop(str(data.get("id")), True) is not None


def explained(task_id: str) -> None:
    """Say that this attempt's end was logged by the library: Celery's ``ignored`` line is dropped."""
    global _installed
    with _lock:
        if not _installed:
            logging.getLogger(TRACE_LOGGER).addFilter(_ExplainedIgnores())
            _installed = True
        _ids[task_id] = None
        while len(_ids) > _REMEMBERED:
            _ids.popitem(last=False)
