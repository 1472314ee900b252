"""The ``defer_*`` settings read from ``app.conf`` (SPEC section 9)."""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from celery_defer.errors import ConfigurationError
from celery_defer.redis_urls import check_transport_options, is_sentinel_url, parse_sentinel_url, replica_acks

logger = logging.getLogger(__name__)

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

#: Every setting this library reads; any other ``defer_*`` name is a mistake.
KNOWN_SETTINGS = (
    "defer_redis_url",
    "defer_key_prefix",
    "defer_recovery_interval",
    "defer_max_per_run",
    "defer_max_payload_bytes",
    "defer_lease",
    "defer_retry_base_delay",
    "defer_retry_max_delay",
    "defer_store_wait",
    "defer_done_ttl",
    "defer_redis_transport_options",
)
_OURS = re.compile(r"^(celery_)?defer_", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Settings:
    """The library's settings for one Celery app, with defaults applied."""

    redis_url: str | None
    redis_transport_options: Mapping[str, Any] = field(default_factory=dict)
    key_prefix: str = "celery_defer"
    recovery_interval_s: float = 30.0
    max_per_run: int = 1000
    max_payload_bytes: int = 4 * 1024 * 1024
    retry_base_delay_s: float = 1.0
    retry_max_delay_s: float = 300.0
    lease_s: float = 60.0
    store_wait_s: float = 300.0
    done_ttl_s: float = 7 * 24 * 3600.0

    def require_redis_url(self) -> str:
        """Return the Redis URL, or explain which setting is missing."""
        if not self.redis_url:
            raise ConfigurationError(
                "celery_defer needs Redis for its state and the broker is not Redis: set "
                "defer_redis_url, e.g. app.conf.defer_redis_url = 'redis://localhost:6379/0' "
                "(CELERY_DEFER_REDIS_URL with Django settings); the broker URL is used only "
                "when it is a Redis URL",
                key="defer_redis_url",
            )
        return self.redis_url


def _lookup(conf: Any, name: str) -> Any:
    # Plain Celery config, Django-style namespaced config, or upper-case keys.
    for candidate in (name, name.upper(), f"CELERY_{name.upper()}"):
        value = conf.get(candidate)
        if value is not None:
            return value
    return None


def _number(conf: Any, name: str, default: float, *, minimum: float) -> float:
    value = _lookup(conf, name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigurationError(f"{name} must be a number >= {minimum}, got {value!r}", key=name)
    return float(value)


def _positive(conf: Any, name: str, default: float) -> float:
    value = _lookup(conf, name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}", key=name)
    return float(value)


def unknown_settings(conf: Any) -> list[tuple[str, str | None]]:
    """Return each ``defer_*`` setting in ``conf`` this library does not know, with the closest known one.

    ``DEFER_*`` and ``CELERY_DEFER_*`` (Django's namespace) count too.
    """
    found: list[tuple[str, str | None]] = []
    for key in list(conf.keys()):
        if not isinstance(key, str) or not _OURS.match(key):
            continue
        name = key.lower().removeprefix("celery_")
        if name in KNOWN_SETTINGS:
            continue
        close = difflib.get_close_matches(name, KNOWN_SETTINGS, n=1, cutoff=0.6)
        closest = close[0] if close else None
        if closest is not None and key != name:  # show it in the spelling the user used
            closest = closest.upper() if key.startswith("DEFER_") else f"CELERY_{closest.upper()}"
        found.append((key, closest))
    return found


def read_settings(app: Celery) -> Settings:
    """Read and check the ``defer_*`` settings of ``app``; warn about unknown ones."""
    conf = app.conf
    for key, closest in unknown_settings(conf):
        hint = f"did you mean {closest}?" if closest else f"known settings: {', '.join(KNOWN_SETTINGS)}"
        logger.warning("unknown celery_defer setting %s is ignored; %s", key, hint)
    redis_url = _lookup(conf, "defer_redis_url")
    if redis_url is None:
        broker = conf.broker_url or ""
        if isinstance(broker, str) and broker.startswith(_REDIS_SCHEMES):
            redis_url = broker
    transport_options = check_transport_options(_lookup(conf, "defer_redis_transport_options"))
    if isinstance(redis_url, str) and is_sentinel_url(redis_url):
        parse_sentinel_url(redis_url, transport_options)  # a missing master_name stops a worker at start
    if isinstance(redis_url, str):
        replica_acks(redis_url, transport_options)
    prefix = _lookup(conf, "defer_key_prefix") or "celery_defer"
    if not isinstance(prefix, str) or not prefix.strip():
        raise ConfigurationError("defer_key_prefix must be a non-empty string", key="defer_key_prefix")
    if "{" in prefix or "}" in prefix:
        # Keys carry the prefix inside Redis Cluster hash tags (celery_defer.keys).
        raise ConfigurationError(
            f"defer_key_prefix {prefix!r} must not contain '{{' or '}}'", key="defer_key_prefix"
        )
    return Settings(
        redis_url=redis_url,
        redis_transport_options=transport_options,
        key_prefix=prefix,
        recovery_interval_s=_number(conf, "defer_recovery_interval", 30.0, minimum=0.1),
        max_per_run=int(_number(conf, "defer_max_per_run", 1000, minimum=1)),
        max_payload_bytes=int(_number(conf, "defer_max_payload_bytes", 4 * 1024 * 1024, minimum=2)),
        retry_base_delay_s=_number(conf, "defer_retry_base_delay", 1.0, minimum=0.0),
        retry_max_delay_s=_number(conf, "defer_retry_max_delay", 300.0, minimum=0.0),
        lease_s=_number(conf, "defer_lease", 60.0, minimum=1.0),
        store_wait_s=_number(conf, "defer_store_wait", 300.0, minimum=0.0),
        done_ttl_s=_positive(conf, "defer_done_ttl", 7 * 24 * 3600.0),
    )


def settings_for(app: Celery) -> Settings:
    """Return ``app``'s settings, read once on first use and kept.

    Like Celery's own worker settings, they are read when the library first
    needs them (the first run or defer); change ``app.conf`` before that, or
    call :func:`forget_settings` after.
    """
    cached: Settings | None = app.__dict__.get("_celery_defer_settings")
    if cached is None:
        cached = read_settings(app)
        app.__dict__["_celery_defer_settings"] = cached
    return cached


def forget_settings(app: Celery) -> None:
    """Make the next :func:`settings_for` read ``app.conf`` again."""
    app.__dict__.pop("_celery_defer_settings", None)
