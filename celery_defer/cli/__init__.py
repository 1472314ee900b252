"""The ``celery defer`` command (entry point ``celery.commands``): see :mod:`celery_defer.cli.commands`."""

from __future__ import annotations

from celery_defer.cli.commands import defer_command

__all__ = ["defer_command"]
