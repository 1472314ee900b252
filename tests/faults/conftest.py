"""Fault tests: real ``celery worker`` processes on a private Redis, faults made on purpose.

The worker fixtures are the integration layer's, imported here so both layers
start workers the same way. ``state_server`` adds a second Redis for
celery_defer's state, apart from the broker's, so a test can take the state
store away and bring it back while the broker stays.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_defer.embedded_redis import RedisServer
from tests.integration.conftest import app_module, empty_state_store, seen, start_worker, state_store

__all__ = ["app_module", "empty_state_store", "seen", "start_worker", "state_store"]


@pytest.fixture
def state_server() -> Iterator[RedisServer]:
    """celery_defer's own Redis for one test, durable (AOF, fsync on every write)."""
    with RedisServer(durable=True) as server:
        yield server
