"""A byte-level text corpus that is on every machine: the Python standard library's own source.

The corpus is the ``.py`` files under ``sysconfig.get_paths()['stdlib']`` (which include the
library's documentation strings and ``pydoc_data/topics.py``, the reference manual's topics),
without ``site-packages``, test suites and caches. Files are deduplicated by content, and each
file goes to the validation split when its SHA-256 digest is 0 modulo 10, so the split does not
depend on the order the filesystem lists files in. A different Python version gives a slightly
different corpus; ``--text PATH`` uses a file of the user's instead (its last tenth validates).
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

SKIPPED_DIRECTORIES = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "turtledemo"}
)
VOCAB_SIZE = 256  # bytes


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8, one byte per token
    valid: torch.Tensor
    source: str


def stdlib_files(root: str | None = None) -> list[Path]:
    """The standard library's ``.py`` files, sorted by path."""
    root = root or sysconfig.get_paths()["stdlib"]
    found: list[Path] = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
        found.extend(Path(directory, name) for name in files if name.endswith(".py"))
    return sorted(found)


def stdlib_corpus(max_train_bytes: int = 2_000_000, max_valid_bytes: int = 200_000) -> Corpus:
    """The deduplicated stdlib corpus, split by content hash and capped at the given sizes.

    Files are taken in digest order (a fixed, pseudo-random order) until each split is full.
    """
    by_digest: dict[str, bytes] = {}
    for path in stdlib_files():
        data = path.read_bytes()
        by_digest.setdefault(hashlib.sha256(data).hexdigest(), data)
    train: list[bytes] = []
    valid: list[bytes] = []
    sizes = {"train": 0, "valid": 0}
    for digest in sorted(by_digest):
        split, parts, cap = (
            ("valid", valid, max_valid_bytes)
            if int(digest, 16) % 10 == 0
            else ("train", train, max_train_bytes)
        )
        if sizes[split] >= cap:
            continue
        data = by_digest[digest][: cap - sizes[split]]
        parts.append(data)
        sizes[split] += len(data)
    if not train or not valid:
        raise ValueError("the Python standard library has too few source files for a corpus")
    return Corpus(_tensor(b"".join(train)), _tensor(b"".join(valid)), "python-stdlib")


def file_corpus(path: str | os.PathLike[str], valid_fraction: float = 0.1) -> Corpus:
    """A user's text file as bytes; its last ``valid_fraction`` is the validation split."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--text: no such file {str(path)!r}")
    data = file.read_bytes()
    cut = int(len(data) * (1.0 - valid_fraction))
    if cut < 1024 or len(data) - cut < 256:
        raise ValueError(f"--text: {str(path)!r} is too short for a language model")
    return Corpus(_tensor(data[:cut]), _tensor(data[cut:]), str(file))


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()
