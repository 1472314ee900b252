"""Settings of the test Django project: sqlite, one app, Celery settings under the CELERY_ namespace."""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("CDT_REDIS_URL", "redis://127.0.0.1:1")

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
INSTALLED_APPS = ["tests.django_project.shop"]
ROOT_URLCONF = "tests.django_project.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CDT_DJANGO_DB", ":memory:"),
        # The worker and the web process write the same file: wait for each other's locks.
        "OPTIONS": {"timeout": 20},
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CELERY_BROKER_URL = f"{REDIS_URL}/0"
CELERY_RESULT_BACKEND = f"{REDIS_URL}/1"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_DEFER_REDIS_URL = f"{REDIS_URL}/2"
CELERY_DEFER_KEY_PREFIX = "django_shop"
CELERY_DEFER_RECOVERY_INTERVAL = 1
CELERY_TASK_ALWAYS_EAGER = os.environ.get("CDT_EAGER") == "1"
