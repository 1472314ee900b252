"""The state store on a real local Redis Cluster (three primaries): every script, every walk.

Each script gets keys of one hash slot, or redis-py refuses it before it leaves
(``all keys must map to the same key slot``) and the server would answer
``CROSSSLOT``. Runs are spread over many shards, so the calls land on every node.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from celery import Celery

from celery_defer.cli.outbox_state import read_outbox
from celery_defer.keys import KeySpace
from celery_defer.limits import RedisLimitBackend
from celery_defer.outbox.record import DeferRecord, ParentRef
from celery_defer.redis_io import Scripts
from celery_defer.steps.memo import RedisStepMemo
from celery_defer.store import Store, store_for

pytestmark = pytest.mark.integration

RUNS = [f"run-{n}" for n in range(24)]


def record(run_id: str, defer_id: str) -> DeferRecord:
    return DeferRecord(defer_id, "celery_defer.fn.f", "f", "{}", 1, ParentRef(run_id, run_id, "shop.order"))


def shipped_scripts() -> set[str]:
    """Every script under ``lua/``, less the files only pasted into others (``--#include``)."""
    lua = resources.files("celery_defer") / "lua"
    files = {
        f"{group.name}/{path.name.removesuffix('.lua')}": path.read_text("utf-8")
        for group in lua.iterdir()
        if group.is_dir()
        for path in group.iterdir()
        if path.name.endswith(".lua")
    }
    included = {
        line.split()[1]
        for text in files.values()
        for line in text.splitlines()
        if line.startswith("--#include ")
    }
    return set(files) - included


@pytest.fixture
def called(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The ``group/name`` of every script the library runs during the test."""
    names: set[str] = set()
    init, call, each = Scripts.__init__, Scripts.__call__, Scripts.each

    def record_init(self: Scripts, client: Any, group: str, scripts: Any) -> None:
        init(self, client, group, scripts)
        self.group = group  # type: ignore[attr-defined]

    def record_call(self: Scripts, name: str, *args: Any, **kwargs: Any) -> Any:
        names.add(f"{self.group}/{name}")  # type: ignore[attr-defined]
        return call(self, name, *args, **kwargs)

    def record_each(self: Scripts, name: str, *args: Any, **kwargs: Any) -> Any:
        names.add(f"{self.group}/{name}")  # type: ignore[attr-defined]
        return each(self, name, *args, **kwargs)

    monkeypatch.setattr(Scripts, "__init__", record_init)
    monkeypatch.setattr(Scripts, "__call__", record_call)
    monkeypatch.setattr(Scripts, "each", record_each)
    return names


@pytest.fixture
def store(cluster_url: str, called: set[str]) -> Iterator[Store]:
    app = Celery("cluster", set_as_current=False)
    app.conf.defer_redis_url = cluster_url
    yield store_for(app)


def test_the_runs_spread_over_every_node(store: Store, redis_cluster: Any) -> None:
    for run_id in RUNS:
        store.outbox.record(run_id, [record(run_id, "a")], final=False)
    nodes = {node.port: 0 for node in redis_cluster.nodes}
    for node in store.client.get_primaries():  # type: ignore[union-attr]
        nodes[node.port] = node.redis_connection.dbsize()
    assert all(count > 0 for count in nodes.values()), nodes


def test_every_script_the_library_ships_runs_on_the_cluster(store: Store, called: set[str]) -> None:
    outbox, claims = store.outbox, store.claims
    for run_id in RUNS:
        assert outbox.recorded_ids(run_id) == set()
        assert outbox.record(run_id, [record(run_id, "a")], final=False) == []
        assert outbox.recorded_ids(run_id) == {"a"}  # the next attempt begins, leased
        assert outbox.renew_attempt(run_id)
    finalized = RUNS[:12]
    for run_id in finalized:
        kept = outbox.record(run_id, [record(run_id, "b")], final=True)
        assert [r.defer_id for r in kept] == ["a", "b"]
    for run_id in RUNS[12:]:
        assert [r.defer_id for r in outbox.finalize(run_id)] == ["a"]
    # Recovery walks every shard: nothing is due before the dispatch grace ends...
    assert outbox.claim_due(limit=100, lease_ms=1000) == []
    assert outbox.claim_stale_attempts(limit=100, lease_ms=1000) == []
    # ...and once it has, every run of every shard is found.
    outbox.due_again(RUNS)
    assert sorted(outbox.claim_due(limit=100, lease_ms=60_000)) == sorted(RUNS)
    for run_id in RUNS:
        assert outbox.complete(run_id, [r.defer_id for r in outbox.pending_records(run_id)]) == 0

    for run_id in RUNS:
        assert claims.claim(run_id, "w1", lease_ms=60_000, attempt=0, resend='{"m":1}').state == "ok"
        assert claims.renew(run_id, "w1", lease_ms=60_000)
        claims.hand_over(run_id, "w1", next_attempt=1, ttl_ms=1, resend='{"m":2}')
    assert sorted(claims.take_lapsed(limit=100, lease_ms=60_000)) == sorted(RUNS)
    assert claims.message_to_resend(RUNS[0]) == '{"m":2}'
    claims.finish(RUNS[0], "w1", outcome="succeeded")
    assert claims.claim(RUNS[0], "w2", lease_ms=1000, attempt=1, resend="").state == "done"

    memo = RedisStepMemo(store.client, store.keys, lease_ms=60_000)
    assert memo.keep("run-s", "f1", '"r"', [record("run-s", "in-step")]).leased
    assert memo.load("run-s").entries == {"f1": '"r"'}
    assert memo.sleep_left_ms("run-s", "f2", 60_000) > 0

    run_limits(RedisLimitBackend(store.client), store.keys)
    assert called == shipped_scripts()


def run_limits(backend: RedisLimitBackend, keys: KeySpace) -> None:
    """Every flow-control script, on keys as the guards name them (keyed and not)."""
    for value in (None, "user-1", "user-2"):
        conc = keys.limit("concurrency", "fn", value)
        assert backend.lease_acquire(conc, "a", 1, 60_000, 60_000).acquired
        assert not backend.lease_acquire(conc, "b", 1, 60_000, 60_000).acquired
        assert backend.lease_renew(conc, "a", 60_000)
        assert backend.lease_turn(conc, "a", 0.0, 5) == 0
        backend.lease_release(conc, "a", 12.5)
        assert backend.line_restart(conc, 1, 60_000)[0] >= 0
        backend.lines_note(keys.lines(), f"1:60000:{conc}")
        for member, noted_ms in backend.lines_noted(keys.lines()):
            backend.lines_forget(keys.lines(), member, noted_ms)
        assert backend.throttle_take(keys.limit("throttle", "fn", value), 5, 1000) == 0
        booked = keys.limit("throttle", "booked", value)
        assert backend.throttle_take(booked, 5, 1000, reserve=True, holder="r1") >= 0
        assert backend.throttle_begin(booked, "r1", 5, 1000).wait_ms >= 0
        assert backend.throttle_turn(booked, "r1", 0.0, 250, 5) == 0
        assert backend.rate_hit(keys.limit("rate_limit", "fn", value), 5, 1000)
        idem = keys.limit("idempotency", "fn", value)
        assert backend.claim_once(idem, 60_000, holder="r1")
        backend.claim_release(idem, "r1")
        single = keys.limit("singleton", "fn", value)
        assert backend.singleton_acquire(single, "a", 60_000, "skip").acquired
        assert not backend.singleton_preempt(single, "b", 60_000).acquired
        assert backend.singleton_renew(single, "a", 60_000)
        backend.singleton_release(single, "a")
        debounce = keys.limit("debounce", "fn", value)
        assert backend.debounce_push(debounce, "e1", "{}", 1, None) >= 0
        assert backend.debounce_take(debounce, "e1", 1, None).state in ("run", "wait")


def test_counters_of_every_shard_are_summed(store: Store) -> None:
    for run_id in RUNS:
        store.stats.count("duplicate:f", run_id=run_id)
    assert len({store.keys.shard(run_id) for run_id in RUNS}) > 1
    assert store.stats.counters() == {"duplicate:f": len(RUNS)}


def test_the_pending_view_reads_every_shard(store: Store) -> None:
    for run_id in RUNS:
        store.outbox.record(run_id, [record(run_id, "a")], final=True)
    state = read_outbox(store, limit=5)
    assert state.pending_total == len(RUNS)
    assert len(state.pending) == 5
    assert [run.due_in_s for run in state.pending] == sorted(run.due_in_s for run in state.pending)


def test_a_run_with_many_defers_records_and_finalizes_on_the_cluster(store: Store) -> None:
    # Large script calls go out in one socket write on a single server; a cluster
    # client has no single connection and must take its own path.
    records = [record("run-many", f"d{index}") for index in range(200)]
    assert store.outbox.record("run-many", records[:100], final=False) == []
    finalized = store.outbox.record("run-many", records[100:], final=True)
    assert sorted(r.defer_id for r in finalized) == sorted(r.defer_id for r in records)
