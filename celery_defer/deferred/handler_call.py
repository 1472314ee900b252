"""Calling a handler, ``def`` or ``async def``, and validating its payload first."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from celery_defer.config.schemas import PayloadSchema


def is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_coroutine(factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion on a fresh event loop, from sync code."""

    async def main() -> Any:
        return await factory()

    if not _loop_running():
        # Outside the except block that detected it: an error the handler raises
        # must not carry "no running event loop" as its __context__.
        return asyncio.run(main())
    # Called from code that already runs an event loop in this thread (an eager
    # run started from async code): give the handler a loop of its own.
    context = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(context.run, lambda: asyncio.run(main())).result()


def validate_payload(schema: PayloadSchema | None, data: Any) -> Any:
    """Validate received data (the receiver side of SPEC section 5)."""
    if schema is None:
        return data
    if schema.is_async:
        return run_coroutine(lambda: schema.validate_async(data))
    return schema.validate_sync(data)


def invoke_handler(handler: Callable[[Any], Any], ctx: Any, *, is_async: bool | None = None) -> Any:
    """Call the handler with its context; an ``async def`` one runs on its own loop.

    ``is_async``: :func:`is_async_callable` of ``handler``, when the caller knows it already.
    """
    if is_async_callable(handler) if is_async is None else is_async:
        return run_coroutine(lambda: handler(ctx))
    result = handler(ctx)
    if inspect.isawaitable(result):
        return run_coroutine(lambda: result)
    return result
