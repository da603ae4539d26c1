"""Watch the adaptive learning rate of a live training run.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265),
Figures 1-2, show how the distribution of |gradient| (and of the update) is distorted in the
first steps of Adam without warmup. :class:`VarianceMonitor` records, at sampled steps and per
layer (parameter tensor):

* histograms of log10 |g| and log10 |Δθ| over ``bins`` fixed bins on [lo, hi] (values outside
  are counted in the end bins; zeros in the first), where Δθ = θ_after - θ_before is the whole
  change of the step (for Lookahead and Ranger it includes the slow-weight sync);
* the adaptive learning rate ψ = 1 / (√v̂ + ε) with v̂ = v_t / (1 - β2^t), read from the
  optimizer's state (``exp_avg_sq``, or ``max_exp_avg_sq`` under AMSGrad, and ``step``): its
  mean, variance and quantiles.

All of these are taken over a fixed uniform sample of ``sample_size`` elements of each layer,
drawn once at attachment (all elements of smaller layers, or of every layer with
``sample_size=None``), so a sampled step costs O(sample_size) per layer. Memory is bounded:
each sampled step costs a fixed number of values per layer, steps are sampled every ``every``
steps, and once ``max_records`` steps are held every other one is dropped and ``every``
doubles. Recording uses the optimizer's step hooks; nothing changes the optimization itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rectified.formats import stored_moment
from rectified.variance.record import AdaptiveLrStats, MonitorRecord

__all__ = [
    "QUANTILE_LEVELS",
    "VarianceMonitor",
    "log_histogram",
    "log_histogram_",
    "log_histograms_",
]

QUANTILE_LEVELS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


def _check_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"Invalid {name} value: {value} (expected an integer >= {least})")
    return value


def _state_owner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that holds ``exp_avg_sq``: the innermost one of Lookahead-style wrappers."""
    owner = optimizer
    while isinstance(inner := getattr(owner, "optimizer", None), torch.optim.Optimizer):
        owner = inner
    return owner


def _layer_names(
    optimizer: torch.optim.Optimizer,
    params: list[Tensor],
    names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None,
) -> list[str]:
    by_id: dict[int, str] = {}
    pairs = names.items() if isinstance(names, Mapping) else (names or ())
    for name, tensor in pairs:
        by_id.setdefault(id(tensor), str(name))
    for g, group in enumerate(optimizer.param_groups):
        group_names = group.get("param_names") or [None] * len(group["params"])
        for i, (p, name) in enumerate(zip(group["params"], group_names)):
            by_id.setdefault(id(p), name if name is not None else f"group{g}.param{i}")
    return [by_id[id(p)] for p in params]


def _row_quantiles(sorted_rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """QUANTILE_LEVELS of each row's first ``lengths`` values (rows sorted ascending).

    The q-quantile of n values sits at position q (n - 1), interpolated linearly between order
    statistics (Hyndman & Fan's definition 7, numpy's default); written out so that all layers
    take one sort instead of one np.quantile call each.
    """
    position = np.asarray(QUANTILE_LEVELS)[None, :] * (lengths[:, None] - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, lengths[:, None] - 1)
    weight = position - below
    low = np.take_along_axis(sorted_rows, below, axis=1)
    high = np.take_along_axis(sorted_rows, above, axis=1)
    return low * (1.0 - weight) + high * weight


def _bin_positions_(x: Tensor, bins: int, lo: float, hi: float) -> Tensor:
    """Bin index (int32) of log10 |x| per element, ``bins`` for NaN; overwrites real ``x``."""
    x = x.abs() if x.is_complex() else x.abs_()
    # Raising zeros to 10^lo first keeps log10 off its slow path for 0 and subnormals.
    position = x.clamp_min_(10.0**lo).log10_().sub_(lo).mul_(bins / (hi - lo)).clamp_(0, bins - 1)
    torch.nan_to_num_(position, nan=bins)
    return position.reshape(-1).to(torch.int32)


def log_histogram_(x: Tensor, bins: int, lo: float, hi: float) -> Tensor:
    """Counts (int64) of log10 |x| in ``bins`` equal bins on [lo, hi]; overwrites real ``x``.

    Bin k holds lo + k w <= log10 |x| < lo + (k + 1) w, w = (hi - lo) / bins, the last bin also
    its right edge. Values below lo (and |x| = 0) count in the first bin, above hi (and inf) in
    the last; NaN is not counted. Computed in x's precision: float32 values within about 1e-7
    of an edge may land in the neighbouring bin.
    """
    return torch.bincount(_bin_positions_(x, bins, lo, hi), minlength=bins + 1)[:bins]


def log_histograms_(pieces: Sequence[Tensor | None], bins: int, lo: float,
                    hi: float) -> np.ndarray:
    """[len(pieces), bins] counts as :func:`log_histogram_` of each piece (None: no counts).

    One batch of kernels for all pieces: a step's cost must not grow with per-tensor overhead.
    """
    counts = np.zeros((len(pieces), bins), dtype=np.int64)
    present = [(i, x) for i, x in enumerate(pieces) if x is not None and x.numel() > 0]
    if not present:
        return counts
    device = present[0][1].device
    values = [x.reshape(-1).to(device) for _, x in present]
    values = [x.abs() if x.is_complex() else x for x in values]
    positions = _bin_positions_(torch.cat(values), bins, lo, hi)
    sizes = torch.tensor([x.numel() for x in values], device=device)
    offsets = torch.arange(len(present), device=device, dtype=torch.int32) * (bins + 1)
    positions += torch.repeat_interleave(offsets, sizes)
    batched = torch.bincount(positions, minlength=len(present) * (bins + 1))
    counts[[i for i, _ in present]] = batched.view(len(present), bins + 1)[:, :bins].cpu().numpy()
    return counts


def log_histogram(x: Tensor, bins: int, lo: float, hi: float) -> Tensor:
    """:func:`log_histogram_` on a copy of ``x`` (``x`` is left unchanged)."""
    return log_histogram_(x.detach().clone(), bins, lo, hi)


class VarianceMonitor:
    """Record histograms and adaptive learning rate statistics of an Adam-family optimizer.

    Attaches to ``rectified``'s or ``torch.optim``'s Adam, AdamW, RAdam (any optimizer whose
    groups have ``betas`` and ``eps`` and whose state has ``exp_avg_sq`` and ``step``), also
    through :class:`rectified.Lookahead` / :class:`rectified.Ranger`, whose inner optimizer holds
    the state. The layers watched are the optimizer's parameters at attachment.

    Args:
        optimizer: the optimizer whose ``step`` is watched.
        every (int): record steps 1, 1 + every, 1 + 2 every, ... (default 50: a recorded
            step costs about 1.2 ms, so on a 400k-parameter MLP the default adds about 10% to
            ``optimizer.step()`` and 1% to a training iteration).
        bins (int): histogram bins (default 64).
        sample_size (int or None): elements per layer the histograms and the statistics of ψ
            are taken over (default 4096); ``None`` uses every element (exact, slower).
        lo, hi (float): histogram range in log10 |x| (default -12 to 2).
        names: ``model.named_parameters()`` (or a name -> tensor mapping) to name the layers;
            otherwise the optimizer's ``param_names`` or ``group{g}.param{i}``.
        max_records (int): recorded steps kept at most; past it every other one is dropped and
            ``every`` doubles (default 1000).
        seed (int): seed of the element samples (default 0).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        every: int = 50,
        bins: int = 64,
        sample_size: int | None = 4096,
        lo: float = -12.0,
        hi: float = 2.0,
        names: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]] | None = None,
        max_records: int = 1000,
        seed: int = 0,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"VarianceMonitor watches a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self.every = _check_int("every", every, 1)
        self.bins = _check_int("bins", bins, 1)
        if sample_size is not None:
            _check_int("sample_size", sample_size, 1)
        self.sample_size = sample_size
        self.max_records = _check_int("max_records", max_records, 2)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"Invalid lo, hi values: {lo}, {hi} (expected finite lo < hi)")
        self.lo, self.hi = float(lo), float(hi)
        self.optimizer = optimizer
        self._owner = _state_owner(optimizer)
        for group in self._owner.param_groups:
            if "betas" not in group or "eps" not in group:
                raise ValueError(
                    f"Invalid optimizer value: {type(optimizer).__name__} (VarianceMonitor needs "
                    "an Adam-family optimizer, with 'betas' and 'eps' in its param groups)"
                )
        self._params: list[Tensor] = []
        self._groups: list[Mapping[str, Any]] = []
        for group in self._owner.param_groups:
            for p in group["params"]:
                if all(p is not q for q in self._params):
                    self._params.append(p)
                    self._groups.append(group)
        self.layers = _layer_names(self._owner, self._params, names)
        generator = torch.Generator().manual_seed(seed)
        self._samples = [self._sample_indices(p, generator) for p in self._params]

        self._calls = 0
        self._before: list[Tensor] | None = None
        self._steps: list[int] = []
        self._gradient_counts: list[np.ndarray] = []
        self._update_counts: list[np.ndarray] = []
        self._lr_stats: list[np.ndarray] = []  # [n_layers, 2 + n_levels]: mean, var, quantiles
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    def _sample_indices(self, p: Tensor, generator: torch.Generator) -> Tensor | None:
        numel = p.numel()
        if self.sample_size is None or numel <= self.sample_size:
            return None  # the whole layer
        if numel <= 64 * self.sample_size:
            chosen = torch.randperm(numel, generator=generator)[: self.sample_size]
        else:
            # With replacement: a permutation of a large layer would cost 8 bytes per element.
            chosen = torch.randint(numel, (self.sample_size,), generator=generator)
        return chosen.sort().values.to(p.device)

    def sample_indices(self, layer: int | str) -> np.ndarray:
        """Flat indices of the elements of ``layer`` that the histograms and statistics use."""
        i = self.layers.index(layer) if isinstance(layer, str) else layer
        chosen = self._samples[i]
        return np.arange(self._params[i].numel()) if chosen is None else chosen.cpu().numpy()

    def _gather(self, x: Tensor, i: int) -> Tensor:
        """The sampled elements of layer i's tensor ``x``, as a new flat tensor."""
        flat = x.detach().reshape(-1)
        chosen = self._samples[i]
        return flat.clone() if chosen is None else flat.index_select(0, chosen)

    # -- hooks -------------------------------------------------------------------------------
    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._calls += 1
        if (self._calls - 1) % self.every == 0:
            self._before = [self._gather(p, i) for i, p in enumerate(self._params)]

    @torch.no_grad()
    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._before is None:
            return
        before, self._before = self._before, None
        # Gradients are read after the step: a closure computes them inside it, and the
        # optimizers never write into .grad.
        grads = [
            None if p.grad is None else self._gather(p.grad, i) for i, p in enumerate(self._params)
        ]
        for i, (p, old) in enumerate(zip(self._params, before)):
            old.sub_(self._gather(p, i))  # -Δθ: only |Δθ| is counted
        gradients = log_histograms_(grads, self.bins, self.lo, self.hi)
        updates = log_histograms_(before, self.bins, self.lo, self.hi)
        stats = self._adaptive_lr_stats()
        self._steps.append(self._calls)
        self._gradient_counts.append(gradients)
        self._update_counts.append(updates)
        self._lr_stats.append(stats)
        if len(self._steps) > self.max_records:
            self._thin()

    def _adaptive_lr_stats(self) -> np.ndarray:
        """[n_layers, 2 + n_levels]: mean, variance, quantiles of ψ over each layer's sample.

        ψ = 1/(√(v_t/(1-β2^t)) + ε) with each layer's own t, β2, ε; NaN for a layer without
        optimizer state yet. All layers are gathered into one array and reduced together.
        """
        stats = np.full((len(self._params), 2 + len(QUANTILE_LEVELS)), np.nan)
        rows, pieces, scales, eps = [], [], [], []
        for i, (p, group) in enumerate(zip(self._params, self._groups)):
            state = self._owner.state.get(p, {})
            key = "max_exp_avg_sq" if group.get("amsgrad") and "max_exp_avg_sq" in state \
                else "exp_avg_sq"
            if key not in state or "step" not in state:
                continue
            second = stored_moment(state, key)
            if second.is_complex():  # v of the real and imaginary parts
                second = torch.view_as_real(second)
            rows.append(i)
            pieces.append(self._gather(second, i))
            scales.append(-math.expm1(float(state["step"]) * math.log(float(group["betas"][1]))))
            eps.append(float(group["eps"]))
        if not rows:
            return stats
        device = pieces[0].device
        v = torch.cat([x.to(device) for x in pieces]).cpu().double().numpy()
        lengths = np.array([x.numel() for x in pieces])
        starts = np.cumsum(lengths) - lengths
        psi = 1.0 / (np.sqrt(v / np.repeat(scales, lengths)) + np.repeat(eps, lengths))
        mean = np.add.reduceat(psi, starts) / lengths
        variance = np.add.reduceat((psi - np.repeat(mean, lengths)) ** 2, starts) / lengths
        # One row per layer, padded with +inf so that each row sorts its own values first.
        table = np.full((len(rows), lengths.max()), np.inf)
        for row, (start, length) in enumerate(zip(starts, lengths)):
            table[row, :length] = psi[start : start + length]
        table.sort(axis=1)
        stats[rows] = np.column_stack([mean, variance, _row_quantiles(table, lengths)])
        return stats

    def _thin(self) -> None:
        """Keep every other record (steps 1, 1 + 2 every, ...) and sample half as often."""
        self._steps[:] = self._steps[::2]
        for records in (self._gradient_counts, self._update_counts, self._lr_stats):
            records[:] = records[::2]
        self.every *= 2

    # -- results -----------------------------------------------------------------------------
    def detach(self) -> None:
        """Remove the hooks; what was recorded stays available."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._before = None

    def record(self) -> MonitorRecord:
        """A snapshot of everything recorded so far."""
        n_layers, n_levels = len(self._params), len(QUANTILE_LEVELS)

        def stacked(records: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.stack(records) if records else np.zeros((0, *shape), dtype=dtype)

        stats = stacked(self._lr_stats, (n_layers, 2 + n_levels), np.float64)
        numels = [p.numel() for p in self._params]
        return MonitorRecord(
            steps=np.array(self._steps, dtype=np.int64),
            layers=list(self.layers),
            numels=np.array(numels, dtype=np.int64),
            sampled=np.array(
                [n if s is None else s.numel() for n, s in zip(numels, self._samples)],
                dtype=np.int64,
            ),
            bin_edges=np.linspace(self.lo, self.hi, self.bins + 1),
            gradient_counts=stacked(self._gradient_counts, (n_layers, self.bins), np.int64),
            update_counts=stacked(self._update_counts, (n_layers, self.bins), np.int64),
            lr_mean=stats[..., 0],
            lr_variance=stats[..., 1],
            lr_quantiles=stats[..., 2:],
            quantile_levels=np.array(QUANTILE_LEVELS),
            info={
                "optimizer": type(self.optimizer).__name__,
                "every": self.every,
                "bins": self.bins,
                "sample_size": self.sample_size,
                "lo": self.lo,
                "hi": self.hi,
                "max_records": self.max_records,
            },
        )

    def gradient_histogram(
        self, layer: int | str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, bin_edges in log10 |g|, counts [n_steps, bins]); see
        :meth:`MonitorRecord.gradient_histogram`."""
        return self.record().gradient_histogram(layer)

    def update_histogram(
        self, layer: int | str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, bin_edges in log10 |Δθ|, counts [n_steps, bins]); see
        :meth:`MonitorRecord.update_histogram`."""
        return self.record().update_histogram(layer)

    def adaptive_lr_stats(self) -> AdaptiveLrStats:
        """Per-step, per-layer mean, variance and quantiles of ψ = 1 / (√v̂ + ε)."""
        return self.record().adaptive_lr_stats()

    def save(self, path: str | os.PathLike) -> None:
        """Write everything recorded to ``path`` (``.npz``); read it back with :meth:`load`."""
        self.record().save(path)

    @staticmethod
    def load(path: str | os.PathLike) -> MonitorRecord:
        """Read a file written by :meth:`save` into a :class:`MonitorRecord`."""
        return MonitorRecord.load(path)
