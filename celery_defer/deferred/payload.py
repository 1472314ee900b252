"""The static types that tie a deferred function to its payload: for type checkers only.

``DeferredFunction[T]`` is generic in its payload type ``T`` (the schema's type,
``dict[str, Any]`` without one). ``defer(id, function=f, data=...)`` is checked
against ``T`` through a ``ParamSpec``: the function exposes a signature
``(*, data: T = ...)`` and ``defer`` takes its keyword arguments from it, so a
type checker checks ``data`` (a ``TypedDict`` literal included) in the context
of ``T``. Nothing here changes what happens at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from typing_extensions import ParamSpec

T = TypeVar("T")
P = ParamSpec("P")

#: A ``schema`` config value whose validated type is ``T``: a pydantic model, a
#: ``TypedDict`` or another type pydantic validates, or a ``validate(data)`` callable.
SchemaOf = type[T] | Callable[[Any], T] | Callable[[Any], Awaitable[T]]


class AcceptsData(Protocol[P]):
    """What ``defer`` asks of ``function``: a data signature (``DeferredFunction`` has one)."""

    @property
    def defer_signature(self) -> Callable[P, None]:
        """``(*, data: T = ...) -> None``: the keyword arguments ``defer`` takes for it."""
        ...


class DeferCall(Protocol):
    """The type of :func:`celery_defer.defer`, and of ``ctx.defer``."""

    def __call__(self, id: str, function: AcceptsData[P], *args: P.args, **kwargs: P.kwargs) -> None: ...
