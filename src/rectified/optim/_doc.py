"""Docstrings that carry the algorithm of the rule an optimizer runs (written once, in rules/)."""

from __future__ import annotations

import textwrap
from types import ModuleType


def with_algorithm(summary: str, rule_module: ModuleType, arguments: str) -> str:
    """``summary``, then the rule module's algorithm and reference, then ``arguments``."""
    algorithm = textwrap.indent(textwrap.dedent(rule_module.__doc__ or "").strip(), "    ")
    return (
        f"{textwrap.dedent(summary).strip()}\n\n"
        f"Algorithm (``{rule_module.__name__}``)::\n\n{algorithm}\n\n"
        f"{textwrap.dedent(arguments).strip()}\n"
    )


FUSED_ARGS = """\
    fused (bool, optional): ``True`` runs the fused engine: on the CPU one C++ pass per step
        over all parameters (the kernel is compiled on first use, or ahead of time with
        ``python -m rectified.engines.build``; without a compiler it warns once and runs
        foreach); on CUDA, Adam steps (Adam, AdamW, AMSGrad, RAdam's rectified steps) go to
        torch's fused Adam kernels and the rest runs foreach. ``None`` (default) runs fused
        when the kernel is already built and ``foreach`` is not set. Non-contiguous tensors run
        foreach; ``True`` with tensors on other devices is an error, and so is ``fused=True``
        with ``foreach=True``.
    state_dtype (torch.dtype, optional): dtype of the moments (``None``, default: the
        parameter's). ``torch.float32`` keeps float32 state for bfloat16 or float16
        parameters. Where it differs from a parameter's dtype, every engine computes that
        parameter's step in float32 (float64 if either is float64) and rounds the parameter and
        its state once, each to its own dtype. Complex parameters get its complex counterpart
        (complex64 for bfloat16). Checkpoints keep it on load."""

COMMON_ARGS = """\
    foreach (bool, optional): engine choice as in torch.optim: ``True`` runs the foreach
        (multi-tensor) engine, ``False`` the per-tensor reference engine, ``None`` (default)
        picks foreach. Results agree up to float rounding.
    maximize (bool): maximize the objective instead of minimizing it (default False).
    skip_nonfinite (bool): check every gradient before a step; if any holds NaN or inf, skip
        the whole step for every param group and count it in each group's
        ``nonfinite_skips`` (default False: the step proceeds and NaN propagates, as in
        torch.optim)."""
