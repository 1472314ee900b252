"""The lease keeper renews in the background, drops lost leases and survives fork."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator

import pytest

from celery_defer.lease_keeper import LeaseKeeper

LEASE_S = 0.15  # renewed every 50 ms


@pytest.fixture
def keeper() -> Iterator[LeaseKeeper]:
    keeper = LeaseKeeper()
    yield keeper
    keeper.stop()


def test_renews_until_unregistered(keeper: LeaseKeeper) -> None:
    renewed = threading.Semaphore(0)

    def renew() -> bool:
        renewed.release()
        return True

    keeper.register("run-1", lease_s=LEASE_S, renew=renew)
    for _ in range(3):
        assert renewed.acquire(timeout=10)
    keeper.unregister("run-1")
    assert keeper.registered() == []
    while renewed.acquire(timeout=0.2):  # at most one renewal was already under way
        pass
    assert not renewed.acquire(timeout=3 * LEASE_S)


def test_lost_lease_is_dropped(keeper: LeaseKeeper) -> None:
    lost = threading.Event()
    keeper.register("run-1", lease_s=LEASE_S, renew=lambda: False, on_lost=lost.set)
    assert lost.wait(10)
    assert keeper.registered() == []


def test_failing_renewal_is_retried(keeper: LeaseKeeper, caplog: pytest.LogCaptureFixture) -> None:
    calls = threading.Semaphore(0)

    def renew() -> bool:
        calls.release()
        raise ConnectionError("redis down")

    with caplog.at_level(logging.WARNING, logger="celery_defer.lease_keeper"):
        keeper.register("run-1", lease_s=LEASE_S, renew=renew)
        assert calls.acquire(timeout=10)
        assert calls.acquire(timeout=10)
    assert keeper.registered() == ["run-1"]
    assert "renewal failed" in caplog.text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_starts_afresh(keeper: LeaseKeeper) -> None:
    parent_pid = os.getpid()
    read_end, write_end = os.pipe()

    def parent_renew() -> bool:
        if os.getpid() != parent_pid:
            os.write(write_end, b"P")  # the parent's lease must not be renewed by a child
        return True

    def child_renew() -> bool:
        os.write(write_end, b"C")
        return True

    keeper.register("parent-run", lease_s=LEASE_S, renew=parent_renew)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, as prefork does
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            keeper.register("child-run", lease_s=LEASE_S, renew=child_renew)
            code = 0 if keeper.registered() == ["child-run"] else 2
            time.sleep(10 * LEASE_S / 3)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        written = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"C" in written
    assert b"P" not in written
    assert keeper.registered() == ["parent-run"]


def test_a_lease_registered_while_the_keeper_idles_is_renewed_on_time(keeper: LeaseKeeper) -> None:
    # Short runs come and go without waking the thread; a lease registered while
    # it idles (on its own short wake-ups, or asleep with longer ones seen) is
    # still renewed within its interval.
    keeper.register("long", lease_s=30.0, renew=lambda: True)
    keeper.unregister("long")
    for token, lease_s in (("same", 30.0), ("short", LEASE_S), ("again", LEASE_S)):
        renewed = threading.Event()

        def renew(renewed: threading.Event = renewed) -> bool:
            renewed.set()
            return True

        time.sleep(LEASE_S)  # the keeper is idle
        began = time.monotonic()
        keeper.register(token, lease_s=lease_s, renew=renew)
        if lease_s == LEASE_S:
            assert renewed.wait(10)
            assert time.monotonic() - began < LEASE_S  # a third of it, with room for a loaded machine
        keeper.unregister(token)
