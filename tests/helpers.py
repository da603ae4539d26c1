"""Building blocks of the shared optimizer tests: parameters, gradient sequences, runs."""

from __future__ import annotations

import io
from typing import Any

import torch

from tests.registry import Case

SHAPES = ((4, 3), (5,), (0,), (2, 2, 2))


def make_params(dtype: torch.dtype = torch.float64, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype.is_complex else dtype
    params = []
    for shape in SHAPES:
        value = torch.randn(shape, generator=generator, dtype=torch.float64)
        if dtype.is_complex:
            value = torch.complex(value, torch.randn(shape, generator=generator,
                                                     dtype=torch.float64))
        params.append(value.to(dtype if dtype.is_complex else real).requires_grad_())
    return params


def gradient_sequence(
    params: list[torch.Tensor], steps: int, seed: int = 1, frozen: tuple[int, ...] = (3, 4)
) -> list[list[torch.Tensor | None]]:
    """Random gradients; parameter 1 has no gradient at the steps in ``frozen``."""
    generator = torch.Generator().manual_seed(seed)
    sequence = []
    for step in range(steps):
        grads: list[torch.Tensor | None] = []
        for index, p in enumerate(params):
            g = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            if p.is_complex():
                g = torch.complex(g, torch.randn(p.shape, generator=generator,
                                                 dtype=torch.float64))
            grads.append(None if index == 1 and step in frozen else g.to(p.dtype))
        sequence.append(grads)
    return sequence


def build(case: Case, params: list[torch.Tensor], **overrides: Any) -> torch.optim.Optimizer:
    """The case's optimizer over two param groups (the second with half the lr)."""
    kwargs = {**case.kwargs, **overrides}
    lr = kwargs.get("lr", 1e-2)
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": lr * 0.5}]
    return case.build(groups, **kwargs)


def engine_kwargs(engine: str) -> dict[str, Any]:
    return {"foreach": engine == "foreach"}


def apply_(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], sequence) -> None:
    for grads in sequence:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        optimizer.step()


def run(case: Case, steps: int, dtype=torch.float64, **overrides: Any) -> list[torch.Tensor]:
    params = make_params(dtype)
    optimizer = build(case, params, **overrides)
    apply_(optimizer, params, gradient_sequence(params, steps))
    return [p.detach().clone() for p in params]


def roundtrip(obj: Any) -> Any:
    """torch.save then torch.load(weights_only=True), as a checkpoint on disk would be."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_close_relative(actual, expected, rtol: float) -> None:
    """max |a - e| <= rtol * max |e| for every tensor pair (relative to the tensor's scale)."""
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        if e.numel() == 0:
            continue
        scale = e.abs().max().item()
        error = (a - e).abs().max().item()
        assert error <= rtol * max(scale, 1e-300), f"relative error {error / scale:.3e}"
