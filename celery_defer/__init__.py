"""celery_defer: deferred functions for Celery.

A task whose base is :class:`DeferTask` calls :func:`defer` to record work that
should happen *because of* its run; when the run finalizes, each recorded defer
becomes an independent run of a deferred function made by :func:`create_defer`.
"""

from __future__ import annotations

from celery_defer.api import create_defer
from celery_defer.call import defer
from celery_defer.config import DeferConfig
from celery_defer.context import DeferContext, DeferEvent, Parent
from celery_defer.errors import (
    CeleryDeferError,
    ConfigurationError,
    DeferredRunTimeoutError,
    NonRetriableError,
    RetryAfterError,
    StoreUnavailableError,
)
from celery_defer.function import DeferredFunction
from celery_defer.task import DeferTask

__all__ = [
    "CeleryDeferError",
    "ConfigurationError",
    "DeferConfig",
    "DeferContext",
    "DeferEvent",
    "DeferTask",
    "DeferredFunction",
    "DeferredRunTimeoutError",
    "NonRetriableError",
    "Parent",
    "RetryAfterError",
    "StoreUnavailableError",
    "create_defer",
    "defer",
]
