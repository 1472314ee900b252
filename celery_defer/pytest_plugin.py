"""The pytest plugin of celery_defer (entry point ``pytest11``): the ``captured_defers`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_defer.testing import CapturedDefer, capture_defers


@pytest.fixture
def captured_defers() -> Iterator[list[CapturedDefer]]:
    """Every ``defer()`` of the test, captured instead of sent (see ``celery_defer.testing``)."""
    with capture_defers() as captured:
        yield captured
