"""Part timers (lib.progress.Timer): what is recorded and printed, not how long anything takes."""

import re

import pytest

from lib import progress


def test_parts_are_recorded_in_order_and_printed(capsys):
    timer = progress.Timer()
    with timer.part("first"):
        pass
    timer.start()
    assert timer.done("second") is None  # a cell ending with it displays nothing
    assert list(timer.seconds) == ["first", "second"]
    assert all(v >= 0 for v in timer.seconds.values())
    assert timer.cpu_seconds == {}
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r"[\d.]+", "N", line) for line in lines] == ["[first: N s]", "[second: N s]"]
    assert re.fullmatch(r"total \d+ s wall; parts: first \d+ s, second \d+ s", timer.summary())


def test_cpu_time_is_recorded_when_asked(capsys):
    timer = progress.Timer(cpu=True)
    timer.done("only")
    assert set(timer.cpu_seconds) == {"only"}
    assert re.fullmatch(r"\[only: [\d.]+ s wall, [\d.]+ s CPU\]", capsys.readouterr().out.strip())
    assert re.fullmatch(r"total \d+ s wall, \d+ s CPU; parts: only \d+ s", timer.summary())


def test_a_failing_part_is_not_recorded():
    timer = progress.Timer()
    with pytest.raises(RuntimeError):
        with timer.part("broken"):
            raise RuntimeError("inside the part")
    assert timer.seconds == {}
    assert timer.summary().endswith("parts: none")


def test_wall_seconds_calls_the_function_once_with_its_arguments():
    calls = []
    seconds = progress.wall_seconds(lambda a, b=0: calls.append((a, b)), 1, b=2)
    assert calls == [(1, 2)] and seconds >= 0
