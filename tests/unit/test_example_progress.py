"""The example's progress bars: redrawn in place on a terminal, plain lines in a log file."""

from __future__ import annotations

import io

from example_project.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_it_prints_a_line_per_tenth_and_no_carriage_return():
    out = io.StringIO()
    bar = ProgressBar("placing orders ", 20, stream=out)
    for value in range(1, 21):
        bar.update(value)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [f"placing orders: {n}/20" for n in range(1, 21, 2)] + ["placing orders: 20/20"]


def test_off_a_terminal_where_it_stopped_is_printed_at_close():
    out = io.StringIO()
    bar = ProgressBar("deferred runs", 100, stream=out)
    bar.update(13)
    bar.close()
    assert out.getvalue().splitlines() == ["deferred runs: 13/100"]


def test_on_a_terminal_it_redraws_one_line():
    out = Terminal()
    bar = ProgressBar("runs", 4, width=4, stream=out)
    for value in range(5):
        bar.update(value)
    bar.close()
    assert (
        out.getvalue()
        == "\rruns [....] 0/4\rruns [#...] 1/4\rruns [##..] 2/4\rruns [###.] 3/4\rruns [####] 4/4\n"
    )
