"""The background thread: jobs tried again until done, and no thread left once idle."""

from __future__ import annotations

import threading

from celery_defer.background import Background


def background_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "celery-defer-background"]


def test_a_job_is_tried_again_until_done_and_the_thread_ends_with_the_work() -> None:
    runner = Background()
    tries: list[int] = []

    def flaky() -> bool:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("Redis away")
        return True

    runner.submit("flaky job", flaky, budget_s=5)
    assert runner.wait_idle(timeout_s=5)
    assert len(tries) == 2
    for thread in background_threads():
        thread.join(timeout=1)
    assert background_threads() == []  # nothing lingers once the work is done


def test_a_job_that_never_succeeds_gives_up_after_its_budget() -> None:
    runner = Background()
    gave_up = threading.Event()
    runner.submit("hopeless job", lambda: False, budget_s=0.2, on_give_up=gave_up.set)
    assert gave_up.wait(timeout=3)


def test_pending_counts_the_jobs_not_yet_done() -> None:
    runner = Background()
    redis_back = threading.Event()
    runner.submit("waits for Redis", redis_back.is_set, budget_s=5)
    assert runner.pending() == 1
    redis_back.set()
    assert runner.wait_idle(timeout_s=5)
    assert runner.pending() == 0
