"""The ``config`` of ``create_defer``: its typed shape and its validation (SPEC section 3)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal

from typing_extensions import NotRequired, Required, TypedDict, TypeVar

from celery_defer.config.durations import Duration, parse_duration_s
from celery_defer.config.flow_keys import FLOW_KEYS, GuardSpec, parse_flow
from celery_defer.config.schemas import PayloadSchema
from celery_defer.deferred.payload import SchemaOf
from celery_defer.errors import ConfigurationError

KeyExpr = str | Callable[[Any], Any]

#: The schema type of a config; a bare ``DeferConfig`` is ``DeferConfig[Any]``.
S = TypeVar("S", default=Any)


class ConcurrencyConfig(TypedDict, total=False):
    limit: Required[int]
    key: KeyExpr
    scope: Literal["fn", "app"]


class ThrottleConfig(TypedDict, total=False):
    limit: Required[int]
    period: Required[Duration]
    burst: int
    key: KeyExpr


class RateLimitConfig(TypedDict, total=False):
    limit: Required[int]
    period: Required[Duration]
    key: KeyExpr


class DebounceConfig(TypedDict, total=False):
    period: Required[Duration]
    key: KeyExpr
    timeout: Duration


class PriorityConfig(TypedDict):
    run: int | Callable[[Any], int]


class TimeoutsConfig(TypedDict, total=False):
    start: Duration
    finish: Duration


class SingletonConfig(TypedDict, total=False):
    key: KeyExpr
    mode: Required[Literal["skip", "cancel"]]


class DeferConfigKeys(TypedDict, total=False):
    """Every key of a ``create_defer`` config but ``schema`` (a config without a schema)."""

    id: Required[str]
    name: str
    retries: int
    concurrency: NotRequired[int | ConcurrencyConfig | list[ConcurrencyConfig]]
    throttle: ThrottleConfig
    rate_limit: RateLimitConfig
    debounce: DebounceConfig
    idempotency: KeyExpr
    priority: PriorityConfig
    timeouts: TimeoutsConfig
    singleton: SingletonConfig
    queue: str


class DeferConfig(DeferConfigKeys, Generic[S], total=False):
    """The config dict of :func:`celery_defer.create_defer`; ``S`` is the schema's type."""

    schema: SchemaOf[S]


class SchemaDeferConfig(DeferConfigKeys, Generic[S], total=False):
    """A config with a ``schema``: its functions' payload type is the schema's."""

    schema: Required[SchemaOf[S]]


_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_UNSUPPORTED = {
    "triggers": "triggers",
    "on_failure": "on_failure",
    "onFailure": "on_failure",
    "batch_events": "batch_events",
    "batchEvents": "batch_events",
}
_KNOWN = {"id", "name", "schema", "retries", "priority", "timeouts", "queue", *FLOW_KEYS}
MAX_RETRIES = 20


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True, slots=True)
class FunctionOptions:
    """A validated config, with defaults applied and durations in seconds."""

    id: str
    name: str
    schema: PayloadSchema | None = None
    retries: int = 4
    priority: int | Callable[[Any], int] | None = None
    start_timeout_s: float | None = None
    finish_timeout_s: float | None = None
    queue: str | None = None
    flow: tuple[GuardSpec, ...] = ()

    @property
    def task_name(self) -> str:
        """The Celery task name of the deferred function: ``celery_defer.fn.<id>``."""
        return f"celery_defer.fn.{self.id}"


def _fail(key: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"config key {key!r}: {message}", key=key)


def _duration(key: str, value: object) -> float:
    try:
        return parse_duration_s(value)
    except ValueError as exc:
        raise _fail(key, str(exc)) from exc


def _check_keys(config: Mapping[str, Any]) -> None:
    for key in config:
        if not isinstance(key, str):
            raise ConfigurationError(f"config keys must be strings, got {key!r}", key=repr(key))
        if key in _UNSUPPORTED:
            raise _fail(key, f"{_UNSUPPORTED[key]} is not supported for deferred functions")
        if key not in _KNOWN:
            hint = _camel_to_snake(key)
            suffix = f" (did you mean {hint!r}?)" if hint in _KNOWN else ""
            raise _fail(key, f"unknown key{suffix}")


def _priority(value: object) -> int | Callable[[Any], int]:
    if not isinstance(value, Mapping) or set(value) != {"run"}:
        raise _fail("priority", "expected {'run': <int 0..9 or callable>}")
    run = value["run"]
    if callable(run):
        return run  # type: ignore[no-any-return]
    if isinstance(run, bool) or not isinstance(run, int) or not 0 <= run <= 9:
        raise _fail("priority", f"run must be an int 0..9 or a callable, got {run!r}")
    return run


def _timeouts(value: object) -> tuple[float | None, float | None]:
    if not isinstance(value, Mapping) or not set(value) <= {"start", "finish"}:
        raise _fail("timeouts", "expected {'start'?: duration, 'finish'?: duration}")
    start = _duration("timeouts.start", value["start"]) if "start" in value else None
    finish = _duration("timeouts.finish", value["finish"]) if "finish" in value else None
    if finish is not None and finish <= 0:
        raise _fail("timeouts.finish", "must be greater than 0")
    return start, finish


def validate_config(config: object) -> FunctionOptions:
    """Check a ``create_defer`` config and return its :class:`FunctionOptions`.

    Raises:
        ConfigurationError: naming the first key at fault.
    """
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"config must be a dict, got {type(config).__name__}", key="config")
    _check_keys(config)
    fn_id = config.get("id")
    if not isinstance(fn_id, str) or not _ID_RE.fullmatch(fn_id):
        raise _fail("id", f"required; letters, digits, '-', '_', '.', ':' only; got {fn_id!r}")
    name = config.get("name", fn_id)
    if not isinstance(name, str) or not name.strip():
        raise _fail("name", f"must be a non-empty string, got {name!r}")
    retries = config.get("retries", 4)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise _fail("retries", f"must be an int from 0 to {MAX_RETRIES}, got {retries!r}")
    queue = config.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue.strip()):
        raise _fail("queue", f"must be a non-empty string, got {queue!r}")
    start_s, finish_s = _timeouts(config["timeouts"]) if "timeouts" in config else (None, None)
    return FunctionOptions(
        id=fn_id,
        name=name,
        schema=PayloadSchema(config["schema"]) if config.get("schema") is not None else None,
        retries=retries,
        priority=_priority(config["priority"]) if "priority" in config else None,
        start_timeout_s=start_s,
        finish_timeout_s=finish_s,
        queue=queue,
        flow=parse_flow(config),
    )
