"""``rectified compare``: train one small real model with several optimizers and print a table.

The data is scikit-learn's handwritten digits (``load_digits``, 1,797 8x8 images, shipped with
scikit-learn), split 75/25 with a fixed seed; the model is a two-layer MLP trained with
mini-batches. Every optimizer starts from the same weights and sees the same batches, so the
numbers differ only by the optimizer.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

import rectified

OPTIMIZERS = {
    "sgd": lambda params, lr: rectified.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: rectified.Adam(params, lr=lr),
    "radam": lambda params, lr: rectified.RAdam(params, lr=lr),
    "adamw": lambda params, lr: rectified.AdamW(params, lr=lr),
    "adabound": lambda params, lr: rectified.AdaBound(params, lr=lr),
    "ranger": lambda params, lr: rectified.Ranger(params, lr=lr),
}


def load_digits_split(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test) of scikit-learn's digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(x))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


@dataclass
class Result:
    optimizer: str
    seed: int
    first_loss: float  # mean training loss over the first 20 steps
    final_loss: float  # mean training loss over the last epoch
    test_accuracy: float


def train_digits(name: str, lr: float, seed: int, epochs: int, batch_size: int = 32) -> Result:
    x_train, y_train, x_test, y_test = load_digits_split()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = OPTIMIZERS[name](model.parameters(), lr)
    batches = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=batches)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    steps_per_epoch = -(-len(x_train) // batch_size)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return Result(
        name,
        seed,
        statistics.fmean(losses[:20]),
        statistics.fmean(losses[-steps_per_epoch:]),
        accuracy,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizers", default="sgd,adam,radam",
                        help="comma-separated, from: " + ", ".join(OPTIMIZERS))
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate for all (default: 0.05 for sgd, 1e-3 otherwise)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer {unknown[0]!r}; choose from {', '.join(OPTIMIZERS)}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"Invalid learning rate: {args.lr}")
    if args.epochs < 1 or args.seeds < 1:
        raise ValueError("--epochs and --seeds must be at least 1")
    print(f"digits-mlp: scikit-learn digits, MLP 64-128-10, {args.epochs} epochs, "
          f"{args.seeds} seeds")
    print(f"{'optimizer':<10} {'lr':>7} {'loss@20':>14} {'final loss':>14} {'test acc':>14}"
          f" {'time':>6}")
    for name in names:
        lr = args.lr if args.lr is not None else (0.05 if name == "sgd" else 1e-3)
        start = time.perf_counter()
        results = [train_digits(name, lr, seed, args.epochs) for seed in range(args.seeds)]
        elapsed = time.perf_counter() - start

        def cell(values: list[float]) -> str:
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.fmean(values):.4f}±{spread:.4f}"

        print(
            f"{name:<10} {lr:>7g} {cell([r.first_loss for r in results]):>14} "
            f"{cell([r.final_loss for r in results]):>14} "
            f"{cell([r.test_accuracy for r in results]):>14} {elapsed:>5.1f}s"
        )
    return 0
