"""Commands written at once: each reply in its place, a refused one not stopping the rest."""

from __future__ import annotations

import os
import threading
import time

import pytest
import redis

from celery_defer.redis_clients import connect
from celery_defer.redis_io import Scripts, batched
from celery_defer.redis_wire import MAX_UNREAD, PROBE_AFTER_IDLE_S, HeldConnection, send_in_one_write

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


def test_the_held_connection_serves_each_thread_its_own_replies_and_survives_a_killed_socket(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    held = HeldConnection(client)
    held_id = held.call(["CLIENT", "ID"])
    assert held.call(["CLIENT", "ID"]) == held_id  # the same connection, call after call
    errors: list[BaseException] = []

    def echo(tag: str) -> None:
        try:
            for i in range(200):
                assert held.call(["ECHO", f"{tag}-{i}"]) == f"{tag}-{i}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=echo, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client.client_kill_filter(_id=held_id)
    time.sleep(PROBE_AFTER_IDLE_S + 0.1)
    assert held.call(["ECHO", "again"]) == "again"  # idle a while: probed, and replaced
    killed_id = held.call(["CLIENT", "ID"])
    assert killed_id != held_id
    client.client_kill_filter(_id=killed_id)
    with pytest.raises(redis.ConnectionError):
        held.call(["ECHO", "at once"])  # this client's retry policy: no retries
    assert held.call(["ECHO", "then"]) == "then"  # reconnected
    assert isinstance(held.call(["LPUSH"]), redis.ResponseError)  # refused: in its place


def test_a_forked_child_never_uses_its_parents_held_connection(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    held = HeldConnection(client)
    parent_id = held.call(["CLIENT", "ID"])
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the id of the connection its call went on
        try:
            os.write(writer, str(held.call(["CLIENT", "ID"])).encode())
        finally:
            os._exit(0)
    os.close(writer)
    child_id = int(os.read(reader, 100))
    os.waitpid(pid, 0)
    assert child_id != parent_id
    assert held.call(["CLIENT", "ID"]) == parent_id  # the parent's own is untouched


def test_the_library_client_retries_a_call_on_a_held_connection_the_server_closed(redis_url):
    client = connect(f"{redis_url}/6")
    held = HeldConnection(client)  # type: ignore[arg-type]
    held_id = held.call(["CLIENT", "ID"])
    client.client_kill_filter(_id=held_id)
    assert held.call(["ECHO", "at once"]) == "at once"  # retried on a new connection


def test_a_sent_command_s_reply_reaches_its_callback_when_the_connection_is_next_used(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    held = HeldConnection(client)
    replies: list[object] = []
    assert held.send(["RPUSH", "sent", "a"], replies.append)
    assert held.send(["RPUSH"], replies.append)  # refused by the server
    deadline = time.monotonic() + 5
    while client.llen("sent") != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.lrange("sent", 0, -1) == ["a"]  # done by the server, the reply unread
    assert replies == []
    assert held.call(["ECHO", "next"]) == "next"  # reads the two replies first, then its own
    assert replies[0] == 1
    assert isinstance(replies[1], redis.ResponseError)


def test_a_reply_lost_with_its_connection_reaches_its_callback_as_the_error(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    held = HeldConnection(client)
    held_id = held.call(["CLIENT", "ID"])
    replies: list[object] = []
    assert held.send(["BLPOP", "nothing-comes", "5"], replies.append)  # no reply for 5 s
    client.client_kill_filter(_id=held_id)
    assert held.call(["ECHO", "after"]) == "after"  # on a new connection
    assert len(replies) == 1 and isinstance(replies[0], redis.ConnectionError)
    assert held.call(["CLIENT", "ID"]) != held_id


def test_a_sent_script_call_runs_where_the_server_forgot_its_scripts_and_none_under_a_batch(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    scripts = Scripts(client, "outbox", ("complete",))
    client.hset("outbox:s", mapping={"d0": "x", "d1": "x"})
    client.script_flush()
    replies: list[object] = []
    keys = ["outbox:s", "finalized", "attempts"]
    assert scripts.send_later("complete", keys, ["s", "d0"], on_reply=replies.append)
    with batched(client):
        assert not scripts.send_later("complete", keys, ["s", "d1"], on_reply=replies.append)
    assert client.ping()
    assert scripts("complete", keys, ["s"], doing="testing") == 1  # reads the sent call's reply first
    assert replies == [1] and client.hkeys("outbox:s") == ["d1"]


def test_sends_alone_never_leave_more_than_a_bounded_number_of_replies_unread(redis_url):
    client = redis.Redis.from_url(f"{redis_url}/6", decode_responses=True)
    held = HeldConnection(client)
    replies: list[object] = []
    for i in range(MAX_UNREAD * 3):
        assert held.send(["RPUSH", "bounded", str(i)], replies.append)
    assert len(replies) >= MAX_UNREAD * 2  # read by later sends, none waiting for a call
    assert replies == list(range(1, len(replies) + 1))
