"""README's Accelerate recipe, run for real: ``accelerator.prepare`` a rectified optimizer
and its scheduler, ``save_state`` mid-run, and a fresh process-like start that
``load_state``s and ends bit-exactly where the uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

accelerate = pytest.importorskip("accelerate")

import rectified  # noqa: E402
from rectified import schedules  # noqa: E402

STEPS, SAVE_AT = 8, 4


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(8, 5, generator=generator)
    return inputs, inputs.sum(1, keepdim=True).cos()


def prepared(name: str) -> tuple[Any, nn.Module, Any, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.GroupNorm(3, 12), nn.Tanh(), nn.Linear(12, 1))
    optimizer = rectified.create_optimizer(model, name, lr=1e-2, weight_decay=0.05)
    scheduler = schedules.ScheduleLR(optimizer, schedules.linear_warmup(3))
    accelerator = accelerate.Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return accelerator, model, optimizer, scheduler


def train(parts: tuple[Any, nn.Module, Any, Any], steps: range) -> None:
    accelerator, model, optimizer, scheduler = parts
    for step in steps:
        inputs, targets = batch(step)
        optimizer.zero_grad()
        accelerator.backward(nn.functional.mse_loss(model(inputs), targets))
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("name", ["radam", "ranger", "adabound"])
def test_accelerate_saves_and_resumes_bit_exactly(name: str, tmp_path: Path) -> None:
    straight = prepared(name)
    train(straight, range(SAVE_AT))
    straight[0].save_state(str(tmp_path / "state"))
    train(straight, range(SAVE_AT, STEPS))

    resumed = prepared(name)
    resumed[0].load_state(str(tmp_path / "state"))
    train(resumed, range(SAVE_AT, STEPS))
    for a, b in zip(straight[1].state_dict().values(), resumed[1].state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert straight[3].state_dict() == resumed[3].state_dict()
    wrapped = straight[2].optimizer
    assert type(wrapped).__name__ == {"radam": "RAdam", "ranger": "Ranger",
                                      "adabound": "AdaBound"}[name]
