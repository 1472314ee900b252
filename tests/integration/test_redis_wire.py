"""Commands written at once: each reply in its place, a refused one not stopping the rest."""

from __future__ import annotations

import pytest
import redis

from celery_defer.redis_io import Scripts
from celery_defer.redis_wire import send_in_one_write

pytestmark = pytest.mark.integration


def test_replies_come_back_in_order_with_a_refused_command_in_its_place(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    client.set("a-string", "x")
    values = [f"é{i}" + "v" * 3000 for i in range(10)]  # well over one of redis-py's write pieces
    replies = send_in_one_write(
        client, [["LPUSH", "list", *values], ["LPUSH", "a-string", "y"], ["LPUSH", "list", "last"]]
    )
    assert replies[0] == 10 and replies[2] == 11
    assert isinstance(replies[1], redis.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert client.lrange("list", 0, -1) == ["last", *reversed(values)]
    assert client.get("a-string") == "x"
    assert client.ping()  # the connection went back to the pool with nothing left unread


def test_a_large_script_call_survives_a_flushed_script_cache(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    scripts = Scripts(client, "outbox", ("complete",))
    client.hset("outbox:r", mapping={f"d{i}": "x" for i in range(3)})
    ids = ["d0", "d1", *(f"other-{i}" + "z" * 100 for i in range(100))]  # over 6000 characters
    client.script_flush()
    left = scripts("complete", ["outbox:r", "finalized", "attempts"], ["r", *ids], doing="testing")
    assert left == 1 and client.hkeys("outbox:r") == ["d2"]
