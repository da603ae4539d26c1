"""Optimizer recipes: the paper's Adam probes do what their names say."""

from __future__ import annotations

import math

import pytest
import torch

import rectified
from rectified.experiments import recipes


def one_parameter() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(4))


def step(prepared: recipes.Prepared, param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    param.grad = grad.clone()
    prepared.optimizer.step()
    if prepared.scheduler is not None:
        prepared.scheduler.step()


def test_adam_2k_updates_only_v_in_its_extra_iterations() -> None:
    param = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    prepared = recipes.build("adam-2k", [param], lr=0.1, warmup=3)
    assert prepared.second_moment_steps == 3
    grads = [torch.arange(1.0, 5.0, dtype=torch.float64) * (i + 1) for i in range(3)]

    def gradient(index: int) -> None:
        param.grad = grads[index].clone()

    prepared.update_second_moment_only(gradient)
    assert torch.equal(param.detach(), torch.ones(4, dtype=torch.float64))  # frozen
    state = prepared.optimizer.state[param]
    expected_v = sum(0.001 * 0.999 ** (2 - i) * grads[i] ** 2 for i in range(3))
    torch.testing.assert_close(state["exp_avg_sq"], expected_v)
    assert not state["exp_avg"].any()  # m frozen at its initial 0
    assert prepared.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (1 - 0.9**4) / 0.1)


def test_adam_2k_then_trains_as_adam_with_v_over_all_samples_and_m_over_real_ones() -> None:
    """Float64 reference: v̂ averages the 3 extra and t real squared gradients, m̂ the t real
    gradients only, each with its own bias correction."""
    b1, b2, lr, eps = 0.9, 0.999, 0.05, 1e-8
    extra = [torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64) * (i + 1) for i in range(3)]
    real = [torch.tensor([1.0, 0.25, -1.5], dtype=torch.float64) * (1 + 0.3 * i)
            for i in range(4)]
    param = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    prepared = recipes.build("adam-2k", [param], lr=lr, warmup=3)
    prepared.update_second_moment_only(lambda i: setattr(param, "grad", extra[i].clone()))
    expected = torch.zeros(3, dtype=torch.float64)
    v = torch.zeros(3, dtype=torch.float64)
    for g in extra:
        v = b2 * v + (1 - b2) * g**2
    m = torch.zeros(3, dtype=torch.float64)
    for t, g in enumerate(real, 1):
        step(prepared, param, g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2 ** (3 + t))
        expected = expected - lr * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(param.detach(), expected, rtol=1e-12, atol=1e-14)


def test_adam_2k_with_a_constant_gradient_steps_exactly_lr() -> None:
    param = one_parameter()
    prepared = recipes.build("adam-2k", [param], lr=0.01, warmup=3)
    prepared.update_second_moment_only(lambda i: setattr(param, "grad", torch.ones(4)))
    for _ in range(2):
        step(prepared, param, torch.ones(4))
    torch.testing.assert_close(param.detach(), torch.full((4,), 0.98), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "factor"), [
    ("adam-untuned", lambda t: min(1.0, t * 0.01 / 2)),
    ("adam-untuned-exp", lambda t: 1 - math.exp(-0.01 * t)),
])
def test_untuned_warmups_follow_the_optimizers_beta2(name: str, factor) -> None:
    param = one_parameter()
    prepared = recipes.build(name, [param], lr=0.5, warmup=0,
                             overrides={"betas": (0.9, 0.99)})
    seen = []
    for _ in range(250):
        seen.append(prepared.optimizer.param_groups[0]["lr"])
        step(prepared, param, torch.ones(4))
    assert seen == pytest.approx([0.5 * factor(t) for t in range(1, 251)])
    assert seen[199] == pytest.approx(0.5 if name == "adam-untuned" else 0.5 * (1 - math.exp(-2)))


def test_adam_warmup_rises_linearly() -> None:
    param = one_parameter()
    prepared = recipes.build("adam-warmup", [param], lr=0.4, warmup=4)
    seen = []
    for _ in range(6):
        seen.append(prepared.optimizer.param_groups[0]["lr"])
        step(prepared, param, torch.ones(4))
    assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_recipes_pick_the_optimizer_and_options() -> None:
    adam_eps = recipes.build("adam-eps", [one_parameter()], lr=1e-3, warmup=0).optimizer
    assert isinstance(adam_eps, rectified.Adam) and adam_eps.defaults["eps"] == 1e-4
    radamw = recipes.build("radamw", [one_parameter()], lr=1e-3, warmup=0).optimizer
    assert isinstance(radamw, rectified.RAdam)
    assert radamw.defaults["decoupled_weight_decay"] and radamw.defaults["weight_decay"] == 0.01
    ranger = recipes.build("ranger", [one_parameter()], lr=1e-3, warmup=0,
                           overrides={"k": 3}).optimizer
    assert isinstance(ranger, rectified.Ranger)
    assert recipes.build("sgd", [one_parameter()], 0.1, 0).optimizer.defaults["momentum"] == 0.9


@pytest.mark.parametrize(("name", "lr", "overrides", "message"), [
    ("adamax", 1e-3, {}, "unknown optimizer 'adamax'"),
    ("adam", -1.0, {}, "Invalid learning rate: -1.0"),
    ("adam", 1e-3, {"momentum": 0.9}, "optimizer adam: "),
    ("adam", 1e-3, {"eps": -1.0}, "Invalid epsilon value"),
])
def test_bad_recipe_arguments(name: str, lr: float, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recipes.build(name, [one_parameter()], lr=lr, warmup=0, overrides=overrides)
