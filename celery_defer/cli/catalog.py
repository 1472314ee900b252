"""The deferred functions an app registers, and their config, for ``celery defer functions``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from celery_defer.config.flow_keys import GuardSpec
from celery_defer.config.options import FunctionOptions
from celery_defer.deferred.function import DeferredFunction


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """One deferred function as the command shows it.

    Attributes:
        id: the config ``id``.
        task: the Celery task name.
        queue: the queue its runs are sent to (after the app's routes).
        config: the validated config, JSON-ready (durations in seconds).
    """

    id: str
    task: str
    queue: str
    config: dict[str, Any] = field(default_factory=dict)


def deferred_functions(app: Celery) -> list[DeferredFunction[Any]]:
    """Return the app's deferred functions, sorted by id."""
    found = [task for task in app.tasks.values() if isinstance(task, DeferredFunction)]
    return sorted(found, key=lambda task: task.__celery_defer_options__.id)


def find_function(app: Celery, function_id: str) -> DeferredFunction[Any] | None:
    """Return the deferred function with this config id, or ``None``."""
    for task in deferred_functions(app):
        if task.__celery_defer_options__.id == function_id:
            return task
    return None


def describe(app: Celery, task: DeferredFunction[Any]) -> FunctionInfo:
    """Return what ``celery defer functions`` shows of one deferred function."""
    options = task.__celery_defer_options__
    return FunctionInfo(
        id=options.id,
        task=options.task_name,
        queue=_queue(app, options),
        config=_config(options),
    )


def _queue(app: Celery, options: FunctionOptions) -> str:
    if options.queue is not None:
        return options.queue
    # Without a queue in the config, the app's task_routes decide, as when the run is sent.
    route = app.amqp.router.route({}, options.task_name)
    queue = route.get("queue")
    return str(getattr(queue, "name", queue or app.conf.task_default_queue))


def _config(options: FunctionOptions) -> dict[str, Any]:
    config: dict[str, Any] = {"retries": options.retries}
    if options.name != options.id:
        config["name"] = options.name
    if options.schema is not None:
        source = options.schema.source
        config["schema"] = getattr(source, "__name__", repr(source))
    if options.priority is not None:
        config["priority"] = options.priority if isinstance(options.priority, int) else "callable"
    timeouts = {"start": options.start_timeout_s, "finish": options.finish_timeout_s}
    if any(value is not None for value in timeouts.values()):
        config["timeouts"] = {name: value for name, value in timeouts.items() if value is not None}
    for spec in options.flow:
        rule = guard_settings(spec)
        if spec.kind == "concurrency":
            config.setdefault("concurrency", []).append(rule)
        else:
            config[spec.kind] = rule
    return config


def guard_settings(spec: GuardSpec) -> dict[str, Any]:
    """Return a flow-control rule's settings: its limits, and whether it is keyed or shared."""
    # The guard's own arguments (limit, period_s, ...) are bound in its builder.
    settings: dict[str, Any] = dict(getattr(spec.build, "keywords", {}))
    settings["keyed"] = spec.key is not None
    if spec.scope != "fn":
        settings["scope"] = spec.scope
    return settings
