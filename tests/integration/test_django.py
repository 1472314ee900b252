"""Django: DeferTask and Django's on-commit methods together, and defers made from a view.

The project is ``tests/django_project`` (sqlite); its Celery app reads the
``CELERY_``-namespaced Django settings, ``CELERY_DEFER_REDIS_URL`` included.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from celery_defer.embedded_redis import RedisServer
from tests.integration.conftest import wait_for

django = pytest.importorskip("django")

pytestmark = pytest.mark.integration

SETTINGS = "tests.django_project.settings"


@pytest.fixture(scope="module")
def project(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The Django project, set up in this process on a fresh sqlite file."""
    env = {
        "CDT_REDIS_URL": redis_server.url,
        "CDT_DJANGO_DB": str(tmp_path_factory.mktemp("django") / "shop.sqlite3"),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        django.setup()
        project = importlib.import_module("tests.django_project")
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0)
    finally:
        # Celery apps made later by other tests must not get Django's fixup.
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    os.environ["CDT_REDIS_URL"] = redis_server.url
    yield project


@pytest.fixture
def shop(project: ModuleType, redis_url: str) -> Any:
    from tests.django_project.shop import models, tasks

    models.AuditEntry.objects.all().delete()
    models.Order.objects.all().delete()
    return tasks


@pytest.fixture
def client(project: ModuleType) -> Any:
    from django.test import Client

    return Client()


def start_django_worker(start_worker: Any, project: ModuleType) -> Any:
    from django.conf import settings

    database = str(settings.DATABASES["default"]["NAME"])
    return start_worker(
        app="tests.django_project",
        concurrency=1,
        env={"DJANGO_SETTINGS_MODULE": SETTINGS, "CDT_DJANGO_DB": database},
    )


def test_tasks_of_a_django_app_get_defer_and_the_on_commit_methods(project, shop):
    from celery.contrib.django.task import DjangoTask
    from celery.fixups.django import DjangoFixup

    from celery_defer import DeferTask

    app = project.celery_app
    assert any(isinstance(fixup, DjangoFixup) for fixup in app._fixups)  # the fixup is installed
    assert isinstance(shop.order_placed, DeferTask)
    assert isinstance(shop.order_placed, DjangoTask)
    assert callable(shop.order_placed.delay_on_commit)
    assert app.conf.defer_redis_url.endswith("/2")  # CELERY_DEFER_REDIS_URL


def test_eager_a_committed_order_runs_its_deferred_work_at_once(project, shop, client):
    from django.test import override_settings

    from tests.django_project.shop.models import AuditEntry, Order

    # Eager through the Django setting the app reads, as a project's tests would. Celery 5.4
    # looks the namespaced key (CELERY_TASK_ALWAYS_EAGER) up in every map first, so a run-time
    # ``app.conf.task_always_eager = True`` loses to settings.py there; 5.7 reads it first.
    with override_settings(CELERY_TASK_ALWAYS_EAGER=True):
        assert project.celery_app.conf.task_always_eager is True
        response = client.post("/orders/", {"email": "a@example.com", "total_cents": 100})
    assert response.status_code == 201
    order = Order.objects.get(pk=response.json()["order"])
    assert order.receipt_sent
    [entry] = AuditEntry.objects.all()
    assert (entry.order_id, entry.event, entry.parent_task) == (
        order.pk,
        "placed",
        "celery_defer.defer_after_commit",
    )


def test_worker_runs_defers_of_a_committed_order_and_nothing_of_a_rolled_back_one(
    project, shop, client, start_worker
):
    from tests.django_project.shop.models import AuditEntry, Order

    worker = start_django_worker(start_worker, project)
    rejected = client.post("/orders/", {"email": "r@example.com", "total_cents": 1, "reject": "1"})
    assert rejected.status_code == 422
    placed = client.post("/orders/", {"email": "p@example.com", "total_cents": 200})
    assert placed.status_code == 201
    order_id = placed.json()["order"]

    try:
        wait_for(
            lambda: Order.objects.get(pk=order_id).receipt_sent and AuditEntry.objects.exists(), timeout_s=30
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; worker log:\n{worker.log()[-4000:]}") from None
    # One worker process takes messages in order, and whatever the rejected request
    # would have sent was sent before the placed one's: it would have run by now.
    assert [(e.order_id, e.event) for e in AuditEntry.objects.all()] == [(order_id, "placed")]
    assert list(Order.objects.values_list("email", flat=True)) == ["p@example.com"]


def test_defer_on_commit_checks_the_data_in_the_view_and_skips_with_a_log(project, shop, caplog):
    from django.db import connection, transaction

    from celery_defer.django import defer_on_commit

    with caplog.at_level(logging.ERROR, logger="celery_defer"), transaction.atomic():
        defer_on_commit("audit", function=shop.audit, data={"order_id": "not a number", "event": "x"})
        defer_on_commit("audit", function=print, data={})
        assert connection.run_on_commit == []  # nothing will be sent on commit
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "defer_on_commit('audit') skipped",
        "defer_on_commit('audit') skipped",
    ]
