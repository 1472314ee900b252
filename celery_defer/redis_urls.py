"""What ``defer_redis_url`` may name besides one server: a Redis Cluster.

redis-py reads ``redis://`` and ``rediss://`` itself (``Redis.from_url``); it has no
URL for a cluster with several seed nodes, so the ``redis+cluster://`` form is read
here: ``redis+cluster://[user:password@]host:port[,host:port...][/0][?option=value]``,
``rediss+cluster://`` for TLS. Any one reachable seed node is enough: the client
learns the others from it. A cluster has database 0 only. Options are the TLS
settings redis-py takes (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs``, ``ssl_check_hostname``); anything else is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from celery_defer.errors import ConfigurationError

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
    return ConfigurationError(f"defer_redis_url {shown!r}: {problem}", key="defer_redis_url")


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
