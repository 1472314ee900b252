"""A small Django project (sqlite) whose Celery app is configured from Django settings.

Run its worker as Django projects do: ``DJANGO_SETTINGS_MODULE=tests.django_project.settings
celery -A tests.django_project worker``. Tests set ``CDT_REDIS_URL`` and ``CDT_DJANGO_DB``.
"""

from __future__ import annotations

from tests.django_project.celery import app as celery_app

__all__ = ["celery_app"]
