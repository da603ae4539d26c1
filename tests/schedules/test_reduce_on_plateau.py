"""ReduceOnPlateau against torch's ReduceLROnPlateau, state_dict round-trips, validation."""

from __future__ import annotations

import io
import random

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

import rectified
from rectified.schedules import PlateauSchedule, ReduceOnPlateau


def two_groups(factory=torch.optim.SGD):
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    return factory([{"params": [a]}, {"params": [b], "lr": 0.02}], lr=0.1)


def metrics(seed: int, n: int = 300, mode: str = "min") -> list[float]:
    """A noisy curve with long plateaus, exact repeats and small (sub-threshold) changes."""
    rng = random.Random(seed)
    values, level = [], 1.0
    for _ in range(n):
        roll = rng.random()
        if roll < 0.15:
            level *= 0.9  # a real improvement
        elif roll < 0.3:
            level *= 1 - 5e-5  # below the default relative threshold
        elif roll < 0.45:
            level -= 2e-3  # an absolute change
        values.append(level if roll < 0.45 or rng.random() < 0.5 else level * (1 + rng.random()))
    return values if mode == "min" else [-v for v in values]


CONFIGS = [
    {},
    {"factor": 0.1, "patience": 3},
    {"mode": "max", "patience": 2, "cooldown": 3},
    {"threshold_mode": "abs", "threshold": 1e-3, "patience": 1},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 0, "factor": 0.7},
    {"patience": 2, "cooldown": 1, "min_lr": [0.01, 0.005]},
    {"patience": 0, "min_lr": 0.004, "eps": 1e-3},
]


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c) for c in CONFIGS])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_torch_reduce_lr_on_plateau(config: dict, seed: int) -> None:
    config = {"factor": 0.5, "patience": 10, **config}  # torch's default factor is 0.1
    ours_opt, theirs_opt = two_groups(), two_groups()
    ours = ReduceOnPlateau(ours_opt, **config)
    theirs = ReduceLROnPlateau(theirs_opt, **config)
    reductions = 0
    for epoch, metric in enumerate(metrics(seed, mode=config.get("mode", "min")), start=1):
        before = ours.get_last_lr()
        ours.step(metric)
        theirs.step(metric)
        reductions += ours.get_last_lr() != before
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12, abs=1e-15)
        lrs = [group["lr"] for group in ours_opt.param_groups]
        assert lrs == pytest.approx([group["lr"] for group in theirs_opt.param_groups], rel=1e-12)
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter, ours.last_epoch) == (
            theirs.best,
            theirs.num_bad_epochs,
            theirs.cooldown_counter,
            theirs.last_epoch,
        ), epoch
    assert reductions >= 1  # the run exercised the rule


def test_halves_after_patience_bad_evaluations() -> None:
    opt = two_groups()
    scheduler = ReduceOnPlateau(opt, patience=2)
    for metric in [1.0, 1.0, 1.0]:
        scheduler.step(metric)
        assert scheduler.get_last_lr() == [0.1, 0.02]
    scheduler.step(1.0)  # the third evaluation without improvement
    assert scheduler.get_last_lr() == [0.05, 0.01]
    scheduler.step(0.5)
    assert scheduler.get_last_lr() == [0.05, 0.01]


def test_min_lr_bounds_and_cooldown_delays() -> None:
    opt = two_groups()
    scheduler = ReduceOnPlateau(opt, patience=0, cooldown=2, min_lr=[0.04, 0.0])
    lrs = []
    for metric in [1.0] + [2.0] * 7:
        scheduler.step(metric)
        lrs.append(scheduler.get_last_lr())
    # reduce, 2 evaluations of cooldown, reduce (first group held at 0.04), cooldown, ...
    assert lrs == [
        [0.1, 0.02],
        [0.05, 0.01],
        [0.05, 0.01],
        [0.05, 0.01],
        [0.04, 0.005],
        [0.04, 0.005],
        [0.04, 0.005],
        [0.04, 0.0025],
    ]


def test_tensor_metric_and_lookahead() -> None:
    param = torch.zeros(2, requires_grad=True)
    opt = rectified.Lookahead(rectified.RAdam([param], lr=0.1))
    scheduler = PlateauSchedule(opt, patience=0)
    scheduler.step(torch.tensor(1.0))
    scheduler.step(torch.tensor(1.5))
    assert opt.optimizer.param_groups[0]["lr"] == 0.05
    assert scheduler.get_last_lr() == [0.05]


def _save_load(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_state_dict_round_trip_mid_run(config: dict) -> None:
    series = metrics(3, mode=config.get("mode", "min"))
    opt = two_groups(rectified.Adam)
    scheduler = ReduceOnPlateau(opt, **config)
    for metric in series[:137]:
        scheduler.step(metric)
    saved = _save_load({"opt": opt.state_dict(), "sched": scheduler.state_dict()})
    straight = []
    for metric in series[137:]:
        scheduler.step(metric)
        straight.append(scheduler.get_last_lr())

    opt2 = two_groups(rectified.Adam)
    resumed = ReduceOnPlateau(opt2, **config)
    opt2.load_state_dict(saved["opt"])
    resumed.load_state_dict(saved["sched"])
    continued = []
    for metric in series[137:]:
        resumed.step(metric)
        continued.append(resumed.get_last_lr())
    assert continued == straight
    assert resumed.state_dict() == scheduler.state_dict()


def test_min_lr_scalar_covers_groups_added_later() -> None:
    opt = two_groups()
    scheduler = ReduceOnPlateau(opt, patience=0, min_lr=0.015)
    opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": 0.02})
    scheduler.step(1.0)
    scheduler.step(2.0)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.015, 0.015]


def test_repr() -> None:
    assert repr(ReduceOnPlateau(two_groups(), patience=3)) == (
        "ReduceOnPlateau(mode='min', factor=0.5, patience=3, threshold=0.0001, "
        "threshold_mode='rel', cooldown=0, min_lr=[0.0, 0.0], eps=1e-08)"
    )


BAD = [
    ({"mode": "lowest"}, "Invalid mode value: 'lowest'"),
    ({"threshold_mode": "pct"}, "Invalid threshold_mode value: 'pct'"),
    ({"factor": 1.0}, "Invalid factor value: 1.0"),
    ({"factor": 0.0}, "Invalid factor value: 0.0"),
    ({"patience": -1}, "Invalid patience value: -1"),
    ({"patience": 1.5}, "Invalid patience value: 1.5"),
    ({"threshold": -0.1}, "Invalid threshold value: -0.1"),
    ({"cooldown": -2}, "Invalid cooldown value: -2"),
    ({"min_lr": -1e-3}, "Invalid min_lr value: -0.001"),
    ({"min_lr": [0.0]}, "Invalid min_lr value: [0.0] (expected 2 values"),
    ({"min_lr": [0.0, -1.0]}, "Invalid min_lr[1] value: -1.0"),
    ({"eps": -1.0}, "Invalid eps value: -1.0"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        ReduceOnPlateau(two_groups(), **kwargs)
    assert str(error.value).startswith(message)


def test_not_an_optimizer() -> None:
    with pytest.raises(TypeError, match="is not an Optimizer"):
        ReduceOnPlateau(object())
