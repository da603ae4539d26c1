"""Cases taken from torch's own optimizer database, and the means to run both libraries on them.

``torch.testing._internal.common_optimizers.optim_db`` (installed with torch) lists, for each
torch.optim class, the constructor configurations torch tests it with (``optim_inputs_func``),
the bad inputs and the error each must raise (``optim_error_inputs_func``), and which
implementations it has (``supported_impls``, ``supports_fused_on``, ``supports_sparse``). The
tests of this package hold rectified's drop-ins to those same cases, against torch's classes as
the reference, so a case torch adds in a later release is checked here without a code change.

The rule for every comparison: rectified's class does what torch's class does with the same
arguments: the same trajectory (float64, CPU), or, where torch raises, an error of the same type.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch.testing._internal.common_optimizers import OptimizerInfo, optim_db

import rectified

NAMES = ("SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam")
INFOS: dict[str, OptimizerInfo] = {
    info.optim_cls.__name__: info for info in optim_db if info.optim_cls.__name__ in NAMES
}
DTYPE = torch.float64
STEPS = 5
FROZEN_STEP = 2  # parameter 1 gets no gradient at this step


def torch_class(name: str) -> type[torch.optim.Optimizer]:
    return getattr(torch.optim, name)


def ours_class(name: str) -> type[torch.optim.Optimizer]:
    return getattr(rectified, name)


def configurations(name: str) -> list[dict[str, Any]]:
    """torch's CPU configurations of optimizer ``name`` (fresh copies: some hold tensors)."""
    return [dict(i.kwargs) for i in INFOS[name].optim_inputs_func(device="cpu", dtype=DTYPE)]


def configuration_ids(name: str) -> list[str]:
    return [i.desc for i in INFOS[name].optim_inputs_func(device="cpu", dtype=DTYPE)]


def all_configurations() -> list[tuple[str, int]]:
    """(optimizer, index into its configurations) for every optimizer; ids name both."""
    return [(name, index) for name in NAMES for index in range(len(configurations(name)))]


def case_id(case: tuple[str, int]) -> str:
    name, index = case
    return f"{name}-{configuration_ids(name)[index]}".replace(" ", "_")


# How each engine is asked for: (rectified's flags, torch's flags). torch's for-loop
# implementation is the reference of the fused engine: torch has fused CPU kernels for some
# optimizers only, and torch 2.13's are wrong on parameters that are not dense (a strided view
# such as ``w[:, ::2]``: one Adam step with lr=0.1 lands 0.2 away from the for-loop's).
def engine_flags(name: str, engine: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if engine == "forloop":
        return {"foreach": False}, {"foreach": False}
    if engine == "foreach":
        return {"foreach": True}, {"foreach": True}
    if engine == "fused":
        return {"fused": True}, {"foreach": False}
    if engine == "differentiable":  # the same math, with a graph; torch 2.13's own
        # differentiable Adam/AdamW round their bias corrections through a float32 step (3e-8
        # off its for-loop in float64), so the for-loop is the reference here too
        return {"differentiable": True, "foreach": False}, {"foreach": False}
    raise ValueError(engine)


ENGINES = ("forloop", "foreach", "fused", "differentiable")


def make_params(seed: int = 0, leaf: bool = True) -> list[torch.Tensor]:
    """A matrix, a vector, a non-contiguous view and a 0-dim tensor, in float64.

    ``leaf=False`` gives clones of leaves (what ``differentiable=True`` steps on)."""
    g = torch.Generator().manual_seed(seed)
    values = [
        torch.randn(4, 3, generator=g, dtype=DTYPE),
        torch.randn(5, generator=g, dtype=DTYPE),
        torch.randn(4, 6, generator=g, dtype=DTYPE)[:, ::2],
        torch.randn((), generator=g, dtype=DTYPE),
    ]
    if leaf:
        return [v.requires_grad_() for v in values]
    return [v.clone().requires_grad_().clone() for v in values]


def clone_params(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Leaf copies with the same values and strides."""
    out = []
    for p in params:
        q = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype)
        q.copy_(p.detach())
        out.append(q.requires_grad_())
    return out


def gradients(params: list[torch.Tensor], steps: int = STEPS, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [
        [None if (i == 1 and s == FROZEN_STEP) else torch.randn(p.shape, generator=g, dtype=DTYPE)
         for i, p in enumerate(params)]
        for s in range(steps)
    ]


def step_through(optimizer: torch.optim.Optimizer, params, sequence) -> None:
    for grads in sequence:
        for p, grad in zip(params, grads):
            p.grad = None if grad is None else grad.clone()
        optimizer.step()


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value) or ("raised", the exception)."""
    try:
        return "ok", fn()
    except Exception as error:  # the comparison is the point
        return "raised", error


def assert_same_error(ours: Exception, theirs: Exception) -> None:
    assert isinstance(ours, type(theirs)), (
        f"torch raises {type(theirs).__name__}: {theirs}; rectified raises "
        f"{type(ours).__name__}: {ours}"
    )


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str,
                 rtol: float = 1e-10) -> None:
    """max |a - e| <= rtol * max(max |e|, 1); sparse tensors (torch's SGD keeps a sparse
    momentum buffer for sparse gradients) are compared by value."""
    actual, expected = (t.detach().to_dense() if t.is_sparse else t.detach()
                        for t in (actual, expected))
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.numel() == 0:
        return
    scale = max(expected.abs().max().item(), 1.0)
    error = (actual.to(expected.dtype) - expected).abs().max().item()
    assert error <= rtol * scale, f"{what}: max error {error:.3e} (scale {scale:.3e})"


def assert_same_state(ours: torch.optim.Optimizer, theirs: torch.optim.Optimizer,
                      our_params, their_params) -> None:
    """Every state entry torch keeps is kept by rectified with the same value (a ``None`` entry
    of torch's, e.g. SGD's momentum buffer without momentum, may be absent)."""
    for index, (p, q) in enumerate(zip(our_params, their_params)):
        mine = ours.state.get(p, {})
        for key, value in theirs.state.get(q, {}).items():
            if value is None:
                assert mine.get(key) is None, f"param {index}: {key!r} should be None"
                continue
            assert key in mine, f"param {index}: state {key!r} missing (torch has it)"
            expected = value if torch.is_tensor(value) else torch.tensor(float(value))
            got = mine[key] if torch.is_tensor(mine[key]) else torch.tensor(float(mine[key]))
            if expected.dim() == 0 and got.numel() == 1:  # a step counter, float or tensor
                got = got.reshape(())
            assert_close(got, expected, f"param {index} state {key!r}")


def fresh(value: Any) -> Any:
    return copy.deepcopy(value)


def assert_same_outcome(run_ours: Callable[[], Any], run_theirs: Callable[[], Any]) -> None:
    """Both raise the same error, or both return ``(optimizer, params)`` with equal parameters
    and state."""
    theirs, ours = outcome(run_theirs), outcome(run_ours)
    if theirs[0] == "raised":
        assert ours[0] == "raised", f"torch raises {theirs[1]!r}; rectified does not"
        assert_same_error(ours[1], theirs[1])
        return
    if ours[0] == "raised":
        raise ours[1]
    (our_opt, our_params), (their_opt, their_params) = ours[1], theirs[1]
    for i, (p, q) in enumerate(zip(our_params, their_params)):
        assert_close(p, q, f"parameter {i}")
    assert_same_state(our_opt, their_opt, our_params, their_params)
