"""Optimizer recipes: the paper's Adam probes do what their names say."""

from __future__ import annotations

import pytest
import torch

import rectified
from rectified.experiments import recipes


def one_parameter() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.ones(4))


def step(prepared: recipes.Prepared, param: torch.nn.Parameter, index: int,
         grad: torch.Tensor) -> None:
    prepared.before_step(index)
    param.grad = grad.clone()
    prepared.optimizer.step()
    if prepared.scheduler is not None:
        prepared.scheduler.step()


def test_adam_2k_updates_only_the_second_moment_while_frozen() -> None:
    param = one_parameter()
    prepared = recipes.build("adam-2k", [param], lr=0.1, warmup=3)
    grads = [torch.full((4,), float(i + 1)) for i in range(5)]
    for i in range(3):
        step(prepared, param, i, grads[i])
        assert torch.equal(param.detach(), torch.ones(4))  # parameters frozen
    state = prepared.optimizer.state[param]
    expected_v = sum(0.001 * 0.999 ** (2 - i) * grads[i] ** 2 for i in range(3))
    torch.testing.assert_close(state["exp_avg_sq"], expected_v)
    step(prepared, param, 3, grads[3])
    # the first real update: m is the average of (1 - β1^3) g_3 and g_4 with EMA weights
    m = 0.9 * (1 - 0.9**3) * grads[2] + 0.1 * grads[3]
    torch.testing.assert_close(state["exp_avg"], m)
    assert not torch.equal(param.detach(), torch.ones(4))
    assert prepared.optimizer.param_groups[0]["betas"][0] == 0.9


def test_adam_2k_with_a_constant_gradient_steps_exactly_lr() -> None:
    param = one_parameter()
    prepared = recipes.build("adam-2k", [param], lr=0.01, warmup=3)
    for i in range(5):
        step(prepared, param, i, torch.ones(4))
    torch.testing.assert_close(param.detach(), torch.full((4,), 0.98), rtol=0, atol=1e-6)


def test_adam_warmup_rises_linearly() -> None:
    param = one_parameter()
    prepared = recipes.build("adam-warmup", [param], lr=0.4, warmup=4)
    seen = []
    for i in range(6):
        seen.append(prepared.optimizer.param_groups[0]["lr"])
        step(prepared, param, i, torch.ones(4))
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
