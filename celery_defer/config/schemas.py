"""Payload schemas: validation at the call site (sync) and in the receiver (may await)."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from typing import Any, cast

import pydantic
from pydantic import BaseModel, TypeAdapter

from celery_defer.errors import AsyncSchemaError, ConfigurationError, SchemaRejected

_STRICT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode_plain(data: Any) -> str:
    """Encode JSON-compatible data strictly: no NaN, no objects JSON cannot hold."""
    return _STRICT_JSON.encode(data)


def _is_type_like(schema: object) -> bool:
    return isinstance(schema, type) or typing.get_origin(schema) is not None


class PayloadSchema:
    """A ``schema`` config value, ready to validate payloads.

    Args:
        schema: a pydantic model, any type ``TypeAdapter`` accepts (``TypedDict``,
            dataclass, ...), or a callable ``validate(data) -> data`` that raises on
            bad data and may be ``async def``.
    """

    def __init__(self, schema: object) -> None:
        self.source = schema
        self._adapter: TypeAdapter[Any] | None = None
        self._validate: Callable[[Any], Any] | None = None
        self.model: type[BaseModel] | None = None
        if _is_type_like(schema):
            try:
                self._adapter = TypeAdapter(cast(Any, schema))
            except pydantic.PydanticUserError as exc:
                raise ConfigurationError(
                    f"schema: pydantic cannot validate {schema!r}: {exc}", key="schema"
                ) from exc
            if isinstance(schema, type) and issubclass(schema, BaseModel):
                self.model = schema
        elif callable(schema):
            self._validate = schema
        else:
            raise ConfigurationError(
                f"schema must be a pydantic model, a type pydantic can validate, or a "
                f"callable validate(data); got {type(schema).__name__}",
                key="schema",
            )
        self.is_async = self._validate is not None and (
            inspect.iscoroutinefunction(self._validate)
            or inspect.iscoroutinefunction(getattr(self._validate, "__call__", None))  # noqa: B004
        )

    def _as_input(self, data: Any) -> Any:
        if isinstance(data, BaseModel) and not (self.model and isinstance(data, self.model)):
            return data.model_dump(mode="python")
        return data

    def to_json(self, data: Any) -> str:
        """Validate ``data`` at the call site and return it as JSON text.

        Raises:
            AsyncSchemaError: the schema validates asynchronously.
            SchemaRejected: the data failed the schema.
            ValueError, TypeError: the validated data is not JSON-serialisable.
        """
        if self.is_async:
            raise AsyncSchemaError("its validation is asynchronous")
        if self._adapter is not None:
            try:
                value = self._adapter.validate_python(self._as_input(data))
            except pydantic.ValidationError as exc:
                raise SchemaRejected(str(exc)) from exc
            return self._adapter.dump_json(value).decode("utf-8")
        assert self._validate is not None
        try:
            result = self._validate(data)
        except Exception as exc:
            raise SchemaRejected(f"{type(exc).__name__}: {exc}") from exc
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise AsyncSchemaError("its validation returned an awaitable")
        value = data if result is None else result
        if isinstance(value, BaseModel):
            return value.model_dump_json()
        if not isinstance(value, dict):
            raise SchemaRejected(f"the validator returned {type(value).__name__}, not a JSON object")
        return encode_plain(value)

    def validate_sync(self, data: Any) -> Any:
        """Validate received data when the schema is synchronous."""
        if self._adapter is not None:
            return self._adapter.validate_python(data)
        assert self._validate is not None
        result = self._validate(data)
        return data if result is None else result

    async def validate_async(self, data: Any) -> Any:
        """Validate received data, awaiting an asynchronous validator."""
        if self._adapter is not None:
            return self._adapter.validate_python(data)
        assert self._validate is not None
        result = self._validate(data)
        if inspect.isawaitable(result):
            result = await result
        return data if result is None else result
