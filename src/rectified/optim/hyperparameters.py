"""Every hyperparameter of the optimizers, declared once: its check and its documentation.

An optimizer's ``__init__`` signature is the one place its hyperparameters, their order and
their defaults are written; :class:`~rectified.optim.base.RuleOptimizer` builds the
``defaults`` dict from it, checks each value here by name, and writes the docstring's Args from
the signature and the texts below. Checks raise ``ValueError`` naming the bad value (with
torch.optim's messages where it has one), or ``TypeError`` for a value of the wrong kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rectified.formats import check_storage
from rectified.rules.radam import check_threshold


def _number(value: Any, name: str) -> float:
    """``value`` as a float: a real number or a 1-element real tensor (as torch.optim takes
    lr and betas); anything else is a TypeError naming it."""
    if isinstance(value, Tensor) and not value.is_complex():
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Invalid {name}: {value!r} (expected a real number)")
    return float(value)


def check_lr(lr: Any) -> None:
    if not 0.0 <= _number(lr, "lr") < math.inf:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_betas(betas: Any) -> None:
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise ValueError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= _number(beta, f"betas[{index}]") < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def in_range(name: str, low: float, high: float = math.inf, *, high_open: bool = True,
             low_open: bool = False) -> Callable[[Any], None]:
    """A check of ``low <= value < high`` (``low_open``/``high_open`` choose strictness)."""
    def check(value: Any) -> None:
        x = _number(value, name)
        above = x > low if low_open else x >= low
        below = x < high if high_open else x <= high
        if not (above and below):
            raise ValueError(f"Invalid {name} value: {value}")
    return check


def flag(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"Invalid {name} value: {value!r} (expected True or False)")
    return check


def optional_flag(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in (None, True, False):
            raise ValueError(f"Invalid {name} value: {value!r} (expected None or a bool)")
    return check


STATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_state_dtype(dtype: Any) -> None:
    """``state_dtype``: None (the parameter's dtype) or one of :data:`STATE_DTYPES`."""
    if dtype is not None and dtype not in STATE_DTYPES:
        raise ValueError(
            f"Invalid state_dtype: {dtype!r} (expected None, torch.float16, torch.bfloat16, "
            "torch.float32 or torch.float64)"
        )


@dataclass(frozen=True)
class Hyperparameter:
    check: Callable[[Any], None]
    doc: str
    kind: str = "float"


HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "lr": Hyperparameter(check_lr, "learning rate γ", "float or Tensor"),
    "betas": Hyperparameter(check_betas, "β1, β2 of the moving moments m and v",
                            "tuple[float, float]"),
    "eps": Hyperparameter(in_range("epsilon", 0.0), "ε added to the denominator"),
    "weight_decay": Hyperparameter(
        in_range("weight_decay", 0.0),
        "weight decay λ: coupled L2 (g <- g + λθ), or θ <- θ (1 - γλ) where "
        "``decoupled_weight_decay``"),
    "decoupled_weight_decay": Hyperparameter(
        flag("decoupled_weight_decay"), "decay the weights directly (AdamW-style, Loshchilov "
        "& Hutter) instead of adding λθ to the gradient", "bool"),
    "amsgrad": Hyperparameter(flag("amsgrad"), "normalise by the running maximum of v "
                              "(AMSGrad, Reddi et al.)", "bool"),
    "amsbound": Hyperparameter(flag("amsbound"), "normalise by the running maximum of v "
                               "(AMSBound)", "bool"),
    "momentum": Hyperparameter(in_range("momentum", 0.0), "momentum factor μ"),
    "dampening": Hyperparameter(in_range("dampening", 0.0, 1.0, high_open=False),
                                "dampening τ of the momentum"),
    "nesterov": Hyperparameter(flag("nesterov"), "Nesterov momentum (needs momentum > 0 and "
                               "no dampening)", "bool"),
    "momentum_decay": Hyperparameter(
        in_range("momentum_decay", 0.0), "ψ of NAdam's momentum schedule μ_t = β1 (1 - ½ · "
        "0.96^(t ψ))"),
    "lr_decay": Hyperparameter(in_range("lr_decay", 0.0), "learning-rate decay η"),
    "initial_accumulator_value": Hyperparameter(
        in_range("initial_accumulator_value", 0.0), "starting value of the sum S"),
    "alpha": Hyperparameter(in_range("alpha", 0.0, 1.0, high_open=False),
                            "smoothing constant α of the squared-gradient average"),
    "centered": Hyperparameter(flag("centered"), "normalise by the estimated variance of the "
                               "gradient", "bool"),
    "rho": Hyperparameter(in_range("rho", 0.0, 1.0, high_open=False),
                          "decay ρ of both running averages"),
    "final_lr": Hyperparameter(
        in_range("final_lr", 0.0), "the SGD learning rate the bounds converge to, scaled by "
        "lr / base_lr (``base_lr``: the group's lr when added) so lr schedulers move it too"),
    "gamma": Hyperparameter(in_range("gamma", 0.0, 1.0), "convergence speed of the bounds"),
    "threshold": Hyperparameter(
        check_threshold, "rectify when ρ_t > threshold (5.0 as torch.optim and the authors' "
        "code; 4.0 is the paper's Algorithm 2); must be >= 4"),
    "degenerated_to_sgd": Hyperparameter(
        flag("degenerated_to_sgd"), "below the threshold take the bias-corrected momentum step; "
        "False leaves the parameter unchanged there", "bool"),
    "maximize": Hyperparameter(flag("maximize"), "maximize the objective", "bool"),
    "foreach": Hyperparameter(
        optional_flag("foreach"), "engine choice as in torch.optim: True runs the foreach "
        "(multi-tensor) engine, False the per-tensor reference engine", "bool, optional"),
    "fused": Hyperparameter(
        optional_flag("fused"), "True runs the fused engine: on the CPU one C++ pass per step "
        "over all parameters (compiled on first use, or ahead of time with ``python -m "
        "rectified.engines.build``; without a compiler it warns once and runs foreach); on "
        "CUDA, Adam steps go to torch's fused Adam kernels and the rest runs foreach. None runs "
        "it for the Adam family when ``foreach`` is not set (building the kernel as True "
        "does). Tensors "
        "the kernel cannot read as plain values run foreach", "bool, optional"),
    "capturable": Hyperparameter(
        flag("capturable"), "as in torch.optim, a CUDA-graph option: a step refuses parameters "
        "on devices whose steps cannot be captured (the CPU) before anything moves; on CUDA the "
        "step runs, but reads its step counters on the host, so it cannot be captured", "bool"),
    "differentiable": Hyperparameter(
        flag("differentiable"), "the step is differentiable with respect to the parameters, "
        "gradients and state it starts from (autograd on; runs on the reference engine "
        "whatever ``foreach`` says; ``fused=True`` is refused; hyperparameter tensors that "
        "require grad are refused: they get no derivative)", "bool"),
    "skip_nonfinite": Hyperparameter(
        flag("skip_nonfinite"), "check every gradient first; if any holds NaN or inf, skip the "
        "whole step for every group and count it in ``nonfinite_skips`` (False: NaN propagates, "
        "as in torch.optim)", "bool"),
    "state_dtype": Hyperparameter(
        check_state_dtype, "dtype of the moments (None: the parameter's); e.g. torch.float32 "
        "for bfloat16 parameters, whose step then computes in float32 and rounds the parameter "
        "and its state once, each to its own dtype", "torch.dtype, optional"),
    "state_format": Hyperparameter(
        lambda value: check_storage({"state_format": value}),
        "how the moments are stored between steps: None (as ``state_dtype`` says), "
        "\"float32\", \"bfloat16\" (stochastically rounded, 4 bytes of Adam state per "
        "parameter) or \"8bit\" (blockwise 8-bit codes, stochastically rounded, 2.03 bytes); "
        "the rule always computes in float32 (float64 for float64 parameters). See "
        "docs/optimizers.md, \"State formats\"", "str, optional"),
    "min_8bit_size": Hyperparameter(
        lambda value: check_storage({"min_8bit_size": value}),
        "under ``state_format=\"8bit\"``, tensors with fewer elements keep float32 state", "int"),
    "param_rounding": Hyperparameter(
        lambda value: check_storage({"param_rounding": value}),
        "how bfloat16 parameters are rounded when stored: \"nearest\" or \"stochastic\" "
        "(unbiased: updates under half a bfloat16 ulp still move them on average)", "str"),
    "rounding_seed": Hyperparameter(
        lambda value: check_storage({"rounding_seed": value}),
        "seed of the stochastic rounding's random bits, which depend only on (seed, step, "
        "parameter, element), so runs and resumed runs are reproducible", "int"),
}


def check_hyperparameters(group: Mapping[str, Any], names: Any) -> None:
    """Check every one of ``names`` that ``group`` holds."""
    for name in names:
        if name in group:
            HYPERPARAMETERS[name].check(group[name])
