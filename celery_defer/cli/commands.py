"""``celery -A proj defer ...``: what celery_defer holds for an app, and a recovery pass on demand.

Installed as a Celery sub-command through the ``celery.commands`` entry point;
the app comes from ``-A`` like for Celery's own commands (``ctx.obj.app``).
Every command prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from celery import Celery
from celery.bin.base import CeleryCommand, handle_preload_options

from celery_defer.cli.catalog import deferred_functions, describe, find_function
from celery_defer.cli.counters import group_counters
from celery_defer.cli.limiter_state import RuleState, read_rules
from celery_defer.cli.outbox_state import OutboxState, read_outbox
from celery_defer.cli.tables import pairs, seconds, table
from celery_defer.errors import CeleryDeferError
from celery_defer.outbox.recovery import recover_once
from celery_defer.store import store_for

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@click.group(name="defer")
@click.pass_context
@handle_preload_options  # type: ignore[untyped-decorator]
def defer_command(ctx: click.Context) -> None:
    """Inspect celery_defer: deferred functions, the outbox, counters, limits; run recovery."""


def _app(ctx: click.Context) -> Celery:
    app: Celery = ctx.obj.app
    return app


@contextmanager
def _explained() -> Iterator[None]:
    # A missing setting or an unreachable Redis is a message for the operator, not a traceback.
    try:
        yield
    except CeleryDeferError as exc:
        raise click.ClickException(str(exc)) from exc


def _emit(as_json: bool, value: Any, human: Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))
    else:
        click.echo(human())


@defer_command.command(cls=CeleryCommand)
@json_option
@click.pass_context
def functions(ctx: click.Context, as_json: bool) -> None:
    """Each deferred function: id, task name, queue and config, one line each."""
    app = _app(ctx)
    infos = [describe(app, task) for task in deferred_functions(app)]
    _emit(
        as_json,
        [dataclasses.asdict(info) for info in infos],
        lambda: (
            table(
                ["ID", "TASK", "QUEUE", "CONFIG"], [[i.id, i.task, i.queue, pairs(i.config)] for i in infos]
            )
            if infos
            else "no deferred functions registered"
        ),
    )


@defer_command.command(cls=CeleryCommand)
@json_option
@click.option("--limit", default=100, show_default=True, help="Runs shown at most, oldest first.")
@click.pass_context
def pending(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Finalized runs whose deferred runs are not sent yet, and attempts holding recorded defers."""
    with _explained():
        state = read_outbox(store_for(_app(ctx)), limit=limit)
    _emit(as_json, dataclasses.asdict(state), lambda: _pending_text(state))


def _pending_text(state: OutboxState) -> str:
    finalized = table(
        ["RUN", "TASK", "DEFERS", "FUNCTIONS", "AGE", "DUE"],
        [
            [
                run.run_id,
                run.task,
                len(run.defers),
                ",".join(sorted(set(run.functions))),
                seconds(run.age_s),
                f"overdue {seconds(-run.due_in_s)}" if run.due_in_s <= 0 else f"in {seconds(run.due_in_s)}",
            ]
            for run in state.pending
        ],
    )
    attempts = table(
        ["RUN", "TASK", "RECORDED", "LEASE LEFT"],
        [
            [a.run_id, a.task, len(a.defers), seconds(a.lease_left_s) if a.lease_left_s > 0 else "ran out"]
            for a in state.attempts
        ],
    )
    return "\n".join(
        [
            f"finalized, not sent: {state.pending_total}",
            finalized if state.pending else "  none",
            f"attempts running with recorded defers: {state.attempts_total}",
            attempts if state.attempts else "  none",
        ]
    )


@defer_command.command(cls=CeleryCommand)
@json_option
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Deferred runs dropped (per function and guard) and duplicates acknowledged."""
    with _explained():
        report = group_counters(store_for(_app(ctx)).stats.counters())
    rows: list[list[object]] = [
        [fn, f"dropped:{kind}", count]
        for fn, kinds in report.dropped.items()
        for kind, count in kinds.items()
    ]
    rows += [[fn, "duplicate", count] for fn, count in report.duplicates.items()]
    rows += [["-", name, count] for name, count in report.other.items()]
    _emit(
        as_json,
        dataclasses.asdict(report),
        lambda: table(["FUNCTION", "COUNTER", "COUNT"], rows) if rows else "no drops, no duplicates",
    )


@defer_command.command(cls=CeleryCommand)
@click.argument("function_id")
@json_option
@click.option("--limit", default=100, show_default=True, help="Key values shown at most per rule.")
@click.pass_context
def limits(ctx: click.Context, function_id: str, as_json: bool, limit: int) -> None:
    """Flow-control state of one function: slots held and by which run, waiters, throttle, rate limit.

    Key values are shown by their hash, as they are stored.
    """
    app = _app(ctx)
    task = find_function(app, function_id)
    if task is None:
        known = ", ".join(t.__celery_defer_options__.id for t in deferred_functions(app)) or "none"
        raise click.BadParameter(f"no deferred function {function_id!r} (known: {known})")
    options = task.__celery_defer_options__
    with _explained():
        rules = read_rules(store_for(app), options.id, options.flow, limit=limit)
    value = {"function": options.id, "rules": [dataclasses.asdict(rule) for rule in rules]}
    _emit(as_json, value, lambda: _limits_text(options.id, rules))


def _limits_text(function_id: str, rules: list[RuleState]) -> str:
    if not rules:
        return f"{function_id} has no flow control"
    rows: list[list[object]] = []
    for rule in rules:
        rows.append([rule.slot, "config", "", pairs(rule.settings)])
        if not rule.keys:
            rows.append([rule.slot, "", "", "no state"])
        for key in rule.keys:
            shown = key.key_hash or "-"
            if rule.kind != "concurrency":
                rows.append([rule.slot, shown, "state", pairs(key.state)])
                continue
            for held in key.state["held"]:
                rows.append(
                    [rule.slot, shown, "held", f"run={held['run_id']} lease_left={held['lease_left_s']}s"]
                )
            for waiter in key.state["waiters"]:
                detail = (
                    f"run={waiter['run_id']} parked, {waiter['ahead']} ahead"
                    if waiter.get("parked")
                    else f"run={waiter['run_id']} for={waiter['waiting_s']}s"
                )
                rows.append([rule.slot, shown, "waiting", detail])
        if rule.keys_total > len(rule.keys):
            rows.append([rule.slot, "...", "", f"{rule.keys_total - len(rule.keys)} more key values"])
    return table(["RULE", "KEY", "WHAT", "DETAIL"], rows)


@defer_command.command(cls=CeleryCommand)
@json_option
@click.pass_context
def recover(ctx: click.Context, as_json: bool) -> None:
    """Run one recovery pass now and show what it sent.

    It sends what workers would send on their next pass: finalized runs whose
    dispatch is overdue, and runs whose worker died mid-attempt.
    """
    app = _app(ctx)
    with _explained():
        sent = recover_once(app)
    value = [
        {
            "parent_run_id": record.parent.run_id,
            "parent_task": record.parent.task_name,
            "defer_id": record.defer_id,
            "function": record.function_id,
            "run_id": record.run_id,
        }
        for record in sent
    ]
    _emit(
        as_json,
        value,
        lambda: (
            table(
                ["PARENT RUN", "PARENT TASK", "DEFER", "FUNCTION", "DEFERRED RUN"],
                [list(row.values()) for row in value],
            )
            if value
            else "nothing to recover"
        ),
    )
