"""radam_warmup is the r_t that rectified.RAdam applies at its t-th update."""

from __future__ import annotations

import math

import pytest
import torch

import rectified
from rectified.rules.moments import bias_corrections
from rectified.rules.radam import radam_coefficients
from rectified.schedules import ScheduleLR, radam_warmup

CONFIGS = [(0.999, 5.0), (0.99, 5.0), (0.99, 4.0), (0.95, 6.0)]


def paper_r_t(t: int, beta2: float, threshold: float) -> float:
    """Liu et al. (arXiv 1908.03265), Algorithm 2, written out independently."""
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho <= threshold:
        return 0.0
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


@pytest.mark.parametrize("beta2,threshold", CONFIGS)
def test_matches_the_closed_form(beta2: float, threshold: float) -> None:
    schedule = radam_warmup(beta2, threshold)
    assert schedule(0) == 0.0
    for t in [*range(1, 200), 1_000, 10**5]:
        assert schedule(t) == pytest.approx(paper_r_t(t, beta2, threshold), rel=1e-12, abs=0), t
    assert schedule(10**7) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("beta2,threshold", CONFIGS)
def test_matches_radam_coefficients(beta2: float, threshold: float) -> None:
    schedule = radam_warmup(beta2, threshold)
    for t in range(1, 300):
        coeffs = radam_coefficients(t, 1.0, 0.9, beta2, threshold, degenerated_to_sgd=False)
        bc = bias_corrections(t, 0.9, beta2)
        applied = coeffs.step_size * bc.first / bc.second_sqrt
        assert schedule(t) == pytest.approx(applied, rel=1e-12, abs=0), t


@pytest.mark.parametrize("beta2,threshold", [(0.99, 5.0), (0.95, 4.0)])
def test_equals_the_step_radam_takes(beta2: float, threshold: float) -> None:
    """RAdam with lr=1, β1=0, ε=0 on a loss with gradient 1: v_t = 1 - β2^t, so its t-th
    update moves the parameter by exactly r_t (and not at all below the threshold)."""
    param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = rectified.RAdam(
        [param], lr=1.0, betas=(0.0, beta2), eps=0.0, threshold=threshold, degenerated_to_sgd=False
    )
    schedule = radam_warmup(beta2, threshold)
    for t in range(1, 150):
        before = param.item()
        opt.zero_grad()
        param.sum().backward()
        opt.step()
        assert before - param.item() == pytest.approx(schedule(t), rel=1e-10, abs=1e-13), t


def test_adam_with_radam_warmup_takes_radam_steps() -> None:
    """Through ScheduleLR, Adam (ε = 0) scaled by r_t is RAdam (no step below the threshold)."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(5, generator=generator, dtype=torch.float64)
    grads = [torch.randn(5, generator=generator, dtype=torch.float64) for _ in range(120)]
    betas = (0.9, 0.99)

    def run(build) -> list[torch.Tensor]:
        param = start.clone().requires_grad_()
        opt, scheduler = build(param)
        trajectory = []
        for g in grads:
            param.grad = g.clone()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            trajectory.append(param.detach().clone())
        return trajectory

    def radam(param):
        opt = rectified.RAdam([param], lr=0.1, betas=betas, eps=0.0, degenerated_to_sgd=False)
        return opt, None

    def adam(param):
        opt = rectified.Adam([param], lr=0.1, betas=betas, eps=0.0)
        return opt, ScheduleLR(opt, radam_warmup(beta2=betas[1]))

    for t, (a, b) in enumerate(zip(run(adam), run(radam), strict=True), start=1):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=f"update {t}")


def test_starts_when_rho_t_crosses_the_threshold() -> None:
    schedule = radam_warmup(0.999, 5.0)
    first = next(t for t in range(1, 100) if schedule(t) > 0)
    assert rectified.rho_t(first - 1, 0.999) <= 5.0 < rectified.rho_t(first, 0.999)


def test_repr_and_bad_arguments() -> None:
    assert repr(radam_warmup()) == "radam_warmup(beta2=0.999, threshold=5.0)"
    with pytest.raises(ValueError, match=r"Invalid beta2 value: 1.0"):
        radam_warmup(1.0)
    with pytest.raises(ValueError, match=r"Invalid threshold value: 3.0"):
        radam_warmup(0.999, 3.0)
