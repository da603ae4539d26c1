"""Ranger: RAdam inside Lookahead, as one optimizer.

Wright, "Ranger - a synergistic optimizer" (2019), combining Liu et al. (arXiv 1908.03265) and
Zhang et al. (arXiv 1907.08610). The defaults are Ranger's: k = 6, α = 0.5, β = (0.95, 0.999),
ε = 1e-5, and weight decay applied decoupled (θ <- θ (1 - γλ)) as Ranger does.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from rectified.optim.radam import RAdam
from rectified.wrappers.lookahead import Lookahead


class Ranger(Lookahead):
    """RAdam inside Lookahead (see :class:`rectified.RAdam` and :class:`rectified.Lookahead`),
    with Ranger's defaults.

    Args:
        params: iterable of tensors, of ``(name, tensor)`` pairs, or of param-group dicts.
        lr (float or Tensor): learning rate γ (default 1e-3).
        betas (tuple[float, float]): β1, β2 (default (0.95, 0.999)).
        eps (float): term added to the denominator (default 1e-5).
        weight_decay (float): weight decay λ (default 0).
        decoupled_weight_decay (bool): decay θ <- θ (1 - γλ) (default True, as Ranger).
        k (int): inner steps between slow-weight updates (default 6).
        alpha (float): slow-weight step size (default 0.5).
        **options: any other argument of :class:`rectified.RAdam` (``threshold``,
            ``degenerated_to_sgd``, ``foreach``, ``fused``, ``maximize``, ``skip_nonfinite``,
            ``state_dtype``, ...); the fused engine also runs the slow-weight update as one
            pass.
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
        *,
        k: int = 6,
        alpha: float = 0.5,
        **options: Any,
    ) -> None:
        inner = RAdam(params, lr, betas, eps, weight_decay, decoupled_weight_decay, **options)
        super().__init__(inner, k=k, alpha=alpha)
