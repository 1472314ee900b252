"""The project's Celery app, as Celery's Django guide writes it, with DjangoDeferTask as task class."""

from __future__ import annotations

import os

from celery import Celery

from celery_defer.django import DjangoDeferTask

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

# DjangoDeferTask: every task may call defer() and has delay_on_commit().
app = Celery("django_project", task_cls=DjangoDeferTask)
# CELERY_BROKER_URL, CELERY_DEFER_REDIS_URL, ... from settings.py.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
