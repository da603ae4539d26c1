"""``rectified variance [--out DIR] [--quick]``: the variance lab's figures and numbers.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Sections 3-4. :func:`write_lab` writes into ``out_dir``:

* ``variance_vs_rho.csv`` / ``.png``: Var[ψ] of Theorem 1, its first-order form and Monte Carlo
  of ψ = τ √(ρ / χ²_ρ), for ρ from just above 4 to 2000;
* ``variance_vs_step.csv`` / ``.png``: Monte Carlo of ψ_t = √(t / Σ g_i²) (simple average) and
  of Adam's EMA form, for i.i.d. N(0, 1) gradients, against the theory at ρ = t and ρ = ρ_t;
  the variance at t = 1, 2 (infinite in theory) shows as a blow-up;
* ``rectification.csv`` / ``rectification_vs_warmup.png``: ρ_t, r_t and linear warmup for
  several β2, and r_t² Var[ψ(ρ_t)] / Var[ψ(ρ_∞)] (1 to first order);
* ``monitor_<optimizer>.npz``, ``adaptive_lr.csv``, ``histograms.png``: a small MLP trained
  with Adam, Adam with linear warmup and RAdam under a :class:`VarianceMonitor`, and heat maps
  of log10 |gradient| and |update| over iterations;
* ``variance_lab.json``: the numbers below and the paths of every file written.

The analysis is :mod:`~rectified.variance.lab`; writing its files,
:mod:`~rectified.variance.lab_files`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rectified.folders import writable_folder
from rectified.variance.lab_files import write_lab

__all__ = ["add_arguments", "run", "write_lab"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("variance-lab"),
        help="output folder (default variance-lab)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps: seconds")


def run(args: argparse.Namespace) -> int:
    result = write_lab(writable_folder(args.out), quick=args.quick)
    numbers = result["numbers"]
    by_rho, by_step = numbers["variance_vs_rho"], numbers["variance_vs_step"]
    print(f"Var[psi] decreasing in rho: {by_rho['decreasing_in_rho']}")
    print(
        f"Var[psi] Monte Carlo vs Theorem 1: max |z| {by_rho['max_abs_z_monte_carlo_rho_ge_8']:.2f}"
        f" (rho >= 8, {by_rho['samples']} samples)"
    )
    print(
        f"Var[psi_t] simulated at t = 1, 2, 10: {by_step['sma_variance_t1']:.3g}, "
        f"{by_step['sma_variance_t2']:.3g}, {by_step['sma_variance_t10']:.3g}"
    )
    worst = numbers["rectification"]["max_abs_ratio_minus_1_rho_t_ge_20"]
    print(
        "r_t^2 Var[psi(rho_t)] / Var[psi(rho_inf)] - 1, worst for rho_t >= 20: "
        + ", ".join(f"beta2 {b}: {v:.3g}" for b, v in worst.items())
    )
    for note in result["notes"]:
        print(note)
    print(
        f"wrote {len(result['tables'])} tables and {len(result['figures'])} figures to {args.out}"
        f" in {result['seconds']:.1f} s"
    )
    return 0
