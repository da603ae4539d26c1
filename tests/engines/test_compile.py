"""``torch.compile`` around a training step (model, loss, backward, ``opt.step()``) with every
optimizer, and a compiled model with an eager step: each equals the eager run, with the fused
kernel loaded and without it.

The step of a rectified optimizer is a graph break (it runs eagerly, see
``RuleOptimizer.step``); what these tests hold is that tracing the code around it never reaches
the kernel with fake tensors and that the compiled run computes what the eager one does.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from rectified.engines import engines_of
from rectified.engines.fused import kernel
from tests.registry import CASES, Case

STEPS = 7  # past RAdam's threshold (rho_t > 5 from step 6) and a Lookahead sync (k <= 6)


@pytest.fixture(params=["kernel", "no kernel"])
def kernel_state(request, monkeypatch) -> str:
    """The fused kernel loaded, or this process's loader answering that it is unavailable."""
    if request.param == "kernel":
        request.getfixturevalue("fused_kernel")
    else:
        monkeypatch.setattr(kernel, "_loaded", False)
    torch._dynamo.reset()
    return request.param


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def train(case: Case, compile_step: Callable | None = None,
          compile_model: Callable | None = None) -> tuple[list[torch.Tensor], list[str]]:
    """The parameters after ``STEPS`` training steps (and the engines the optimizer ran)."""
    model = make_model()
    optimizer = case.build(list(model.parameters()), **case.kwargs)
    forward = compile_model(model) if compile_model else model
    inputs, targets = torch.randn(16, 4), torch.randn(16, 2)

    def step() -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(forward(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    run = compile_step(step) if compile_step else step
    for _ in range(STEPS):
        run()
    return [p.detach().clone() for p in model.parameters()], engines_of(optimizer)


def assert_same(compiled: list[torch.Tensor], eager: list[torch.Tensor], name: str) -> None:
    moved = any(not torch.equal(p, q) for p, q in zip(eager, make_model().parameters()))
    assert moved, f"{name}: eager training did not move the parameters"
    for p, q in zip(compiled, eager):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_compiled_training_step_equals_eager_for_every_optimizer(kernel_state):
    for case in CASES:
        eager, engines = train(case)
        counter = CompileCounterWithBackend("eager")
        torch._dynamo.reset()
        compiled, _ = train(case, compile_step=lambda f, c=counter: torch.compile(f, backend=c))
        assert counter.frame_count >= 1 and counter.op_count > 0, case.name
        if kernel_state == "no kernel":
            assert "fused" not in engines, (case.name, engines)
        assert_same(compiled, eager, f"{case.name} ({kernel_state}, engines {engines})")


@pytest.mark.skipif(kernel._compiler() is None, reason="inductor compiles C++ on the CPU")
@pytest.mark.parametrize("name", ["RAdam", "Ranger"])
def test_inductor_compiled_step_and_compiled_model_equal_eager(name, kernel_state):
    case = next(case for case in CASES if case.name == name)
    eager, engines = train(case)
    if kernel_state == "kernel":
        assert engines == ["fused"]
    compiled_step, _ = train(case, compile_step=torch.compile)
    assert_same(compiled_step, eager, f"{name} compiled step ({kernel_state})")
    compiled_model, _ = train(case, compile_model=torch.compile)
    assert_same(compiled_model, eager, f"{name} compiled model ({kernel_state})")
