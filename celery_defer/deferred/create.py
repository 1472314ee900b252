"""``create_defer``: define a deferred function on a Celery app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

from celery import Celery

from celery_defer.config.options import (
    DeferConfig,
    DeferConfigKeys,
    FunctionOptions,
    SchemaDeferConfig,
    validate_config,
)
from celery_defer.deferred.context import DeferContext
from celery_defer.deferred.function import DeferredFunction, execute_message
from celery_defer.deferred.payload import T
from celery_defer.errors import ConfigurationError, MalformedMessageError
from celery_defer.parent.worker_signals import install

Handler = Callable[[Any], Any]


@overload
def create_defer(
    app: Celery[Any], config: SchemaDeferConfig[T], handler: Callable[[DeferContext[T]], Any]
) -> DeferredFunction[T]: ...


@overload
def create_defer(
    app: Celery[Any], config: SchemaDeferConfig[T], handler: None = None
) -> Callable[[Callable[[DeferContext[T]], Any]], DeferredFunction[T]]: ...


@overload
def create_defer(
    app: Celery[Any], config: DeferConfigKeys, handler: Callable[[DeferContext[dict[str, Any]]], Any]
) -> DeferredFunction[dict[str, Any]]: ...


@overload
def create_defer(
    app: Celery[Any], config: DeferConfigKeys, handler: None = None
) -> Callable[[Callable[[DeferContext[dict[str, Any]]], Any]], DeferredFunction[dict[str, Any]]]: ...


@overload
def create_defer(
    app: Celery[Any], config: DeferConfig[T], handler: Callable[[DeferContext[T]], Any]
) -> DeferredFunction[T]: ...


def create_defer(
    app: Celery[Any], config: DeferConfig[Any] | DeferConfigKeys, handler: Handler | None = None
) -> DeferredFunction[Any] | Callable[[Handler], DeferredFunction[Any]]:
    """Define a deferred function and register it on ``app`` as a Celery task.

    Typed: with a ``schema`` (a pydantic model, a ``TypedDict``, a validator
    returning ``T``) the result is a ``DeferredFunction[T]`` whose handler takes
    a ``DeferContext[T]`` and whose ``defer(..., data=...)`` must be a ``T``;
    without one, ``T`` is ``dict[str, Any]``.

    Args:
        app: the Celery app the function's runs go through.
        config: the function's config (SPEC section 3); validated now.
        handler: ``def handler(ctx)`` or ``async def handler(ctx)``. Omit it to
            use ``create_defer(app, config)`` as a decorator.

    Returns:
        The :class:`DeferredFunction`, to pass as ``defer(..., function=...)``.

    Raises:
        ConfigurationError: the config is invalid; the message names the key.
    """
    options = validate_config(config)
    if handler is None:
        return lambda fn: _register(app, options, fn)
    return _register(app, options, handler)


def _register(app: Celery, options: FunctionOptions, handler: Handler) -> DeferredFunction[Any]:
    if not callable(handler):
        raise ConfigurationError(f"the handler of {options.id!r} must be callable", key="handler")
    existing = app._tasks.get(options.task_name)
    existing_handler = getattr(existing, "handler", None)
    if existing is not None and _origin(existing_handler) != _origin(handler):
        raise ConfigurationError(
            f"id {options.id!r} is already used by another deferred function on this app",
            key="id",
        )
    install(app)
    attributes: dict[str, Any] = {
        "__celery_defer_options__": options,
        "handler": staticmethod(handler),
        "max_retries": options.retries,
        # The message is acknowledged when the run ends, whatever the app's own
        # acks_late: a worker that dies after taking it, before its claim, gives
        # it back to the broker. The claim makes every copy safe (never twice);
        # a run that dies mid-handler is also sent again by recovery (claims.py).
        "acks_late": True,
        "reject_on_worker_lost": True,
        # Logged once by the run itself, naming the task id; Celery then says
        # "raised expected" at INFO instead of a second ERROR with a traceback.
        "throws": (MalformedMessageError,),
        "__doc__": handler.__doc__,
        "__module__": getattr(handler, "__module__", __name__),
    }
    if options.finish_timeout_s is not None:
        attributes["soft_time_limit"] = options.finish_timeout_s
        attributes["time_limit"] = options.finish_timeout_s + 5
    task: DeferredFunction[Any] = app.task(
        name=options.task_name,
        base=DeferredFunction,
        bind=True,
        lazy=False,
        shared=False,
        **attributes,
    )(execute_message)
    return task


def _origin(handler: object) -> tuple[str, str] | None:
    if handler is None:
        return None
    return (getattr(handler, "__module__", ""), getattr(handler, "__qualname__", repr(handler)))
