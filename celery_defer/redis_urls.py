"""Reading ``defer_redis_url`` and ``defer_redis_transport_options`` into connection targets.

Kept apart from ``celery_defer.redis_clients`` so each kind of deployment is one small
branch here (a single server, Sentinel, and beside them Redis Cluster), while
``connect()`` stays one recipe for timeouts, retries and decoding.

Sentinel URLs follow kombu's Sentinel transport, so a Celery app can use the same
text for its broker and for this library::

    defer_redis_url = "sentinel://:secret@h1:26379/2;sentinel://h2:26379"
    defer_redis_transport_options = {"master_name": "mymaster"}

Every ``;``-separated part names one sentinel (port 26379 when omitted). User,
password and database number, from whichever part carries them, are for the master;
the sentinels' own credentials go in ``sentinel_kwargs``, as with kombu and redis-py.

A Redis Cluster URL is ``redis+cluster://[user:password@]host:port[,host:port...][/0]``
with optional TLS options in the query (``rediss+cluster://`` for TLS): any one
reachable seed node is enough, the client learns the others from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celery_defer.errors import ConfigurationError

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379

#: Transport options this library reads; any other key is a mistake worth an error.
TRANSPORT_OPTIONS = (
    "master_name",
    "sentinel_kwargs",
    "min_other_sentinels",
    "min_replica_acks",
    "replica_ack_timeout_ms",
)

#: Replicas that must hold a script's writes before it counts as done, for
#: Sentinel URLs: a failover then promotes a replica that has them (see README,
#: "Guarantees"). Plain URLs default to 0: without a replica there is nothing to wait for.
SENTINEL_REPLICA_ACKS = 1
#: How long a script waits for its replicas before the write counts as failed.
REPLICA_ACK_TIMEOUT_MS = 1000

_URL_KEY = "defer_redis_url"
_PASSWORD = re.compile(r"(://[^:/@;]*):[^@;/]*@")
_OPTIONS_KEY = "defer_redis_transport_options"


@dataclass(frozen=True, slots=True)
class ReplicaAcks:
    """How many replicas must acknowledge the writes of each script, within how long."""

    replicas: int = 0
    timeout_ms: int = REPLICA_ACK_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A master found through Redis Sentinel."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict)
    min_other_sentinels: int = 0


def is_sentinel_url(url: str) -> bool:
    """True when ``url`` names Redis Sentinels (``sentinel://...``)."""
    return url.lower().startswith(f"{SENTINEL_SCHEME}://")


def check_transport_options(options: Any) -> dict[str, Any]:
    """Return ``defer_redis_transport_options`` as a dict, or say what is wrong with it.

    Raises:
        ConfigurationError: it is not a mapping, or has a key this library does not read.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(
            f"{_OPTIONS_KEY} must be a dict, got {type(options).__name__}", key=_OPTIONS_KEY
        )
    unknown = sorted(str(key) for key in options if key not in TRANSPORT_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"{_OPTIONS_KEY} has unknown keys {', '.join(unknown)}; known: {', '.join(TRANSPORT_OPTIONS)}",
            key=_OPTIONS_KEY,
        )
    return dict(options)


def replica_acks(url: str, options: Mapping[str, Any]) -> ReplicaAcks:
    """The replica acknowledgement every script waits for, from the options and the URL kind."""
    default = SENTINEL_REPLICA_ACKS if is_sentinel_url(url) else 0
    replicas = _whole(options, "min_replica_acks", default, minimum=0)
    timeout_ms = _whole(options, "replica_ack_timeout_ms", REPLICA_ACK_TIMEOUT_MS, minimum=1)
    return ReplicaAcks(replicas=replicas, timeout_ms=timeout_ms)


def parse_sentinel_url(url: str, options: Mapping[str, Any]) -> SentinelTarget:
    """Read a ``sentinel://`` URL (one or several, ``;``-separated) and its transport options.

    Raises:
        ConfigurationError: a part is not a sentinel URL, or ``master_name`` is missing.
    """
    master_name = options.get("master_name")
    if not isinstance(master_name, str) or not master_name:
        raise ConfigurationError(
            f"{_URL_KEY} {_redacted(url)!r} names Redis Sentinels, so {_OPTIONS_KEY} needs "
            f"'master_name', the name the sentinels monitor the master by "
            f"(e.g. {_OPTIONS_KEY} = {{'master_name': 'mymaster'}}); got {master_name!r}",
            key=_OPTIONS_KEY,
        )
    sentinel_kwargs = options.get("sentinel_kwargs") or {}
    if not isinstance(sentinel_kwargs, Mapping):
        raise ConfigurationError(
            f"{_OPTIONS_KEY}['sentinel_kwargs'] must be a dict of redis-py connection options",
            key=_OPTIONS_KEY,
        )
    sentinels: list[tuple[str, int]] = []
    username: str | None = None
    password: str | None = None
    db: int | None = None
    for part in (piece.strip() for piece in url.split(";")):
        if not part:
            continue
        parsed = _split(part)
        sentinels.append((parsed.hostname or "localhost", parsed.port or DEFAULT_SENTINEL_PORT))
        username = username or (unquote(parsed.username) if parsed.username else None)
        password = password or (unquote(parsed.password) if parsed.password else None)
        path = parsed.path.strip("/")
        if db is None and path:
            if not path.isdigit():
                raise ConfigurationError(
                    f"{_URL_KEY}: database {path!r} in {_redacted(part)!r} is not a number", key=_URL_KEY
                )
            db = int(path)
    if not sentinels:
        raise ConfigurationError(f"{_URL_KEY} {url!r} names no sentinel", key=_URL_KEY)
    return SentinelTarget(
        sentinels=tuple(sentinels),
        master_name=master_name,
        db=db or 0,
        username=username,
        password=password,
        sentinel_kwargs=dict(sentinel_kwargs),
        min_other_sentinels=_whole(options, "min_other_sentinels", 0, minimum=0),
    )


def _split(part: str) -> Any:
    try:
        parsed = urlsplit(part)
        parsed.port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError as exc:
        message = f"{_URL_KEY}: {_redacted(part)!r} is not a URL: {exc}"
        raise ConfigurationError(message, key=_URL_KEY) from exc
    if parsed.scheme.lower() != SENTINEL_SCHEME:
        raise ConfigurationError(
            f"{_URL_KEY}: {_redacted(part)!r} is not a sentinel:// URL; with Sentinel every "
            f"';'-separated part names one sentinel",
            key=_URL_KEY,
        )
    return parsed


def _whole(options: Mapping[str, Any], name: str, default: int, *, minimum: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{_OPTIONS_KEY}[{name!r}] must be a whole number >= {minimum}, got {value!r}", key=_OPTIONS_KEY
        )
    return value


def _redacted(url: str) -> str:
    # Error messages end up in logs: never print a password.
    return _PASSWORD.sub(r"\1:***@", url)


#: The schemes of a Redis Cluster URL, plain and TLS.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: The query options a cluster URL may carry, passed to every node's connection.
CLUSTER_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_DEFAULT_PORT = 6379


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """A parsed ``redis+cluster://`` URL.

    Attributes:
        nodes: the seed nodes, ``(host, port)``.
        username: the ACL user, if any.
        password: the password, if any.
        tls: whether connections use TLS (``rediss+cluster://``).
        options: the TLS options of the query string.
    """

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def _fail(url: str, problem: str) -> ConfigurationError:
    # The password never goes into an error message.
    shown = url
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        shown = f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
    return ConfigurationError(f"{_URL_KEY} {shown!r}: {problem}", key=_URL_KEY)


def _node(url: str, text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, port_text = text[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise _fail(url, f"seed node {text!r} has no host")
    if not port_text:
        return host, _DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _fail(url, f"seed node {text!r} has no valid port")
    return host, int(port_text)


def parse_cluster_url(url: str) -> ClusterUrl:
    """Read a ``redis+cluster://`` URL.

    Raises:
        ConfigurationError: naming what is wrong (no seed node, a bad port, a
            database other than 0, an unknown option).
    """
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        raise _fail(url, f"not a cluster URL (expected {' or '.join(s + '://' for s in CLUSTER_SCHEMES)})")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user_text, has_password, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if has_password else None
    nodes = tuple(_node(url, part.strip()) for part in hosts.split(",") if part.strip())
    if not nodes:
        raise _fail(url, "names no seed node (host:port)")
    if path.strip("/") not in ("", "0"):
        raise _fail(url, f"a Redis Cluster has database 0 only, not {path.strip('/')!r}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(CLUSTER_OPTIONS))
    if unknown:
        raise _fail(url, f"unknown option(s) {unknown}; allowed: {list(CLUSTER_OPTIONS)}")
    return ClusterUrl(nodes, username, password, scheme.lower() == "rediss+cluster", options)
