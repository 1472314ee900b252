"""defer_redis_url and defer_redis_transport_options: Sentinel as kombu spells it, bad input named."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_defer.errors import ConfigurationError
from celery_defer.redis_clients import StateClient, connect
from celery_defer.redis_urls import ReplicaAcks, parse_sentinel_url, replica_acks
from celery_defer.settings import read_settings


def test_several_sentinels_with_the_masters_password_and_database():
    target = parse_sentinel_url(
        "sentinel://:s%40cret@h1:26380/2;sentinel://h2;sentinel://10.0.0.3:5000",
        {"master_name": "orders", "sentinel_kwargs": {"password": "x"}, "min_other_sentinels": 1},
    )
    assert target.sentinels == (("h1", 26380), ("h2", 26379), ("10.0.0.3", 5000))
    assert (target.master_name, target.db, target.password) == ("orders", 2, "s@cret")
    assert target.sentinel_kwargs == {"password": "x"}
    assert target.min_other_sentinels == 1


def test_a_sentinel_url_without_master_name_names_the_setting():
    with pytest.raises(ConfigurationError, match="master_name") as caught:
        connect("sentinel://:pw@h1:26379", transport_options={})
    assert caught.value.key == "defer_redis_transport_options"
    assert "pw" not in str(caught.value)  # a password never reaches a log


@pytest.mark.parametrize(
    ("url", "options", "complaint"),
    [
        ("sentinel://h1;redis://h2", {"master_name": "m"}, "not a sentinel:// URL"),
        ("sentinel://h1/zero", {"master_name": "m"}, "is not a number"),
        ("sentinel://h1:port", {"master_name": "m"}, "is not a URL"),
        ("sentinel://h1", {"master_name": "m", "min_replica_acks": -1}, "min_replica_acks"),
        ("sentinel://h1", {"master_name": "m", "replica_ack_timeout_ms": 0}, "replica_ack_timeout_ms"),
        ("sentinel://h1", {"master_name": "m", "sentinel_kwargs": "pw"}, "sentinel_kwargs"),
        ("sentinel://h1", {"master_name": "m", "mastername": "m"}, "unknown keys mastername"),
    ],
)
def test_bad_sentinel_settings_get_an_error_naming_the_problem(url, options, complaint):
    with pytest.raises(ConfigurationError, match=complaint):
        connect(url, transport_options=options)


def test_transport_options_are_checked_with_the_other_settings():
    app = Celery("t", broker="memory://")
    app.conf.defer_redis_url = "sentinel://h1:26379"
    app.conf.defer_redis_transport_options = ["master_name", "m"]
    with pytest.raises(ConfigurationError, match="must be a dict"):
        read_settings(app)
    app.conf.defer_redis_transport_options = {"master_name": "m"}
    assert read_settings(app).redis_transport_options == {"master_name": "m"}


def test_sentinel_clients_wait_for_one_replica_by_default_and_plain_ones_for_none():
    assert replica_acks("sentinel://h1", {"master_name": "m"}) == ReplicaAcks(replicas=1, timeout_ms=1000)
    assert replica_acks("redis://h1", {}) == ReplicaAcks(replicas=0)
    assert replica_acks("sentinel://h1", {"min_replica_acks": 0}).replicas == 0
    client = connect("sentinel://127.0.0.1:1", transport_options={"master_name": "m"})  # connects lazily
    assert isinstance(client, StateClient)
    assert client.replica_acks.replicas == 1
    plain = connect("redis://127.0.0.1:1/0", transport_options={"min_replica_acks": 2})
    assert plain.replica_acks == ReplicaAcks(replicas=2, timeout_ms=1000)


def test_a_sentinel_url_without_master_name_fails_when_settings_are_read():
    # Settings are read when a worker starts (the recovery bootstep): it stops with this error.
    app = Celery("t", broker="memory://")
    app.conf.defer_redis_url = "sentinel://h1:26379;sentinel://h2:26379"
    with pytest.raises(ConfigurationError, match="needs 'master_name'"):
        read_settings(app)
