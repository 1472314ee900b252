"""``celery -A ... defer ...`` against a real Redis, real workers, and the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from celery.bin.celery import celery as celery_main
from click.testing import CliRunner, Result

from celery_defer.cli.catalog import find_function
from celery_defer.keys import hash_key_value
from celery_defer.outbox.record import deferred_run_id
from celery_defer.store import store_for
from tests.integration.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

APP = "tests.integration.workerapp"


def cli(*args: str) -> Result:
    result = CliRunner().invoke(celery_main, ["-A", APP, "defer", *args])
    assert result.exit_code == 0, result.output
    return result


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").output)


def rule_key(app_module: Any, function_id: str, slot: str, value: str | None = None) -> str:
    """The Redis key a guard of ``function_id`` writes for ``value``."""
    spec = next(
        s for s in find_function(app_module.app, function_id).__celery_defer_options__.flow if s.slot == slot
    )
    return spec.redis_key(store_for(app_module.app).keys, function_id, value)


def test_functions_lists_each_deferred_function_with_its_queue_and_config(app_module, redis_url):
    listed = {entry["id"]: entry for entry in cli_json("functions")}
    assert listed["recorder"] == {
        "id": "recorder",
        "task": "celery_defer.fn.recorder",
        "queue": "celery",
        "config": {"retries": 2},
    }
    assert listed["parked"]["queue"] == "parked"
    assert listed["parked"]["config"]["priority"] == 3
    assert listed["impatient"]["config"]["timeouts"] == {"start": 1.0}
    assert listed["throttled"]["config"]["throttle"] == {
        "limit": 5,
        "period_s": 2.0,
        "burst": 1,
        "keyed": False,
    }
    assert listed["hog"]["config"]["concurrency"] == [{"limit": 1, "keyed": True, "scope": "app"}]
    assert listed["idem"]["config"]["idempotency"] == {"keyed": True}

    lines = cli("functions").output.splitlines()
    assert lines[0].split() == ["ID", "TASK", "QUEUE", "CONFIG"]
    assert len(lines) == 1 + len(listed)
    parked = next(line for line in lines if line.startswith("parked "))
    assert parked.split()[:4] == ["parked", "celery_defer.fn.parked", "parked", "retries=4"]


def test_pending_shows_a_running_attempt_that_holds_recorded_defers(start_worker, app_module, redis_url):
    start_worker()
    plan = {"retries": 1, "per_attempt": {"p": {}}, "sleep_on_attempt": 1, "sleep": 20}
    result = app_module.parent.delay(plan)
    try:
        state = wait_for(lambda: (s := cli_json("pending"))["attempts"] and s, timeout_s=20)
        [attempt] = state["attempts"]
        assert attempt["run_id"] == result.id
        assert attempt["task"] == app_module.parent.name
        assert attempt["defers"] == ["p-0"]
        # defer_lease (3 s in the worker app), plus the retry countdown (0.05 s) while it waits
        assert 0 < attempt["lease_left_s"] <= 3.05
        assert state["pending"] == []
        text = cli("pending").output
        assert "attempts running with recorded defers: 1" in text
        assert result.id in text
    finally:
        result.revoke(terminate=True)


def test_pending_then_recover_sends_what_a_killed_worker_left(start_worker, app_module, seen, redis_url):
    worker = start_worker()
    result = app_module.parent_killed.delay(7)
    wait_for(lambda: seen("killing"))
    worker.process.wait(timeout=10)  # the whole worker died after the body returned

    [run] = cli_json("pending")["pending"]
    assert run["run_id"] == result.id
    assert run["defers"] == ["after-kill"]
    assert run["functions"] == ["recorder"]
    assert run["age_s"] >= 0
    assert f"{result.id}  {app_module.parent_killed.name}  1" in cli("pending").output

    # The run becomes due for recovery a few seconds after it finalized.
    sent = wait_for(lambda: cli_json("recover"), timeout_s=15, every_s=0.5)
    assert sent == [
        {
            "parent_run_id": result.id,
            "parent_task": app_module.parent_killed.name,
            "defer_id": "after-kill",
            "function": "recorder",
            "run_id": deferred_run_id(result.id, "after-kill"),
        }
    ]
    assert cli_json("pending")["pending"] == []
    assert cli("recover").output.strip() == "nothing to recover"
    start_worker()
    runs = wait_for(lambda: [r for r in seen("run") if r["parent"] == result.id])
    assert [(r["defer_id"], r["data"]) for r in runs] == [("after-kill", {"n": 7})]


def test_stats_and_limits_show_rate_limit_drops(start_worker, app_module, seen, redis_url):
    start_worker()
    app_module.fan_out.delay("rated", [{"i": i} for i in range(5)])

    def all_five_accounted_for() -> dict[str, Any] | None:
        # Each run either starts or is dropped; wait until all five have done one.
        report = cli_json("stats")
        drops = sum(n for slots in report["dropped"].values() for n in slots.values())
        return report if drops + len(seen("start")) >= 5 else None

    report = wait_for(all_five_accounted_for)
    assert report["dropped"] == {"rated": {"rate_limit": 2}}
    assert len(seen("start")) == 3
    assert "rated     dropped:rate_limit  2" in cli("stats").output

    [rule] = cli_json("limits", "rated")["rules"]
    assert rule["slot"] == "rate_limit"
    [key] = rule["keys"]
    assert key["key_hash"] is None
    assert key["state"]["hits_in_window"] == 3
    assert key["state"]["dropping"] is True
    assert 0 < key["state"]["next_allowed_in_s"] <= 10


def test_stats_counts_duplicates_per_function(app_module, redis_url):
    # The worker counts a duplicate this way when a copy of a finished run arrives.
    store_for(app_module.app).stats.count("duplicate:recorder", 2, run_id="copy-of-a-run")
    assert cli_json("stats") == {"dropped": {}, "duplicates": {"recorder": 2}, "other": {}}


def test_limits_shows_which_run_holds_a_slot_and_who_waits(start_worker, app_module, redis_url):
    start_worker()
    parent = app_module.fan_out.delay("conc-key", [{"group": "a", "sleep": 4}, {"group": "a", "sleep": 4}])
    runs = {deferred_run_id(parent.id, "item-0"), deferred_run_id(parent.id, "item-1")}

    def both_seen() -> Any:
        [rule] = cli_json("limits", "conc-key")["rules"]
        keys = rule["keys"]
        return keys and keys[0]["state"]["held"] and keys[0]["state"]["waiters"] and keys[0]

    key = wait_for(both_seen, timeout_s=15, every_s=0.2)
    assert key["key_hash"] == hash_key_value("a")
    [holder] = [h["run_id"] for h in key["state"]["held"]]
    [waiter] = [w["run_id"] for w in key["state"]["waiters"]]
    assert {holder, waiter} == runs
    text = cli("limits", "conc-key").output
    assert f"held     run={holder}" in text
    assert f"waiting  run={waiter}" in text


def test_limits_shows_throttle_and_singleton_state_as_the_scripts_write_it(app_module, redis_url):
    limits = store_for(app_module.app).limits
    # Two starts of "throttled" (5 per 2 s, burst 1): the next is 400 ms after the second.
    assert limits.throttle_take(rule_key(app_module, "throttled", "throttle"), 5, 2000, 1) == 0
    assert limits.throttle_take(rule_key(app_module, "throttled", "throttle"), 5, 2000, 1) > 0
    [rule] = cli_json("limits", "throttled")["rules"]
    state = rule["keys"][0]["state"]
    assert state["starts_available_now"] == 0
    assert 0 < state["next_start_in_s"] <= 0.4

    limits.singleton_acquire(rule_key(app_module, "single-skip", "singleton", "k1"), "run-1", 5000, "skip")
    [rule] = cli_json("limits", "single-skip")["rules"]
    [key] = rule["keys"]
    assert key["key_hash"] == hash_key_value("k1")
    assert key["state"]["held_by"] == "run-1"
    assert 0 < key["state"]["expires_in_s"] <= 5


def test_limits_of_an_unknown_function_names_the_known_ones(app_module, redis_url):
    result = CliRunner().invoke(celery_main, ["-A", APP, "defer", "limits", "nope"])
    assert result.exit_code == 2
    assert "no deferred function 'nope'" in result.output
    assert "recorder" in result.output


def test_an_unreachable_redis_is_a_message_not_a_traceback(app_module, redis_server):
    redis_server.stop()
    try:
        result = CliRunner().invoke(celery_main, ["-A", APP, "defer", "pending"])
    finally:
        redis_server.start()
    assert result.exit_code == 1
    assert "Error: reading the outbox index" in result.output
    assert "Traceback" not in result.output


def test_the_installed_celery_command_finds_the_defer_sub_command(redis_url):
    celery_bin = Path(sys.executable).with_name("celery")
    env = {**os.environ, "CDT_REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [str(celery_bin), "-A", APP, "defer", "functions", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listed = {entry["id"]: entry["task"] for entry in json.loads(done.stdout)}
    assert listed["recorder"] == "celery_defer.fn.recorder"


def test_limits_shows_debounce_and_idempotency_state(app_module, redis_url):
    limits = store_for(app_module.app).limits
    key = rule_key(app_module, "debounced", "debounce", "k1")
    limits.debounce_push(key, "run-9", '{"k":"k1"}', 1000, None)
    limits.claim_once(rule_key(app_module, "idem", "idempotency", "order-1"), 60_000, "run-3")
    [debounce] = cli_json("limits", "debounced")["rules"]
    [pushed] = debounce["keys"]
    assert pushed["key_hash"] == hash_key_value("k1")
    assert pushed["state"]["latest_run_id"] == "run-9"
    [idem] = cli_json("limits", "idem")["rules"]
    [claimed] = idem["keys"]
    assert (claimed["key_hash"], claimed["state"]["held_by"]) == (hash_key_value("order-1"), "run-3")
    assert f"idempotency  {hash_key_value('order-1')}  state  held_by=run-3" in cli("limits", "idem").output
