"""celery_defer: deferred functions for Celery.

A task whose base is :class:`DeferTask` calls :func:`defer` to record work that
should happen *because of* its run; when the run finalizes, each recorded defer
becomes an independent run of a deferred function made by :func:`create_defer`.
"""

from __future__ import annotations

from celery_defer.config.options import DeferConfig
from celery_defer.deferred.context import DeferContext, DeferEvent, Parent
from celery_defer.deferred.create import create_defer
from celery_defer.deferred.function import DeferredFunction
from celery_defer.errors import (
    CeleryDeferError,
    ConfigurationError,
    DeferredRunTimeoutError,
    NonRetriableError,
    RetryAfterError,
    StepResultError,
    StoreUnavailableError,
)
from celery_defer.parent.call_site import defer
from celery_defer.parent.task import DeferTask
from celery_defer.steps.current import step
from celery_defer.steps.run_steps import Steps

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
    "StepResultError",
    "Steps",
    "StoreUnavailableError",
    "create_defer",
    "defer",
    "step",
]
