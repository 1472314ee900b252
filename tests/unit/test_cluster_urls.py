"""``redis+cluster://`` URLs, key tags and the prefix: what they name, and the error a bad one gets."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_defer import ConfigurationError
from celery_defer.embedded_redis import free_port
from celery_defer.errors import StoreUnavailableError
from celery_defer.keys import SHARDS, KeySpace, keyed_limit, waiters_key
from celery_defer.redis_clients import connect
from celery_defer.redis_urls import ClusterUrl, is_cluster_url, parse_cluster_url
from celery_defer.settings import read_settings


def test_a_cluster_url_names_its_seed_nodes_credentials_and_tls() -> None:
    assert parse_cluster_url("redis+cluster://127.0.0.1:7000") == ClusterUrl((("127.0.0.1", 7000),))
    parsed = parse_cluster_url("rediss+cluster://app:s%40cret@a:7000,b,[::1]:7002/0?ssl_cert_reqs=none")
    assert parsed == ClusterUrl(
        (("a", 7000), ("b", 6379), ("::1", 7002)), "app", "s@cret", True, {"ssl_cert_reqs": "none"}
    )


def test_only_cluster_schemes_are_cluster_urls() -> None:
    assert is_cluster_url("redis+cluster://h:1") and is_cluster_url("REDISS+CLUSTER://h:1")
    assert not is_cluster_url("redis://h:1/0") and not is_cluster_url("sentinel://h:26379")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://", "names no seed node"),
        ("redis+cluster://h:notaport", "no valid port"),
        ("redis+cluster://h:70000", "no valid port"),
        ("redis+cluster://h:7000/3", "database 0 only"),
        ("redis+cluster://h:7000?db=1", "unknown option(s) ['db']"),
    ],
)
def test_a_bad_cluster_url_is_a_configuration_error_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match="defer_redis_url") as caught:
        connect(url)
    assert problem in str(caught.value)


def test_the_password_never_shows_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_cluster_url("redis+cluster://u:hunter2@h:7000/5")
    assert "hunter2" not in str(caught.value)


def test_every_key_of_a_run_and_its_indexes_share_the_run_shard_tag() -> None:
    keys = KeySpace("app")
    shard = keys.shard("run-1")
    assert 0 <= shard < SHARDS and keys.shard("run-1") == shard  # stable
    tag = f"{{app:{shard}}}"
    per_run = [keys.outbox("run-1"), keys.claim("run-1"), keys.done_bucket("run-1", 7), keys.resend("run-1")]
    indexes = [keys.finalized("run-1"), keys.attempts("run-1"), keys.inflight("run-1"), keys.stats("run-1")]
    assert all(key.startswith(tag + ":") for key in per_run + indexes + [keys.steps("run-1")])
    assert keys.finalized(shard) == keys.finalized("run-1")


def test_a_guard_key_is_its_own_tag_and_its_sub_keys_keep_it() -> None:
    keys = KeySpace("app")
    key = keys.limit("concurrency", "fn", "user-1")
    assert key.startswith("{app:limit:concurrency:fn:") and key.endswith("}")
    assert waiters_key(key) == f"{key}:waiters"
    unkeyed = keys.limit("concurrency", "fn")
    assert unkeyed == "{app:limit:concurrency:fn}"
    assert keyed_limit(unkeyed, key[-25:-1]) == key


def test_a_cluster_nobody_answers_is_unavailable_not_a_crash() -> None:
    with pytest.raises(StoreUnavailableError, match=r"reaching the Redis Cluster at 127\.0\.0\.1:"):
        connect(f"redis+cluster://127.0.0.1:{free_port()}")


def test_a_prefix_with_braces_is_refused_naming_the_setting() -> None:
    app = Celery("braces", set_as_current=False)
    app.conf.defer_key_prefix = "shop{eu}"
    with pytest.raises(ConfigurationError, match="defer_key_prefix") as caught:
        read_settings(app)
    assert caught.value.key == "defer_key_prefix"
