"""Calling a handler, ``def`` or ``async def``, with its payload validated first."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from collections.abc import Callable
from typing import Any

from celery_defer.schema import PayloadSchema


def is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def _run_coroutine(factory: Callable[[], Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    # Called from code that already runs an event loop in this thread (an eager
    # run started from async code): give the handler a loop of its own.
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, lambda: asyncio.run(factory())).result()


def call_handler(
    handler: Callable[[Any], Any],
    schema: PayloadSchema | None,
    data: Any,
    make_context: Callable[[Any], Any],
) -> Any:
    """Validate ``data`` (receiver side), build the context, call the handler.

    Async validators and async handlers run on one event loop per attempt.
    """
    needs_loop = is_async_callable(handler) or (schema is not None and schema.is_async)
    if not needs_loop:
        payload = schema.validate_sync(data) if schema is not None else data
        return handler(make_context(payload))

    async def attempt() -> Any:
        payload = await schema.validate_async(data) if schema is not None else data
        result = handler(make_context(payload))
        if inspect.isawaitable(result):
            result = await result
        return result

    return _run_coroutine(attempt)
