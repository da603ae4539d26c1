"""What a :class:`~rectified.variance.monitor.VarianceMonitor` recorded, as plain numpy arrays.

A record holds, for each sampled step and each layer (parameter tensor):

* histograms of log10 |gradient| and log10 |update| over fixed bins (the style of Figures 1-2 of
  Liu et al., arXiv 1908.03265), where the update is θ_after - θ_before of that step, counted
  over a fixed uniform sample of the layer's elements (``sampled`` of its ``numels``);
* the mean, variance and quantiles of the adaptive learning rate ψ = 1 / (√v̂ + ε) over the
  same sample.

Records save to one ``.npz`` file (no pickled objects) and load back unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AdaptiveLrStats", "MonitorRecord"]

_ARRAYS = (
    "steps",
    "numels",
    "sampled",
    "bin_edges",
    "gradient_counts",
    "update_counts",
    "lr_mean",
    "lr_variance",
    "lr_quantiles",
    "quantile_levels",
)


@dataclass(frozen=True)
class AdaptiveLrStats:
    """Per-step, per-layer statistics of ψ = 1 / (√v̂ + ε).

    ``mean``, ``variance`` ([n_steps, n_layers]; the variance of the values, ddof 0) and
    ``quantiles`` ([n_steps, n_layers, n_levels]) are over each layer's sampled elements
    (``sampled`` of its ``numels``; the whole layer when they are equal). NaN marks a layer
    without optimizer state at that step (no gradient yet).
    """

    steps: np.ndarray
    layers: list[str]
    numels: np.ndarray
    sampled: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    quantile_levels: np.ndarray
    quantiles: np.ndarray

    def pooled_mean(self) -> np.ndarray:
        """Mean of ψ over all elements of all layers, per step: Σ_l n_l mean_l / Σ_l n_l.

        Layers weigh by their size, so sampled layers stand for all their elements.
        """
        return self.mean @ self.numels / self.numels.sum()

    def pooled_variance(self) -> np.ndarray:
        """Variance of ψ over all elements of all layers: Σ_l n_l (var_l + mean_l²) / N - mean²."""
        second = (self.variance + self.mean**2) @ self.numels / self.numels.sum()
        return second - self.pooled_mean() ** 2


@dataclass
class MonitorRecord:
    """Everything a monitor recorded; see the module docstring for what each array holds."""

    steps: np.ndarray  # [n_steps] optimizer steps counted from attachment (1 = first)
    layers: list[str]
    numels: np.ndarray  # [n_layers] elements per layer
    sampled: np.ndarray  # [n_layers] elements per layer the histograms count
    bin_edges: np.ndarray  # [bins + 1] in log10 |x|
    gradient_counts: np.ndarray  # [n_steps, n_layers, bins] counts over the sampled elements
    update_counts: np.ndarray  # [n_steps, n_layers, bins] counts over the sampled elements
    lr_mean: np.ndarray  # [n_steps, n_layers]
    lr_variance: np.ndarray  # [n_steps, n_layers]
    lr_quantiles: np.ndarray  # [n_steps, n_layers, n_levels]
    quantile_levels: np.ndarray  # [n_levels]
    info: dict[str, Any] = field(default_factory=dict)  # optimizer and sampling settings

    def _layer_index(self, layer: int | str) -> int:
        if isinstance(layer, str):
            if layer not in self.layers:
                raise ValueError(f"Invalid layer value: {layer!r} (known: {self.layers})")
            return self.layers.index(layer)
        if not -len(self.layers) <= layer < len(self.layers):
            raise ValueError(f"Invalid layer value: {layer} ({len(self.layers)} layers)")
        return int(layer)

    def _histogram(
        self, counts: np.ndarray, layer: int | str | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Each layer's sample stands for all its elements: weight numel / sampled (1 when whole).
        estimated = counts * (self.numels / np.maximum(self.sampled, 1))[:, None]
        if layer is None:
            per_step = estimated.sum(axis=1)
        else:
            per_step = estimated[:, self._layer_index(layer)]
        return self.steps.copy(), self.bin_edges.copy(), per_step

    def gradient_histogram(
        self, layer: int | str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, bin_edges, counts [n_steps, bins]) of log10 |g|, all layers summed or one.

        ``counts`` (float) estimate the number of elements per bin: each layer's sample counts
        times numel / sampled, so exact counts where a layer is sampled whole.
        """
        return self._histogram(self.gradient_counts, layer)

    def update_histogram(
        self, layer: int | str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, bin_edges, counts [n_steps, bins]) of log10 |Δθ|, as
        :meth:`gradient_histogram`."""
        return self._histogram(self.update_counts, layer)

    def adaptive_lr_stats(self) -> AdaptiveLrStats:
        """Per-step, per-layer mean, variance and quantiles of ψ = 1 / (√v̂ + ε)."""
        return AdaptiveLrStats(
            self.steps.copy(),
            list(self.layers),
            self.numels.copy(),
            self.sampled.copy(),
            self.lr_mean.copy(),
            self.lr_variance.copy(),
            self.quantile_levels.copy(),
            self.lr_quantiles.copy(),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the record to ``path`` (an ``.npz`` archive, written at exactly that path)."""
        arrays: dict[str, Any] = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        arrays["layers"] = np.array(self.layers, dtype=np.str_)
        arrays["info"] = np.array(json.dumps(self.info))
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MonitorRecord:
        """Read a record written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in (*_ARRAYS, "layers", "info") if name not in archive]
            if missing:
                raise ValueError(f"Invalid monitor file: {os.fspath(path)} (missing {missing})")
            arrays = {name: archive[name] for name in _ARRAYS}
            layers = [str(name) for name in archive["layers"]]
            info = json.loads(str(archive["info"]))
        return cls(layers=layers, info=info, **arrays)
