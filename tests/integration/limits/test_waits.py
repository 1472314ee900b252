"""Waiting without polling, on every backend: throttle bookings and concurrency lines."""

from __future__ import annotations

import pytest

from celery_defer.limits import LimitBackend, MemoryLimitBackend
from celery_defer.limits.backend import BeginResult, Handoff, LeaseResult

from .test_backends import TOLERANCE_MS, Elapse, assert_delay

pytestmark = pytest.mark.integration

KEY = "t:limit:waits"
INDEX = "t:lines"


def book(backend: LimitBackend, holder: str, burst: int = 1) -> int:
    return backend.throttle_take(KEY, 5, 2000, burst, reserve=True, holder=holder)


def begin(backend: LimitBackend, holder: str) -> BeginResult:
    return backend.throttle_begin(KEY, holder, 5, 2000)


def test_waiters_book_distinct_increasing_starts_in_the_order_they_asked(
    backend: LimitBackend, exact: bool
) -> None:
    assert book(backend, "first") == 0
    waits = [book(backend, f"w{i}") for i in range(5)]
    for index, wait in enumerate(waits):
        assert_delay(wait, 400 * (index + 1), exact)  # one interval apart, first asked first


def test_burst_is_kept_and_bookings_follow_it(backend: LimitBackend, exact: bool) -> None:
    assert [book(backend, f"b{i}", burst=3) for i in range(3)] == [0, 0, 0]
    assert_delay(book(backend, "w", burst=3), 400, exact)


def test_a_newcomer_does_not_start_ahead_of_a_booked_run_still_to_begin(
    backend: LimitBackend, elapse: Elapse
) -> None:
    assert book(backend, "first") == 0
    assert book(backend, "late") > 0
    elapse(1000)  # the booked time passed, but its run has not begun (a backlog)
    assert book(backend, "newcomer") > 0  # booked behind it, not started ahead of it
    assert begin(backend, "late").wait_ms == 0
    assert begin(backend, "newcomer").wait_ms > 0  # the pace holds for late starts


def test_late_booked_runs_take_the_next_starts_the_pace_allows(
    backend: LimitBackend, elapse: Elapse, exact: bool
) -> None:
    assert book(backend, "first") == 0
    for holder in ("a", "b", "c"):
        book(backend, holder)
    elapse(1300)  # every booked time passed: the three arrive together, late
    waits = [begin(backend, holder).wait_ms for holder in ("a", "b", "c")]
    assert waits[0] == 0
    assert_delay(waits[1], 400, exact)
    assert_delay(waits[2], 800, exact)


def test_late_booked_runs_arriving_out_of_order_still_start_in_booking_order(
    backend: LimitBackend, elapse: Elapse, exact: bool
) -> None:
    assert book(backend, "first") == 0
    for holder in ("a", "b", "c"):
        book(backend, holder)
    elapse(1300)  # all late; c's message happens to arrive first
    assert_delay(begin(backend, "c").wait_ms, 800, exact)  # a and b keep the two before
    assert begin(backend, "a").wait_ms == 0
    assert_delay(begin(backend, "b").wait_ms, 400, exact)
    assert book(backend, "newcomer") > 0  # and a newcomer is behind all three


def test_a_run_on_time_begins_without_waiting_for_a_turn(backend: LimitBackend) -> None:
    assert book(backend, "first") == 0
    assert book(backend, "a") > 0
    assert begin(backend, "a").behind_ms is None  # nothing kept before it: no turn to wait for


def turn(backend: LimitBackend, holder: str, begun: BeginResult, patience_ms: int = 400 + 250) -> int:
    assert begun.behind_ms is not None
    return backend.throttle_turn(KEY, holder, begun.behind_ms, patience_ms, 5)  # an interval, and 250 ms


def test_a_late_run_whose_start_came_waits_for_an_earlier_run_kept_a_start(
    backend: LimitBackend, elapse: Elapse
) -> None:
    assert book(backend, "first") == 0
    for holder in ("a", "b"):
        book(backend, holder)
    elapse(1300)  # both late; b's message happens to arrive first
    begun = begin(backend, "b")
    assert begun.behind_ms is not None  # a was kept the start before b's
    elapse(begun.wait_ms)  # b's start came, a has not begun yet
    assert turn(backend, "b", begun) > 0
    assert begin(backend, "a").wait_ms == 0  # a arrives: its kept start passed, it starts now
    assert turn(backend, "b", begun) == 0  # then b


def three_late_runs_c_then_b(backend: LimitBackend, elapse: Elapse) -> tuple[BeginResult, BeginResult]:
    """a, b and c booked in that order, all late; c begins first, then b; a is a moment behind."""
    assert book(backend, "first") == 0
    for holder in ("a", "b", "c"):
        book(backend, holder)
    elapse(1300)
    return begin(backend, "c"), begin(backend, "b")


def test_runs_waiting_their_turn_go_in_booking_order(backend: LimitBackend, elapse: Elapse) -> None:
    begun_c, begun_b = three_late_runs_c_then_b(backend, elapse)
    elapse(begun_c.wait_ms)  # the starts of b and c came; a's too, a while ago
    assert turn(backend, "b", begun_b, 2000) > 0 and turn(backend, "c", begun_c, 2000) > 0
    begin(backend, "a")
    assert turn(backend, "c", begun_c, 2000) > 0  # b, waiting its turn too, goes first
    assert turn(backend, "b", begun_b, 2000) == 0
    assert turn(backend, "c", begun_c, 2000) == 0


def test_a_run_kept_in_line_that_goes_back_to_the_queue_holds_nobody_up(
    backend: LimitBackend, elapse: Elapse
) -> None:
    begun_c, begun_b = three_late_runs_c_then_b(backend, elapse)
    assert backend.throttle_turn(KEY, "b", 0.0, 0, 0) == 0  # b leaves: its wait was too long
    begin(backend, "a")
    assert turn(backend, "c", begun_c, 2000) == 0  # c waits for a, not for b
    assert begun_b.behind_ms is not None


def test_a_lost_run_holds_the_runs_behind_it_up_only_a_while(backend: LimitBackend, elapse: Elapse) -> None:
    assert book(backend, "first") == 0
    for holder in ("lost", "b"):
        book(backend, holder)
    elapse(1300)
    begun = begin(backend, "b")
    elapse(begun.wait_ms)
    assert 0 < turn(backend, "b", begun) <= 5  # asks again soon
    elapse(260)  # the lost run's turn (its kept start, an interval) is over 250 ms ago: given up
    assert turn(backend, "b", begun) == 0
    assert book(backend, "newcomer") > 0  # the pace goes on
    assert begin(backend, "newcomer").behind_ms is None  # and nobody asks about the lost run again


def park(backend: LimitBackend, holder: str, limit: int = 1, lease_ms: int = 5000) -> LeaseResult:
    return backend.lease_acquire(KEY, holder, limit, lease_ms, 5000, parcel=f"msg-{holder}")


def test_lines_are_first_come_first_served_and_hand_the_slot_over(backend: LimitBackend) -> None:
    assert park(backend, "a").acquired
    parked = [park(backend, holder) for holder in ("b", "c", "d")]
    assert [(r.acquired, r.parked, r.position) for r in parked] == [
        (False, True, 0),
        (False, True, 1),
        (False, True, 2),
    ]
    assert park(backend, "c").position == 1  # a copy keeps its place, never a second one
    assert backend.lease_release(KEY, "a", 10.0, limit=1, lease_ms=5000) == (Handoff("b", "msg-b"),)
    assert not park(backend, "newcomer").acquired  # the slot is held for b: nobody steals it
    assert park(backend, "b").acquired  # b arrives: it holds the slot handed to it
    assert backend.lease_release(KEY, "b", 10.0, limit=1, lease_ms=5000) == (Handoff("c", "msg-c"),)


def test_a_run_that_leaves_the_line_is_not_sent(backend: LimitBackend) -> None:
    assert park(backend, "a").acquired
    park(backend, "b")
    park(backend, "c")
    backend.lease_release(KEY, "b", None, limit=1, lease_ms=5000)  # b gives up (a start timeout)
    assert backend.lease_release(KEY, "a", None, limit=1, lease_ms=5000) == (Handoff("c", "msg-c"),)


def test_a_lost_hand_over_goes_back_to_the_head_and_recovery_restarts_the_line(
    backend: LimitBackend, elapse: Elapse
) -> None:
    assert park(backend, "a", lease_ms=200).acquired
    park(backend, "b", lease_ms=200)
    park(backend, "c", lease_ms=200)
    # a's worker was killed: nothing releases. Its lease runs out.
    elapse(200 + TOLERANCE_MS)
    assert backend.line_restart(KEY, 1, 200) == (2, (Handoff("b", "msg-b"),))
    # b's sender died too: its hand-over lapses, and b goes back to the head.
    elapse(200 + TOLERANCE_MS)
    assert backend.line_restart(KEY, 1, 200) == (2, (Handoff("b", "msg-b"),))
    assert park(backend, "b", lease_ms=200).acquired
    assert backend.line_restart(KEY, 1, 200) == (1, ())


def test_a_newcomer_finding_free_slots_and_a_line_sends_the_head_and_parks(
    backend: LimitBackend, elapse: Elapse
) -> None:
    assert park(backend, "a", lease_ms=200).acquired
    park(backend, "b", lease_ms=200)
    elapse(200 + TOLERANCE_MS)  # a died holding the slot
    result = park(backend, "newcomer", lease_ms=200)
    assert (result.acquired, result.parked, result.handoffs) == (False, True, (Handoff("b", "msg-b"),))


def two_handed_after_two_holders(backend: LimitBackend) -> None:
    """a and b hold both slots, c and d park, and a then b end: c is handed a slot, then d."""
    for holder in ("a", "b", "c", "d"):
        park(backend, holder, limit=2)
    assert backend.lease_release(KEY, "a", None, limit=2, lease_ms=5000) == (Handoff("c", "msg-c"),)
    assert backend.lease_release(KEY, "b", None, limit=2, lease_ms=5000) == (Handoff("d", "msg-d"),)


def lease_turn(backend: LimitBackend, holder: str, result: LeaseResult) -> int:
    assert result.behind_ms is not None
    return backend.lease_turn(KEY, holder, result.behind_ms, 5)


def test_runs_handed_slots_and_arriving_in_order_have_no_turn_to_wait(backend: LimitBackend) -> None:
    two_handed_after_two_holders(backend)
    assert park(backend, "c", limit=2).behind_ms is None
    assert park(backend, "d", limit=2).behind_ms is None


def test_a_run_handed_a_slot_waits_for_one_handed_a_slot_before_it(backend: LimitBackend) -> None:
    two_handed_after_two_holders(backend)
    d = park(backend, "d", limit=2)  # d's message happens to arrive first
    assert d.acquired
    if isinstance(backend, MemoryLimitBackend):
        assert d.behind_ms is None  # one process: the memory backend keeps no turns
        return
    assert lease_turn(backend, "d", d) > 0
    assert park(backend, "c", limit=2).behind_ms is None  # c arrives: its turn
    assert lease_turn(backend, "d", d) == 0  # then d


def test_a_newcomer_taking_a_free_slot_waits_for_a_run_handed_one_before(backend: LimitBackend) -> None:
    for holder in ("a", "b", "c"):
        park(backend, holder, limit=2)
    assert backend.lease_release(KEY, "a", None, limit=2, lease_ms=5000) == (Handoff("c", "msg-c"),)
    backend.lease_release(KEY, "b", None, limit=2, lease_ms=5000)  # nobody left in line: a slot is free
    newcomer = park(backend, "newcomer", limit=2)
    assert newcomer.acquired
    if isinstance(backend, MemoryLimitBackend):
        assert newcomer.behind_ms is None
        return
    assert lease_turn(backend, "newcomer", newcomer) > 0  # c, handed its slot before, has not begun
    assert park(backend, "c", limit=2).behind_ms is None
    assert lease_turn(backend, "newcomer", newcomer) == 0


def test_a_lost_handed_run_holds_the_runs_behind_it_up_only_a_while(
    backend: LimitBackend, elapse: Elapse
) -> None:
    two_handed_after_two_holders(backend)
    park(backend, "e", limit=2)
    d = park(backend, "d", limit=2)  # c was lost
    if isinstance(backend, MemoryLimitBackend):
        assert d.behind_ms is None
        return
    assert 0 < lease_turn(backend, "d", d) <= 5  # asks again soon
    elapse(260)  # c was handed its slot over 250 ms ago: given up
    assert lease_turn(backend, "d", d) == 0
    assert backend.lease_release(KEY, "d", None, limit=2, lease_ms=5000) == (Handoff("e", "msg-e"),)
    assert park(backend, "e", limit=2).behind_ms is None  # and nobody waits for c again


def test_the_lines_index_forgets_only_what_did_not_park_again(backend: LimitBackend) -> None:
    backend.lines_note(INDEX, "1:5000:k")
    [(member, noted_ms)] = backend.lines_noted(INDEX)
    backend.lines_forget(INDEX, member, noted_ms - 1)  # it parked again since
    assert [m for m, _ in backend.lines_noted(INDEX)] == ["1:5000:k"]
    backend.lines_forget(INDEX, member, noted_ms)
    assert backend.lines_noted(INDEX) == []
