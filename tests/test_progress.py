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


class _Clock:
    """A stand-in for time.perf_counter and time.process_time that moves only when told."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_nested_part_leaves_the_outer_parts_time_whole(monkeypatch, capsys):
    wall, cpu = _Clock(), _Clock(50.0)
    monkeypatch.setattr(progress.time, "perf_counter", wall)
    monkeypatch.setattr(progress.time, "process_time", cpu)
    timer = progress.Timer(cpu=True)
    with timer.part("outer"):
        wall.now += 2.0
        with timer.part("inner"):
            wall.now, cpu.now = wall.now + 3.0, cpu.now + 1.0
        wall.now += 5.0
    assert timer.seconds == {"inner": 3.0, "outer": 10.0}
    assert timer.cpu_seconds == {"inner": 1.0, "outer": 1.0}
    capsys.readouterr()
    # The CPU total counts from the timer's creation, as the wall total does (not from the process's start).
    assert timer.summary() == "total 10 s wall, 1 s CPU; parts: inner 3 s, outer 10 s"


def test_part_names_must_be_strings_and_wall_seconds_a_callable():
    timer = progress.Timer()
    for name in (None, 3, "", "  "):
        with pytest.raises(ValueError, match="non-empty string"):
            timer.done(name)
        with pytest.raises(ValueError, match="non-empty string"):
            with timer.part(name):
                pass
    assert timer.seconds == {}
    with pytest.raises(TypeError, match="must be callable"):
        progress.wall_seconds(3)
