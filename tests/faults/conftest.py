"""Fault tests: real ``celery worker`` processes on a private Redis, as in tests/integration.

The worker fixtures are the integration layer's, imported here so both layers
start workers the same way.
"""

from __future__ import annotations

from tests.integration.conftest import app_module, seen, start_worker

__all__ = ["app_module", "seen", "start_worker"]
