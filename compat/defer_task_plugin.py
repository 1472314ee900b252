"""pytest plugin: ``celery_defer.DeferTask`` as the default task class of every Celery app.

Loaded into Celery's own unit tests by ``compat/celery_unit_tests.sh`` (``-p
defer_task_plugin``): every ``Celery(...)`` made without a ``task_cls`` gets
``task_cls="celery_defer:DeferTask"``, as a user configuring it app-wide would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.app import base

DEFER_TASK_CLS = "celery_defer:DeferTask"
_plain_init = base.Celery.__init__


def _init_with_defer_task(self: base.Celery, *args: Any, task_cls: Any = None, **kwargs: Any) -> None:
    _plain_init(self, *args, task_cls=task_cls or DEFER_TASK_CLS, **kwargs)


base.Celery.__init__ = _init_with_defer_task


@pytest.fixture(scope="session", autouse=True)
def defer_task_is_the_default() -> Iterator[None]:
    """Fail the session at once if the switch did not take."""
    from celery import Celery

    from celery_defer import DeferTask

    app = Celery("probe", set_as_current=False)
    assert issubclass(app.Task, DeferTask), app.Task.__mro__
    app.close()
    yield
