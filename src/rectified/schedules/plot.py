"""Several schedules on one figure (matplotlib, the optional extra ``rectified[plot]``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rectified.schedules.base import Schedule
from rectified.schedules.validation import check_int


def plot(
    schedules: Mapping[str, Schedule],
    steps: int,
    ax: Any = None,
    path: str | Path | None = None,
) -> Any:
    """Draw each schedule over updates t = 1..steps, labelled by its key; return the figure.

    Without ``ax`` a new figure is made without pyplot (rendered by the Agg canvas, so saving
    needs no display); with ``ax`` the curves go on it. ``path`` saves the figure there.
    """
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError(
            f"Invalid schedules value: {schedules!r} (expected a non-empty dict of name: schedule)"
        )
    steps = check_int("steps", steps, 1)
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "rectified.schedules.plot needs matplotlib: pip install 'rectified[plot]'"
        ) from error
    if ax is None:
        figure = Figure(figsize=(7.0, 4.0), layout="constrained")
        ax = figure.add_subplot()
    else:
        figure = ax.figure
    ts = range(1, steps + 1)
    for label, schedule in schedules.items():
        ax.plot(ts, [schedule(t) for t in ts], label=label)
    ax.set_xlabel("update t")
    ax.set_ylabel("learning rate (multiplier)")
    ax.legend()
    if path is not None:
        figure.savefig(path)
    return figure
