"""ScheduleLR against torch.optim.lr_scheduler: the same learning rates, update by update, to
1e-12; per-group schedules; rectified optimizers, Lookahead and Ranger; state_dict round-trips."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable

import pytest
import torch
from torch.optim import lr_scheduler as torch_lr

import rectified
from rectified.schedules import (
    Schedule,
    ScheduleLR,
    constant,
    cosine_annealing,
    cosine_restarts,
    exponential_decay,
    join,
    linear_warmup,
    piecewise_constant,
    reciprocal_decay,
    step_decay,
)

BASE_LR = 0.3
STEPS = 400


def make_optimizer(factory: Callable = torch.optim.SGD, lr: float = BASE_LR, **kwargs):
    params = [torch.zeros(3, dtype=torch.float64, requires_grad=True)]
    return factory(params, lr=lr, **kwargs)


def lrs_over(optimizer, scheduler, steps: int) -> list[list[float]]:
    """The lrs each update uses: read before optimizer.step(), then scheduler.step()."""
    seen = []
    for _ in range(steps):
        seen.append([float(group["lr"]) for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def assert_same_lrs(ours: list[list[float]], theirs: list[list[float]]) -> None:
    assert len(ours) == len(theirs)
    for t, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12), f"update {t}: {a} != {b}"


def _sequential(opt):
    warmup = torch_lr.LinearLR(opt, start_factor=1 / 25, total_iters=24)
    cosine = torch_lr.CosineAnnealingLR(opt, T_max=150, eta_min=0.003)
    return torch_lr.SequentialLR(opt, [warmup, cosine], milestones=[25])


def _sequential_three(opt):
    warmup = torch_lr.LinearLR(opt, start_factor=1 / 10, total_iters=9)
    flat = torch_lr.ConstantLR(opt, factor=1.0, total_iters=0)
    decay = torch_lr.ExponentialLR(opt, gamma=0.99)
    return torch_lr.SequentialLR(opt, [warmup, flat, decay], milestones=[10, 60])


# (name, torch scheduler factory, equivalent schedule of multipliers, updates compared)
PARITY = [
    ("StepLR", lambda o: torch_lr.StepLR(o, step_size=30, gamma=0.5), step_decay(30, 0.5), STEPS),
    ("StepLR-1", lambda o: torch_lr.StepLR(o, step_size=1, gamma=0.98), step_decay(1, 0.98), STEPS),
    (
        "MultiStepLR",
        lambda o: torch_lr.MultiStepLR(o, milestones=[50, 120, 300], gamma=0.3),
        piecewise_constant([50, 120, 300], [1.0, 0.3, 0.3**2, 0.3**3]),
        STEPS,
    ),
    (
        "ExponentialLR",
        lambda o: torch_lr.ExponentialLR(o, gamma=0.99),
        exponential_decay(0.99),
        STEPS,
    ),
    (
        "CosineAnnealingLR",
        lambda o: torch_lr.CosineAnnealingLR(o, T_max=STEPS - 1, eta_min=0.01),
        cosine_annealing(STEPS - 1, lr_min=0.01 / BASE_LR),
        STEPS,  # s = 0..T_max: its whole first half-period, where torch equals the closed form
    ),
    (
        "CosineAnnealingWarmRestarts",
        lambda o: torch_lr.CosineAnnealingWarmRestarts(o, T_0=37, eta_min=0.02),
        cosine_restarts(37, lr_min=0.02 / BASE_LR),
        STEPS,
    ),
    (
        "CosineAnnealingWarmRestarts-mult",
        lambda o: torch_lr.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=3, eta_min=0.0),
        cosine_restarts(5, period_mult=3),
        STEPS,
    ),
    (
        "LinearLR",
        lambda o: torch_lr.LinearLR(o, start_factor=1 / 50, end_factor=1.0, total_iters=49),
        linear_warmup(50),
        STEPS,
    ),
    (
        "SequentialLR",
        _sequential,
        join([linear_warmup(25), cosine_annealing(150, 0.01)], [25]),
        176,
    ),
    (
        "SequentialLR-3",
        _sequential_three,
        join([linear_warmup(10), constant(1.0), exponential_decay(0.99)], [10, 60]),
        STEPS,
    ),
]
IDS = [case[0] for case in PARITY]


@pytest.mark.parametrize("name,torch_factory,schedule,steps", PARITY, ids=IDS)
def test_matches_torch_scheduler(name, torch_factory, schedule: Schedule, steps: int) -> None:
    theirs_opt = make_optimizer()
    theirs = lrs_over(theirs_opt, torch_factory(theirs_opt), steps)
    ours_opt = make_optimizer()
    ours = lrs_over(ours_opt, ScheduleLR(ours_opt, schedule), steps)
    assert_same_lrs(ours, theirs)


def test_first_update_of_linear_warmup_is_not_zero() -> None:
    opt = make_optimizer()
    ScheduleLR(opt, linear_warmup(4))
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE_LR / 4)


def test_cosine_annealing_holds_lr_min_where_torch_rises_again() -> None:
    T = 20
    theirs_opt = make_optimizer()
    theirs = lrs_over(theirs_opt, torch_lr.CosineAnnealingLR(theirs_opt, T_max=T), 2 * T + 1)
    ours_opt = make_optimizer()
    ours = lrs_over(ours_opt, ScheduleLR(ours_opt, cosine_annealing(T)), 2 * T + 1)
    assert_same_lrs(ours[: T + 1], theirs[: T + 1])
    assert all(lr == [0.0] for lr in ours[T:])
    assert theirs[2 * T][0] == pytest.approx(BASE_LR)  # torch's cosine is back at its peak


def two_group_optimizer(factory: Callable = torch.optim.SGD, **kwargs):
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    return factory([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.2, **kwargs)


def test_one_schedule_per_group_matches_lambda_lr() -> None:
    schedules = [linear_warmup(10), join([constant(1.0), reciprocal_decay(7.0)], [20])]
    ours_opt = two_group_optimizer()
    ours = lrs_over(ours_opt, ScheduleLR(ours_opt, schedules), 200)
    theirs_opt = two_group_optimizer()
    # LambdaLR calls its functions with the count of updates made; ScheduleLR with t = that + 1
    lambdas = [lambda k, f=f: f(k + 1) for f in schedules]
    theirs = lrs_over(theirs_opt, torch_lr.LambdaLR(theirs_opt, lambdas), 200)
    assert_same_lrs(ours, theirs)
    for t, (lr_a, lr_b) in enumerate(ours, start=1):
        assert lr_a == pytest.approx(0.2 * min(t, 10) / 10, rel=1e-12)
        assert lr_b == pytest.approx(0.05 if t <= 20 else 0.05 / (1 + (t - 21) / 7), rel=1e-12)


OPTIMIZERS = [
    ("SGD", lambda p, lr: rectified.SGD(p, lr=lr, momentum=0.9)),
    ("Adam", lambda p, lr: rectified.Adam(p, lr=lr)),
    ("RAdam", lambda p, lr: rectified.RAdam(p, lr=lr)),
    ("AdaBound", lambda p, lr: rectified.AdaBound(p, lr=lr)),
    ("torch.AdamW", lambda p, lr: torch.optim.AdamW(p, lr=lr)),
    ("Lookahead", lambda p, lr: rectified.Lookahead(rectified.Adam(p, lr=lr), k=3)),
    ("Ranger", lambda p, lr: rectified.Ranger(p, lr=lr)),
]


def quadratic_problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randn(6, generator=generator, dtype=torch.float64)
    weights = torch.rand(6, generator=generator, dtype=torch.float64) + 0.5
    return target, weights


def train(optimizer, scheduler, param, problem, steps: int) -> list[list[float]]:
    target, weights = problem
    seen = []
    for _ in range(steps):
        seen.append([float(group["lr"]) for group in optimizer.param_groups])
        optimizer.zero_grad()
        loss = (weights * (param - target) ** 2).sum()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return seen


SCHEDULE = join([linear_warmup(8), cosine_restarts(9, period_mult=2, lr_min=0.1)], [8])


@pytest.mark.parametrize("name,factory", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_works_with_optimizers_and_wrappers(name: str, factory) -> None:
    param = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    optimizer = factory([param], 0.1)
    scheduler = ScheduleLR(optimizer, SCHEDULE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "scheduler.step() before optimizer.step()"
        seen = train(optimizer, scheduler, param, quadratic_problem(), 60)
    for t, lrs in enumerate(seen, start=1):
        assert lrs == [pytest.approx(0.1 * SCHEDULE(t), rel=1e-12)]
    assert scheduler.get_last_lr() == [pytest.approx(0.1 * SCHEDULE(61), rel=1e-12)]
    if isinstance(optimizer, rectified.Lookahead):
        assert optimizer.optimizer.param_groups[0]["lr"] == scheduler.get_last_lr()[0]
    assert param.isfinite().all()


def _save_load(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "optimizer_first", [True, False], ids=["optimizer-first", "scheduler-first"]
)
@pytest.mark.parametrize("name,factory", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_state_dict_round_trip_mid_run(name: str, factory, optimizer_first: bool) -> None:
    problem = quadratic_problem(1)

    def build(start: torch.Tensor):
        param = start.clone().requires_grad_()
        optimizer = factory([param], 0.1)
        return param, optimizer

    start = torch.zeros(6, dtype=torch.float64)
    param, optimizer = build(start)
    scheduler = ScheduleLR(optimizer, SCHEDULE)
    train(optimizer, scheduler, param, problem, 23)
    saved = _save_load(
        {
            "param": param.detach().clone(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        }
    )
    straight = train(optimizer, scheduler, param, problem, 40)

    resumed_param, resumed_opt = build(saved["param"])
    if optimizer_first:
        resumed_opt.load_state_dict(saved["optimizer"])
        resumed_sched = ScheduleLR(resumed_opt, SCHEDULE)
        resumed_sched.load_state_dict(saved["scheduler"])
    else:
        resumed_sched = ScheduleLR(resumed_opt, SCHEDULE)
        resumed_opt.load_state_dict(saved["optimizer"])
        resumed_sched.load_state_dict(saved["scheduler"])
    assert resumed_sched.last_epoch == scheduler.last_epoch - 40
    continued = train(resumed_opt, resumed_sched, resumed_param, problem, 40)
    assert continued == straight
    assert torch.equal(resumed_param, param)
    assert resumed_sched.get_last_lr() == scheduler.get_last_lr()


@pytest.mark.parametrize("name,torch_factory,schedule,steps", PARITY, ids=IDS)
def test_state_dict_round_trip_of_every_parity_schedule(
    name, torch_factory, schedule: Schedule, steps: int
) -> None:
    opt = make_optimizer()
    scheduler = ScheduleLR(opt, schedule)
    lrs_over(opt, scheduler, 97)
    state = _save_load({"opt": opt.state_dict(), "sched": scheduler.state_dict()})
    straight = lrs_over(opt, scheduler, 150)
    opt2 = make_optimizer()
    sched2 = ScheduleLR(opt2, schedule)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert lrs_over(opt2, sched2, 150) == straight


def test_resume_with_last_epoch_like_torch() -> None:
    # torch's convention: last_epoch=k rebuilds a scheduler that has made k + 1 steps
    schedule = exponential_decay(0.9)
    opt = make_optimizer()
    opt.param_groups[0]["initial_lr"] = BASE_LR
    ours = ScheduleLR(opt, schedule, last_epoch=4)
    theirs_opt = make_optimizer()
    theirs_opt.param_groups[0]["initial_lr"] = BASE_LR
    theirs = torch_lr.LambdaLR(theirs_opt, lambda k: schedule(k + 1), last_epoch=4)
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
    assert ours.get_last_lr()[0] == pytest.approx(BASE_LR * 0.9**5, rel=1e-12)


def test_tensor_learning_rates_are_updated_in_place() -> None:
    param = torch.zeros(2, requires_grad=True)
    lr = torch.tensor(0.1)
    opt = torch.optim.Adam([param], lr=lr)
    scheduler = ScheduleLR(opt, linear_warmup(4))
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == pytest.approx(0.025)
    opt.step()
    scheduler.step()
    assert float(lr) == pytest.approx(0.05)


def test_repr() -> None:
    scheduler = ScheduleLR(make_optimizer(), linear_warmup(3))
    assert repr(scheduler) == "ScheduleLR([linear_warmup(warmup_steps=3)], last_epoch=0)"


def test_bad_arguments_raise() -> None:
    opt = two_group_optimizer()
    with pytest.raises(ValueError, match=r"Invalid schedule value: 1 schedules for 2 param groups"):
        ScheduleLR(opt, [linear_warmup(2)])
    with pytest.raises(ValueError, match=r"Invalid schedule\[1\] value: 'x' \(not callable\)"):
        ScheduleLR(opt, [linear_warmup(2), "x"])
    with pytest.raises(ValueError, match=r"Invalid schedule value: 0.5"):
        ScheduleLR(opt, 0.5)
    with pytest.raises(ValueError, match=r"Invalid last_epoch value: -2"):
        ScheduleLR(opt, linear_warmup(2), last_epoch=-2)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        ScheduleLR(object(), linear_warmup(2))
    assert math.isfinite(opt.param_groups[0]["lr"])
