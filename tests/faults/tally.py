"""Counting what fault tests check: executions and completions per (parent run, defer id)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from celery_defer.outbox.record import deferred_run_id


def executions(seen: Callable[..., list[dict[str, Any]]], parent_id: str) -> Counter[str]:
    """How often each defer id of ``parent_id`` had its handler started."""
    return Counter(run["defer_id"] for run in seen("run") if run["parent"] == parent_id)


def completions(
    seen: Callable[..., list[dict[str, Any]]], parent_id: str, defer_ids: Iterable[str]
) -> Counter[str]:
    """How often each deferred run of ``parent_id`` completed (Celery's ``task_success``)."""
    by_run = {deferred_run_id(parent_id, defer_id): defer_id for defer_id in defer_ids}
    return Counter(by_run[event["run_id"]] for event in seen("done") if event["run_id"] in by_run)
