"""The reproduce suite's three budgets: ``quick`` (a smoke test of the machinery), ``default``
(about eight minutes on two idle CPU cores) and ``full`` (about half an hour).

A :class:`Setup` is one task at one size, shared by the runs of a section; a :class:`Budget`
names the setups and grids of every section. The Transformer runs at β2 = 0.98, the usual value
for Transformers (Vaswani et al., 2017): RAdam's warmup period, Ma & Yarats' untuned warmup and
the paper's Adam-2k length all scale with 1 / (1 - β2), so at 0.98 a 400-step run spans them
(RAdam's mean r_t 0.86) where β2 = 0.999 would need some 5,000 steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rectified.experiments.spec import RunSpec


@dataclass(frozen=True)
class Setup:
    """A task at one size, learning rate and step budget."""

    task: str
    options: dict[str, Any]
    steps: int
    lr: float
    batch: int | None = None  # None: the task's default
    betas: tuple[float, float] | None = None  # None: the optimizer's default

    def spec(self, optimizer: str, seed: int, **changes: Any) -> RunSpec:
        """A run of ``optimizer`` on this setup; ``changes`` replace any RunSpec field."""
        options = {"betas": list(self.betas)} if self.betas and optimizer != "sgd" else {}
        spec = RunSpec(self.task, optimizer, lr=self.lr, seed=seed, steps=self.steps,
                       batch_size=self.batch, task_options=dict(self.options),
                       optimizer_options=options)
        return replace(spec, **changes)


@dataclass(frozen=True)
class Budget:
    name: str
    smoke_test: bool  # runs far below every claim's need: tests the machinery only
    seeds: tuple[int, ...]
    scaling_seeds: tuple[int, ...]  # the budget-scaling and Transformer learning-rate grids
    # Transformer LM (Figures 1-3, Adam-2k, untuned warmup, learning-rate robustness)
    transformer: Setup
    transformer_warmup: int
    monitor_steps: int
    second_moment_lengths: tuple[int, ...]
    transformer_lrs: tuple[float, ...]
    # budget scaling: each task at geometrically growing step budgets
    image: Setup
    image_budgets: tuple[int, ...]
    lstm: Setup
    lstm_budgets: tuple[int, ...]
    digits: Setup
    digits_budgets: tuple[int, ...]
    # learning-rate and warmup grids (Figures 6-7)
    sweep: Setup
    robustness_lrs: dict[str, tuple[float, ...]]
    warmup_lrs: tuple[float, ...]
    warmup_lengths: tuple[int, ...]


SEEDS = (0, 1, 2)
ADAPTIVE_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
SGD_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
TINY_LM = {"width": 32, "depth": 1, "heads": 2, "seq_len": 32, "eval_windows": 16,
           "train_bytes": 200_000}
TRANSFORMER = {"width": 64, "depth": 4, "heads": 4, "seq_len": 32}

BUDGETS: dict[str, Budget] = {
    "quick": Budget(
        "quick", smoke_test=True, seeds=SEEDS, scaling_seeds=SEEDS,
        transformer=Setup("charlm-transformer", TINY_LM, 20, 1e-2, 8, (0.9, 0.98)),
        transformer_warmup=4, monitor_steps=5, second_moment_lengths=(2, 6),
        transformer_lrs=(1e-3, 1e-2),
        image=Setup("digits-mlp", {"width": 16}, 0, 1e-3), image_budgets=(10, 20),
        lstm=Setup("charlm-lstm", {k: v for k, v in TINY_LM.items() if k != "heads"}, 0, 3e-3,
                   8),
        lstm_budgets=(10, 20),
        digits=Setup("digits-mlp", {"width": 16}, 0, 1e-3), digits_budgets=(10, 20),
        sweep=Setup("digits-mlp", {"width": 16}, 20, 1e-3),
        robustness_lrs={"sgd": (0.03, 0.3), "adam": (1e-3, 1e-2), "radam": (1e-3, 1e-2)},
        warmup_lrs=(1e-2,), warmup_lengths=(2, 8),
    ),
    "default": Budget(
        "default", smoke_test=False, seeds=SEEDS, scaling_seeds=SEEDS,
        transformer=Setup("charlm-transformer", TRANSFORMER, 400, 1e-2, 16, (0.9, 0.98)),
        transformer_warmup=40, monitor_steps=30, second_moment_lengths=(10, 30, 100),
        transformer_lrs=(1e-3, 3e-3, 1e-2, 3e-2),
        image=Setup("mnist-cnn", {"width": 8}, 0, 1e-3), image_budgets=(300, 600, 1200),
        lstm=Setup("charlm-lstm", {"width": 64, "seq_len": 64}, 0, 3e-3, 32),
        lstm_budgets=(300, 600, 1200),
        digits=Setup("digits-mlp", {"width": 128}, 0, 1e-3),
        digits_budgets=(750, 1500, 3000, 6000),
        sweep=Setup("digits-mlp", {"width": 128}, 6000, 1e-3),
        robustness_lrs={"sgd": SGD_LRS, "adam": ADAPTIVE_LRS, "radam": ADAPTIVE_LRS},
        warmup_lrs=(1e-3, 1e-2, 3e-2), warmup_lengths=(10, 50, 200),
    ),
    "full": Budget(
        "full", smoke_test=False, seeds=(0, 1, 2, 3, 4), scaling_seeds=SEEDS,
        transformer=Setup("charlm-transformer", TRANSFORMER, 800, 1e-2, 16, (0.9, 0.98)),
        transformer_warmup=40, monitor_steps=30, second_moment_lengths=(10, 30, 100),
        transformer_lrs=ADAPTIVE_LRS,
        image=Setup("mnist-cnn", {"width": 8}, 0, 1e-3), image_budgets=(750, 1500, 3000, 6000),
        lstm=Setup("charlm-lstm", {"width": 64, "seq_len": 64}, 0, 3e-3, 32),
        lstm_budgets=(750, 1500, 3000, 6000),
        digits=Setup("digits-mlp", {"width": 128}, 0, 1e-3),
        digits_budgets=(750, 1500, 3000, 6000, 12000),
        sweep=Setup("digits-mlp", {"width": 128}, 6000, 1e-3),
        robustness_lrs={"sgd": SGD_LRS, "adam": ADAPTIVE_LRS, "radam": ADAPTIVE_LRS},
        warmup_lrs=(1e-3, 1e-2, 3e-2), warmup_lengths=(10, 50, 200),
    ),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; choose from {', '.join(BUDGETS)}")
    return BUDGETS[name]
