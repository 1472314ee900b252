"""The core, durability, flow-control and kill tests once more, with the state store on a Redis Cluster.

The state store is chosen for a whole test session (``CDT_STATE_STORE``, see
``conftest.py``), so the cluster run is a pytest session of its own, started
from here: the README's one test command covers both stores. A failure shows
the nested session's report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

#: What must hold on a cluster as on one Redis: runs, durability, limits, kills.
ON_CLUSTER = (
    "tests/integration/test_worker_runs.py",
    "tests/integration/test_durability.py",
    "tests/integration/test_flow_control.py",
    "tests/faults/test_kill_matrix.py",
    "tests/faults/test_deferred_run_kills.py",
)


@pytest.mark.timeout(1800)
def test_core_durability_flow_control_and_kill_tests_pass_with_the_state_store_on_a_cluster() -> None:
    env = {**os.environ, "CDT_STATE_STORE": "cluster"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ON_CLUSTER]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1700)
    report = "\n".join((done.stdout + done.stderr).splitlines()[-80:])
    print(report.splitlines()[-1] if report else "(no output)")
    assert done.returncode == 0, f"on the cluster store:\n{report}"
    assert " passed" in report and "skipped" not in report, report
