"""Schedules as functions: closed forms at step 0, at boundaries and far past the end; repr;
argument validation."""

from __future__ import annotations

import math

import pytest

from rectified.schedules import (
    Schedule,
    constant,
    cosine_annealing,
    cosine_restarts,
    exponential_decay,
    exponential_warmup,
    join,
    linear_warmup,
    piecewise_constant,
    reciprocal_decay,
    sequence,
    step_decay,
    untuned_warmup,
)

STEPS = [*range(0, 40), 99, 100, 101, 1_000, 10**6]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def test_constant() -> None:
    assert all(constant(0.3)(t) == 0.3 for t in STEPS)
    assert constant()(5) == 1.0


def test_piecewise_constant_switches_after_each_boundary() -> None:
    schedule = piecewise_constant([3, 7], [1.0, 0.5, 0.25])
    expected = {0: 1.0, 1: 1.0, 3: 1.0, 4: 0.5, 7: 0.5, 8: 0.25, 10**6: 0.25}
    assert {t: schedule(t) for t in expected} == expected


@pytest.mark.parametrize("step_size,gamma,lr0", [(1, 0.9, 1.0), (5, 0.1, 0.3), (30, 0.5, 2.0)])
def test_step_decay(step_size: int, gamma: float, lr0: float) -> None:
    schedule = step_decay(step_size, gamma, lr0)
    for t in STEPS:
        # the first step_size updates use lr0, the next step_size use lr0 γ, ...
        decays = 0 if t <= step_size else (t - 1) // step_size
        assert close(schedule(t), lr0 * gamma**decays), t


@pytest.mark.parametrize("decay,decay_steps,lr0", [(0.96, 1, 1.0), (0.5, 10, 0.1)])
def test_exponential_decay(decay: float, decay_steps: int, lr0: float) -> None:
    schedule = exponential_decay(decay, decay_steps, lr0)
    assert schedule(0) == schedule(1) == lr0
    assert close(schedule(decay_steps + 1), lr0 * decay)
    for t in STEPS[1:]:
        assert close(schedule(t), lr0 * math.exp((t - 1) / decay_steps * math.log(decay))), t


def test_reciprocal_decay() -> None:
    schedule = reciprocal_decay(c=4.0, lr0=0.2)
    assert schedule(0) == schedule(1) == 0.2
    assert close(schedule(5), 0.1)  # 4 updates made: halved
    for t in STEPS[1:]:
        assert close(schedule(t), 0.2 * 4.0 / (4.0 + t - 1)), t


def test_cosine_annealing_ends_at_lr_min_and_stays() -> None:
    schedule = cosine_annealing(decay_steps=8, lr_min=0.1, lr0=1.1)
    assert schedule(0) == schedule(1) == 1.1
    assert close(schedule(5), 0.6)  # half way: the mean of lr0 and lr_min
    assert close(schedule(3), 0.1 + 1.0 * math.cos(math.pi / 8) ** 2)  # (1 + cos 2x)/2 = cos²x
    assert schedule(9) == schedule(10) == schedule(10**6) == 0.1


def test_cosine_restarts_constant_period() -> None:
    schedule = cosine_restarts(period=4, lr_min=0.0, lr0=1.0)
    within_cycle = [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2]
    assert schedule(0) == 1.0
    for cycle in range(3):
        for k, value in enumerate(within_cycle):
            assert close(schedule(1 + 4 * cycle + k), value), (cycle, k)
    assert close(schedule(4 * 10**5 + 3), 0.5)


def test_cosine_restarts_growing_periods() -> None:
    schedule = cosine_restarts(period=2, period_mult=3, lr_min=0.5, lr0=1.5)
    # cycles of 2, 6, 18 updates start at updates 1, 3, 9, 27
    for start, length in [(1, 2), (3, 6), (9, 18), (27, 54)]:
        assert schedule(start) == 1.5
        for k in range(length):
            expected = 0.5 + (1 + math.cos(math.pi * k / length)) / 2
            assert close(schedule(start + k), expected), (start, k)


def test_linear_warmup() -> None:
    schedule = linear_warmup(4)
    assert [schedule(t) for t in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert schedule(10**6) == 1.0
    assert linear_warmup(1)(1) == 1.0


def test_exponential_warmup() -> None:
    schedule = exponential_warmup(tau=10.0)
    assert schedule(0) == 0.0
    assert close(schedule(10), 1 - math.exp(-1))
    assert close(schedule(3), 1 - math.exp(-0.3))
    assert schedule(10**6) == 1.0


@pytest.mark.parametrize("beta2", [0.999, 0.99, 0.98])
def test_untuned_warmup_is_linear_over_2_over_one_minus_beta2(beta2: float) -> None:
    schedule = untuned_warmup(beta2)
    length = 2 / (1 - beta2)
    assert schedule(0) == 0.0
    assert close(schedule(1), (1 - beta2) / 2)
    for t in [1, 7, round(length) // 2, round(length) - 1]:
        assert close(schedule(t), t / length)
    assert schedule(round(length) + 1) == 1.0 and schedule(10**6) == 1.0


def test_untuned_warmup_default_length() -> None:
    assert untuned_warmup().warmup_steps == pytest.approx(2000)


def test_join_warmup_then_cosine() -> None:
    schedule = join([linear_warmup(10), cosine_annealing(20, lr_min=0.0)], [10])
    assert sequence is join
    for t in range(0, 11):
        assert schedule(t) == t / 10
    assert schedule(11) == 1.0  # the cosine's own first update
    for t in range(11, 40):
        assert close(schedule(t), (1 + math.cos(math.pi * min(t - 11, 20) / 20)) / 2), t
    assert schedule(10**6) == 0.0


def test_join_three_pieces_restart_their_clocks() -> None:
    pieces: list[Schedule] = [linear_warmup(5), constant(0.5), exponential_decay(0.5)]
    schedule = join(pieces, [5, 8])
    assert [schedule(t) for t in range(6)] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [schedule(t) for t in (6, 7, 8)] == [0.5, 0.5, 0.5]
    assert [schedule(t) for t in (9, 10, 11)] == [1.0, 0.5, 0.25]
    assert join([constant(0.7)], [])(3) == 0.7


def test_join_accepts_plain_functions() -> None:
    schedule = join([lambda t: 2.0 * t, lambda t: -t], [3])
    assert [schedule(t) for t in range(6)] == [0.0, 2.0, 4.0, 6.0, -1.0, -2.0]


def test_repr_names_the_arguments() -> None:
    schedule = join([linear_warmup(100), cosine_annealing(900, lr_min=0.01)], [100])
    assert repr(schedule) == (
        "join(schedules=[linear_warmup(warmup_steps=100), "
        "cosine_annealing(decay_steps=900, lr_min=0.01, lr0=1.0)], boundaries=[100])"
    )
    assert repr(constant(0.5)) == "constant(value=0.5)"
    assert repr(step_decay(3)) == "step_decay(step_size=3, gamma=0.1, lr0=1.0)"


@pytest.mark.parametrize(
    "schedule",
    [
        constant(0.5),
        piecewise_constant([2], [1.0, 0.1]),
        step_decay(3, 0.5),
        exponential_decay(0.9, 2, 0.3),
        reciprocal_decay(2.0),
        cosine_annealing(10, 0.1),
        cosine_restarts(3, 2, 0.1),
        linear_warmup(7),
        exponential_warmup(3.0),
        untuned_warmup(0.99),
        join([linear_warmup(2), step_decay(2)], [2]),
    ],
    ids=repr,
)
def test_repr_rebuilds_an_equal_schedule(schedule: Schedule) -> None:
    import rectified.schedules as namespace

    rebuilt = eval(repr(schedule), vars(namespace))
    assert rebuilt == schedule
    assert [rebuilt(t) for t in range(30)] == [schedule(t) for t in range(30)]


BAD_ARGUMENTS = [
    (lambda: constant(-1.0), "Invalid value value: -1.0"),
    (lambda: piecewise_constant([0, 3], [1, 1, 1]), "Invalid boundaries[0] value: 0"),
    (lambda: piecewise_constant([3, 3], [1, 1, 1]), "Invalid boundaries value: [3, 3]"),
    (lambda: piecewise_constant([3], [1.0]), "Invalid values value: [1.0]"),
    (lambda: piecewise_constant([3], [1.0, -2.0]), "Invalid values[1] value: -2.0"),
    (lambda: piecewise_constant(3, [1.0]), "Invalid boundaries value: 3"),
    (lambda: step_decay(0), "Invalid step_size value: 0"),
    (lambda: step_decay(2.5), "Invalid step_size value: 2.5"),
    (lambda: step_decay(True), "Invalid step_size value: True"),
    (lambda: step_decay(2, gamma=1.5), "Invalid gamma value: 1.5"),
    (lambda: step_decay(2, lr0=0.0), "Invalid lr0 value: 0.0"),
    (lambda: exponential_decay(0.0), "Invalid decay value: 0.0"),
    (lambda: exponential_decay(0.9, decay_steps=-2), "Invalid decay_steps value: -2"),
    (lambda: exponential_decay(math.nan), "Invalid decay value: nan"),
    (lambda: reciprocal_decay(0.0), "Invalid c value: 0.0"),
    (lambda: reciprocal_decay(1.0, lr0=-1.0), "Invalid lr0 value: -1.0"),
    (lambda: cosine_annealing(0), "Invalid decay_steps value: 0"),
    (lambda: cosine_annealing(10, lr_min=-0.1), "Invalid lr_min value: -0.1"),
    (lambda: cosine_annealing(10, lr0=math.inf), "Invalid lr0 value: inf"),
    (lambda: cosine_restarts(0), "Invalid period value: 0"),
    (lambda: cosine_restarts(5, period_mult=0), "Invalid period_mult value: 0"),
    (lambda: cosine_restarts(5, period_mult=1.5), "Invalid period_mult value: 1.5"),
    (lambda: linear_warmup(-3), "Invalid warmup_steps value: -3"),
    (lambda: linear_warmup(0), "Invalid warmup_steps value: 0"),
    (lambda: exponential_warmup(0.0), "Invalid tau value: 0.0"),
    (lambda: exponential_warmup("3"), "Invalid tau value: '3'"),
    (lambda: untuned_warmup(1.0), "Invalid beta2 value: 1.0"),
    (lambda: untuned_warmup(-0.1), "Invalid beta2 value: -0.1"),
    (lambda: join([], []), "Invalid schedules value: []"),
    (lambda: join([linear_warmup(2), 3], [2]), "Invalid schedules[1] value: 3"),
    (lambda: join([linear_warmup(2), constant()], []), "Invalid boundaries value: []"),
    (lambda: join([linear_warmup(2), constant()], [2, 4]), "Invalid boundaries value: [2, 4]"),
    (lambda: join([linear_warmup(2), constant()], [-2]), "Invalid boundaries[0] value: -2"),
]


@pytest.mark.parametrize("build,message", BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_raise_naming_the_value(build, message: str) -> None:
    with pytest.raises(ValueError) as error:
        build()
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("step", [-1, 2.0, "3", None, True])
def test_bad_steps_raise(step) -> None:
    with pytest.raises(ValueError, match=r"Invalid step value"):
        linear_warmup(3)(step)


def test_numpy_integer_steps_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    assert linear_warmup(4)(np.int64(2)) == 0.5
