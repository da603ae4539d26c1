"""rectified.schedules.plot draws every schedule, labelled, and saves without a display."""

from __future__ import annotations

import pytest

from rectified.schedules import linear_warmup, plot, radam_warmup, untuned_warmup

matplotlib = pytest.importorskip("matplotlib")


def test_draws_each_schedule_over_updates_1_to_steps(tmp_path) -> None:
    schedules = {
        "RAdam r_t": radam_warmup(0.999),
        "linear 500": linear_warmup(500),
        "untuned": untuned_warmup(0.999),
    }
    path = tmp_path / "warmups.png"
    figure = plot(schedules, steps=3000, path=path)
    (ax,) = figure.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == list(schedules)
    for line, schedule in zip(lines, schedules.values(), strict=True):
        assert list(line.get_xdata()) == list(range(1, 3001))
        assert list(line.get_ydata()) == [schedule(t) for t in range(1, 3001)]
    assert path.read_bytes().startswith(b"\x89PNG")


def test_draws_on_a_given_axes() -> None:
    from matplotlib.figure import Figure

    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert plot({"w": linear_warmup(3)}, steps=5, ax=right) is figure
    assert len(right.get_lines()) == 1 and not left.get_lines()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match=r"Invalid schedules value: \{\}"):
        plot({}, steps=10)
    with pytest.raises(ValueError, match=r"Invalid steps value: 0"):
        plot({"w": linear_warmup(3)}, steps=0)
