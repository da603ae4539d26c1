"""Tasks and data: fixed splits, batches that are functions of (seed, step), tiny options."""

from __future__ import annotations

import pytest
import torch

from rectified.experiments import tasks, text


def test_stdlib_corpus_is_deterministic_and_split_by_file() -> None:
    a = text.stdlib_corpus(max_train_bytes=100_000, max_valid_bytes=20_000)
    b = text.stdlib_corpus(max_train_bytes=100_000, max_valid_bytes=20_000)
    assert torch.equal(a.train, b.train) and torch.equal(a.valid, b.valid)
    assert len(a.train) == 100_000 and len(a.valid) == 20_000
    assert bytes(a.valid[:2000].tolist()) not in bytes(a.train.tolist())


def test_user_text_file(tmp_path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    corpus = text.file_corpus(path)
    assert len(corpus.train) + len(corpus.valid) == path.stat().st_size
    with pytest.raises(ValueError, match="no such file"):
        text.file_corpus(tmp_path / "missing.txt")


@pytest.mark.parametrize("name", ["digits-mlp", "charlm-lstm", "charlm-transformer"])
def test_batches_depend_only_on_seed_and_step(name: str) -> None:
    options = {} if name == "digits-mlp" else {"width": 16, "seq_len": 16, "eval_windows": 4,
                                               "train_bytes": 50_000}
    if name == "charlm-transformer":
        options.update(heads=2, depth=1)
    problem = tasks.get_task(name).build(options, torch.device("cpu"))
    x1, y1 = problem.batch(7, 3, 8)
    problem.batch(0, 0, 8)
    x2, y2 = problem.batch(7, 3, 8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(problem.batch(8, 3, 8)[0], x1)
    loss = problem.loss(problem.model, x1, y1)
    assert loss.ndim == 0 and torch.isfinite(loss)
    metric = problem.evaluate(problem.model)
    assert (0.0 <= metric <= 1.0) if name == "digits-mlp" else metric > 1.0


def test_language_model_targets_are_the_next_bytes() -> None:
    problem = tasks.get_task("charlm-lstm").build(
        {"width": 8, "seq_len": 12, "eval_windows": 2, "train_bytes": 50_000},
        torch.device("cpu"))
    inputs, targets = problem.batch(0, 0, 4)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_cifar_needs_its_folder(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs data=PATH"):
        tasks.get_task("cifar10-cnn").build({}, torch.device("cpu"))
    with pytest.raises(ValueError, match="missing data_batch_1"):
        tasks.get_task("cifar10-cnn").build({"data": str(tmp_path)}, torch.device("cpu"))
