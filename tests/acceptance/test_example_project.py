"""Acceptance: ``python -m example_project`` end to end, on an embedded Redis and a real worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from example_project.functions import FLOW_LIMITS
from example_project.plan import FUNCTIONS, expectations

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 20

#: What 20 orders must produce, worked out by hand from the plan's rules
#: (fail: every 7th, parent retry: 11th and every 3rd (after the charge step),
#: bad address: every 5th, its skip once per order as it is made in the charge step,
#: greylisted: every 4th with a good address, score retry: every 6th).
BY_HAND = {
    #              expected runs, retries, call-site skips
    "send-email": (16, 4, 4),
    "score-order": (20, 3, 0),
    "audit-log": (20, 0, 0),
}


def _table_row(output: str, function: str) -> list[str]:
    rows = [line.split() for line in output.splitlines() if line.startswith(f"{function} ")]
    assert len(rows) == 1, f"no single {function!r} row in:\n{output}"
    return rows[0]


def test_the_plan_agrees_with_the_hand_count() -> None:
    expected = expectations(ORDERS)
    assert (expected.parents_succeeded, expected.parents_failed) == (18, 2)
    assert expected.parent_retries == 7  # orders 3, 6, 9, 11, 12, 15, 18
    for fn, (runs, retries, skips) in BY_HAND.items():
        assert (expected.runs[fn], expected.retries[fn], expected.skips[fn]) == (
            runs,
            retries,
            skips,
        )


@pytest.mark.acceptance
@pytest.mark.timeout(300)
def test_main_job_runs_every_expected_deferred_run_exactly_once() -> None:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    argv = [sys.executable, "-m", "example_project", "--orders", str(ORDERS), "--timeout", "90"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    output = proc.stdout
    report = f"exit code {proc.returncode}\n--- stdout\n{output}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    # Not a terminal: plain progress lines, no carriage returns piling up in a log.
    assert "\r" not in output, report
    assert f"placing orders: {ORDERS}/{ORDERS}" in output.splitlines(), report
    assert re.search(r"^deferred runs: (\d+)/\1$", output, re.MULTILINE), report
    # The worker log it names is still there once it has exited.
    log_path = Path(re.search(r"^worker: .*, log (\S+)$", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    try:
        assert f"worker stopped (exit code 0), its log: {log_path}" in output, report
        assert "example-shop-" in log_path.read_text(), report
    finally:
        log_path.unlink(missing_ok=True)
    assert "(embedded, started here)" in output, report
    assert "parents finished: 18 (expected 18)" in output, report
    assert "failed after deferring: 2 (expected 2)" in output, report
    assert "retried: 7 (expected 7)" in output, report
    # The charge step ran once per order, including the 7 that ran again after it.
    assert (
        f"card charges (step charge-card): {ORDERS} for {ORDERS} orders, {ORDERS} charged exactly once; "
        "7 orders ran again after their charge and skipped the kept step"
    ) in output, report
    for fn in FUNCTIONS:
        runs, retries, skips = BY_HAND[fn]
        cells = _table_row(output, fn)
        # function expected completed missing extra dup retries skips p50 p95 max-conc
        assert cells[1:8] == [
            str(runs), str(runs), "0", "0", "0", f"{retries}/{retries}", f"{skips}/{skips}"
        ], report  # fmt: skip
        assert all(cell.lstrip("-").isdigit() for cell in cells[8:10]), report
        seen, _, limit = cells[10].partition("/")
        assert limit == str(FLOW_LIMITS[fn].concurrency or "-"), report
        assert 1 <= int(seen) <= (FLOW_LIMITS[fn].concurrency or runs), report
    assert "max conc reads most runs seen executing at once/concurrency limit" in output, report
    assert "score-order's limit holds per event.data.customer" in output, report
    assert re.search(
        r"^throttle of send-email \(20 per 1s, burst 5\): 16 run starts over [\d.]+s, .*\(informational\)$",
        output,
        re.MULTILINE,
    ), report
    assert "RESULT: OK" in output, report
    assert "worker stopped (exit code 0)" in output, report
