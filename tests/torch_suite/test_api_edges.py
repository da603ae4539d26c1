"""Edges of the torch.optim API that torch's database does not exercise: the order of the
checkpoint hooks, ``capturable`` beside ``fused`` on the CPU, Adagrad's state at construction
and ``share_memory``, and SGD's momentum switched on mid-run. Each against torch's class."""

from __future__ import annotations

import pytest
import torch

from tests.torch_suite.cases import NAMES, ours_class, torch_class

ENGINES = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _params(sizes=(3, 2)) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, generator=generator, dtype=torch.float64).requires_grad_()
            for n in sizes]


def _steps(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], steps: int,
           seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        optimizer.step()


def _swap_entries(optimizer, state_dict):
    """A load pre-hook that adapts a checkpoint of a model whose two parameters were listed in
    the other order (as one written for ``param_names`` would)."""
    state = state_dict["state"]
    state_dict["state"] = {0: state[1], 1: state[0]}
    return state_dict


@pytest.mark.parametrize("name", NAMES)
def test_load_pre_hooks_adapt_the_checkpoint_before_it_is_checked(name):
    """A checkpoint whose state fits the parameters only after a load pre-hook adapts it loads
    (torch runs pre-hooks first); the post-hooks see the state as loaded, NAdam's
    ``mu_product`` included; both as torch's class."""
    seen = {}
    options = {"lr": 0.01, **({"momentum": 0.9} if name == "SGD" else {})}  # SGD: some state
    for cls in (torch_class(name), ours_class(name)):
        saved_params = _params((3, 2))
        saver = cls(saved_params, **options)
        _steps(saver, saved_params, 2)
        params = _params((2, 3))  # the same parameters, listed the other way round
        optimizer = cls(params, **options)
        optimizer.register_load_state_dict_pre_hook(_swap_entries)
        optimizer.register_load_state_dict_post_hook(
            lambda opt, cls=cls: seen.__setitem__(cls, sorted(opt.state[opt.param_groups[0][
                "params"][0]])))
        optimizer.load_state_dict(saver.state_dict())
        for p, saved in zip(params, reversed(saved_params)):
            for key, value in saver.state[saved].items():
                assert torch.equal(torch.as_tensor(optimizer.state[p][key]),
                                   torch.as_tensor(value)), (cls, key)
    # SGD's state also holds a step counter (its rule reads the count): nothing else differs
    assert set(seen[ours_class(name)]) - set(seen[torch_class(name)]) <= {"step"}
    assert set(seen[torch_class(name)]) <= set(seen[ours_class(name)])


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_capturable_with_fused_steps_cpu_parameters_as_torch(name, fused_kernel):
    """torch's fused kernels step CPU parameters with ``capturable=True`` (its for-loop and
    foreach refuse them): so do ours, with torch's result."""
    results = []
    for cls in (torch_class(name), ours_class(name)):
        params = _params()
        _steps(cls(params, lr=0.1, capturable=True, fused=True), params, 3)
        results.append(params)
    for ours, theirs in zip(results[1], results[0]):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)


def test_adagrad_makes_its_state_at_construction_and_shares_it():
    """As torch.optim.Adagrad: ``sum`` (the initial accumulator value) and ``step`` exist
    before the first step, so a checkpoint saved then loads into torch's class and steps there;
    ``share_memory()`` moves each ``sum`` into shared memory (groups added later too)."""
    params = _params()
    theirs = torch.optim.Adagrad(params, lr=0.1, initial_accumulator_value=0.5)
    ours = ours_class("Adagrad")(params, lr=0.1, initial_accumulator_value=0.5)
    expected, actual = theirs.state_dict()["state"], ours.state_dict()["state"]
    assert actual.keys() == expected.keys()
    for index in expected:
        assert sorted(actual[index]) == sorted(expected[index])
        for key in expected[index]:
            assert torch.equal(actual[index][key], expected[index][key]), key
    loaded = torch.optim.Adagrad(params, lr=0.1)
    loaded.load_state_dict(ours.state_dict())
    _steps(loaded, params, 1)  # torch's step reads the state it expects to find
    extra = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    ours.add_param_group({"params": [extra]})
    ours.share_memory()
    assert all(ours.state[p]["sum"].is_shared() for p in [*params, extra])


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_switched_on_mid_run_starts_its_buffer_as_torch(engine, nesterov):
    """The first step that uses a momentum buffer copies the gradient into it (no dampening),
    also when momentum is switched on after some steps; switched off and on again, the buffer
    goes on from where it was. torch.optim.SGD's for-loop is the reference."""
    runs = []
    for cls, flags in ((torch.optim.SGD, {"foreach": False}), (ours_class("SGD"),
                                                                ENGINES[engine])):
        params = _params((3, 50_000))
        dampening = 0.0 if nesterov else 0.5
        optimizer = cls(params, lr=0.1, momentum=0.0, dampening=dampening, nesterov=False,
                        **flags)
        _steps(optimizer, params, 2, seed=1)
        for group in optimizer.param_groups:
            group.update(momentum=0.9, nesterov=nesterov)
        _steps(optimizer, params, 2, seed=2)
        for group in optimizer.param_groups:
            group.update(momentum=0.0, nesterov=False)
        _steps(optimizer, params, 1, seed=3)
        for group in optimizer.param_groups:
            group.update(momentum=0.9, nesterov=nesterov)
        _steps(optimizer, params, 2, seed=4)
        runs.append((params, [optimizer.state[p]["momentum_buffer"] for p in params]))
    (theirs, their_buffers), (ours, our_buffers) = runs
    for actual, expected in ((ours, theirs), (our_buffers, their_buffers)):
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-15)
