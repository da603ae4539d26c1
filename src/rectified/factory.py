"""Optimizers by name: ``create_optimizer(model, "radam", lr=1e-3, weight_decay=0.01)``.

The factory builds the param groups users otherwise write by hand (no weight decay on biases
and normalization weights, optional layer-wise learning-rate decay; see
:mod:`rectified.grouping`) and wraps the optimizer in Lookahead when asked, so a config file or
a command line can name any optimizer of :mod:`rectified`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import nn

from rectified.grouping import NoDecay, param_groups
from rectified.optim import SGD, AdaBound, Adadelta, Adagrad, Adam, AdamW, NAdam, RAdam, RMSprop
from rectified.wrappers import Lookahead, Ranger

# name -> constructor; AMSGrad and AMSBound are options of Adam and AdaBound, named for configs
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adadelta": Adadelta,
    "adam": Adam,
    "amsgrad": partial(Adam, amsgrad=True),
    "adamw": AdamW,
    "adabound": AdaBound,
    "amsbound": partial(AdaBound, amsbound=True),
    "nadam": NAdam,
    "radam": RAdam,
    "ranger": Ranger,
}
LOOKAHEAD_PREFIX = "lookahead_"


def list_optimizers() -> list[str]:
    """Every name :func:`create_optimizer` accepts, sorted.

    >>> names = list_optimizers()
    >>> "lookahead_adamw" in names, "lookahead_ranger" in names  # Ranger is Lookahead already
    (True, False)
    >>> [n for n in names if not n.startswith("lookahead_")]  # doctest: +NORMALIZE_WHITESPACE
    ['adabound', 'adadelta', 'adagrad', 'adam', 'adamw', 'amsbound', 'amsgrad', 'nadam',
     'radam', 'ranger', 'rmsprop', 'sgd']
    """
    wrapped = [LOOKAHEAD_PREFIX + name for name in OPTIMIZERS if name != "ranger"]
    return sorted([*OPTIMIZERS, *wrapped])


def _lookup(name: str) -> tuple[Callable[..., torch.optim.Optimizer], bool]:
    """(constructor, wrapped in Lookahead?) of a name; case and '-' vs '_' do not matter."""
    key = name.strip().lower().replace("-", "_")
    wrapped = key.startswith(LOOKAHEAD_PREFIX)
    base = key[len(LOOKAHEAD_PREFIX):] if wrapped else key
    if base not in OPTIMIZERS or (wrapped and base == "ranger"):
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(list_optimizers())}")
    return OPTIMIZERS[base], wrapped


def _default(constructor: Callable[..., Any], argument: str) -> Any:
    target = constructor.func if isinstance(constructor, partial) else constructor
    parameter = inspect.signature(target).parameters.get(argument)
    return None if parameter is None else parameter.default


def create_optimizer(
    model_or_params: nn.Module | Iterable[Any],
    name: str,
    lr: float | None = None,
    weight_decay: float | None = None,
    no_decay: NoDecay = True,
    lookahead: bool = False,
    layer_decay: float | None = None,
    *,
    lookahead_k: int = 5,
    lookahead_alpha: float = 0.5,
    layer_of: Callable[[str], int] | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer called ``name`` (see :func:`list_optimizers`) over ``model_or_params``.

    Args:
        model_or_params: an ``nn.Module``, an iterable of tensors or ``(name, tensor)``
            pairs, or ready param-group dicts (passed through unchanged).
        name: ``"radam"``, ``"adamw"``, ``"ranger"``, ...; ``"lookahead_<name>"`` wraps it in
            :class:`rectified.Lookahead` (as does ``lookahead=True``).
        lr: learning rate; None keeps the optimizer's default.
        weight_decay: weight decay; None keeps the optimizer's default (1e-2 for AdamW).
        no_decay: which parameters get ``weight_decay=0`` when the decay is not zero: True
            (biases and normalization layers, by module type), False (none), or module types
            and name patterns to exempt as well (see :func:`rectified.grouping.no_decay_names`).
        lookahead: wrap in Lookahead with ``lookahead_k`` and ``lookahead_alpha``.
        layer_decay: layer-wise learning-rate decay d: layer l of L gets lr * d^(L - l)
            (layers numbered by :func:`rectified.grouping.numbered_layers` or ``layer_of``).
        **kwargs: the optimizer's own arguments (``betas``, ``momentum``, ``fused``, ...).

    Frozen parameters (``requires_grad=False``) are left out.

    >>> import torch, rectified
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
    >>> opt = rectified.create_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)
    >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
    [(1, 0.05), (3, 0.0)]
    >>> opt = rectified.create_optimizer(model, "lookahead_radam", lr=1e-3)
    >>> type(opt).__name__, type(opt.optimizer).__name__
    ('Lookahead', 'RAdam')
    """
    constructor, wrapped = _lookup(name)
    if wrapped and lookahead:
        raise ValueError(f"{name!r} is already wrapped in Lookahead; drop lookahead=True")
    if lookahead and constructor is Ranger:
        raise ValueError("'ranger' is Lookahead(RAdam) already; drop lookahead=True")
    items = model_or_params if isinstance(model_or_params, nn.Module) else list(model_or_params)
    if isinstance(items, list) and items and all(isinstance(i, dict) for i in items):
        params: Any = items
    else:
        decay = _default(constructor, "weight_decay") if weight_decay is None else weight_decay
        params = param_groups(items, weight_decay, no_decay if decay else False, layer_decay,
                              lr, layer_of)
    if not params:
        raise ValueError("create_optimizer got no trainable parameters")
    if lr is not None:
        kwargs["lr"] = lr
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    optimizer = constructor(params, **kwargs)
    if wrapped or lookahead:
        optimizer = Lookahead(optimizer, k=lookahead_k, alpha=lookahead_alpha)
    return optimizer
