"""Every optimizer solves Rosenbrock's function and trains a small real model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.registry import CASES, case_id


def rosenbrock(xy: torch.Tensor) -> torch.Tensor:
    return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rosenbrock_reaches_the_minimum(case):
    """From (0, 0) (loss 1) into the curved valley and down to (1, 1)."""
    xy = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    kwargs = {**case.kwargs, **dict(case.converge)}
    kwargs["weight_decay"] = 0.0  # decay would move the minimum (AdamW decays by default)
    optimizer = case.build([xy], **kwargs)
    for _ in range(case.converge_steps):
        optimizer.zero_grad()
        rosenbrock(xy).backward()
        optimizer.step()
    assert rosenbrock(xy).item() < 1e-3
    assert torch.allclose(xy.detach(), torch.ones(2, dtype=torch.float64), atol=0.1)


DIGITS_LR = {"SGD": 0.05, "SGD-nesterov": 0.05, "Adagrad": 0.05, "Adadelta": 1.0,
             "Lookahead(SGD)": 0.05}


@pytest.fixture(scope="module")
def digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    data = sklearn.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:1300]], y[order[:1300]], x[order[1300:]], y[order[1300:]]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_trains_an_mlp_on_handwritten_digits(case, digits):
    """scikit-learn's digits, MLP 64-32-10, 200 mini-batch steps: held-out accuracy > 85%."""
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    lr = DIGITS_LR.get(case.name, 1e-2)
    kwargs = {**case.kwargs, "lr": lr}
    optimizer = case.build(model.parameters(), **kwargs)
    batches = torch.Generator().manual_seed(1)
    for _ in range(200):
        index = torch.randint(len(x_train), (64,), generator=batches)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x_train[index]), y_train[index]).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.85
