"""Param groups by rule: no weight decay on biases and normalization weights, and layer-wise
learning-rate decay, the groups users otherwise write by hand for every model.

Weight decay shrinks a weight towards zero. On a bias or on a normalization layer's scale and
shift that only moves the function (a LayerNorm gain pulled to 0 silences its layer), so
common practice since BERT (Devlin et al., arXiv 1810.04805; Loshchilov and Hutter's AdamW,
arXiv 1711.05101, applies decay to weight matrices) exempts them. Layer-wise learning-rate decay
(Clark et al., ELECTRA, arXiv 2003.10555; Bao et al., BEiT, arXiv 2106.08254) gives layer l of
L the rate lr * decay^(L - l), so layers near the input, pretrained for longest, move least.

Normalization layers are found by module type, not parameter name: torch's LayerNorm, RMSNorm,
GroupNorm, LocalResponseNorm, every BatchNorm and InstanceNorm (lazy and synced ones
included), and any module whose class name ends in ``Norm`` (``LlamaRMSNorm``,
``T5LayerNorm``, a user's own), since libraries often define their own.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.LocalResponseNorm, _NormBase,
)

NoDecay = bool | Iterable[str | type]
# the name up to its first all-digit component: "encoder.layers.3.attn.w" -> "encoder.layers.3"
_NUMBERED = re.compile(r"^((?:[^.]+\.)*?\d+)(?=\.|$)")


def is_normalization(module: nn.Module) -> bool:
    """True for a normalization layer: one of ``NORM_TYPES`` or a class named ``...Norm``."""
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith("Norm")


def _split_no_decay(no_decay: NoDecay) -> tuple[bool, tuple[type, ...], tuple[str, ...]]:
    """(default rules on?, extra module types, extra name patterns)."""
    if isinstance(no_decay, bool):
        return no_decay, (), ()
    if isinstance(no_decay, str | type):
        no_decay = [no_decay]
    types, patterns = [], []
    for entry in no_decay:
        if isinstance(entry, type) and issubclass(entry, nn.Module):
            types.append(entry)
        elif isinstance(entry, str):
            patterns.append(entry)
        else:
            raise ValueError(f"Invalid no_decay entry: {entry!r} (expected a bool, or module "
                             "types and parameter-name patterns)")
    return True, tuple(types), tuple(patterns)


def no_decay_names(model: nn.Module, no_decay: NoDecay = True) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the parameters that get no weight decay.

    ``no_decay=True``: every module's own ``bias`` and every parameter of a normalization layer.
    ``False``: none. An iterable adds module types (e.g. ``nn.Embedding``) whose parameters
    get no decay, and ``fnmatch`` patterns of parameter names (``"*.pos_embed"``), to the
    default rules. A parameter shared by several modules is exempt if any of them exempts it.

    >>> model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2, bias=False))
    >>> sorted(no_decay_names(model))
    ['0.bias', '1.bias', '1.weight']
    >>> sorted(no_decay_names(nn.Sequential(nn.Embedding(9, 4)), no_decay=[nn.Embedding]))
    ['0.weight']
    """
    rules, types, patterns = _split_no_decay(no_decay)
    if not rules:
        return set()
    names = {id(p): name for name, p in model.named_parameters()}
    exempt: set[str] = set()
    for module in model.modules():
        whole = is_normalization(module) or isinstance(module, types)
        for own_name, param in module.named_parameters(recurse=False):
            if id(param) in names and (whole or own_name == "bias"):
                exempt.add(names[id(param)])
    exempt.update(n for n in names.values() if any(fnmatch.fnmatchcase(n, p) for p in patterns))
    return exempt


def numbered_layers(names: Iterable[str]) -> Callable[[str], int]:
    """Layer numbers from names: a block is a name's prefix up to its first all-digit
    component (``encoder.layers.3``, ``0`` in an ``nn.Sequential``); blocks are layers 1..N in
    the order they first appear, what comes before the first block (embeddings) is layer 0
    and what comes after it (the head) is layer N + 1.

    >>> layer = numbered_layers(["embed.weight", "blocks.0.w", "blocks.1.w", "head.weight"])
    >>> [layer(n) for n in ["embed.weight", "blocks.0.w", "blocks.1.w", "head.weight"]]
    [0, 1, 2, 3]
    """
    names = list(names)
    blocks: dict[str, int] = {}
    for name in names:
        match = _NUMBERED.match(name)
        if match and match.group(1) not in blocks:
            blocks[match.group(1)] = len(blocks) + 1
    if not blocks:
        raise ValueError("layer_decay needs numbered blocks (an nn.ModuleList or nn.Sequential "
                         "of layers) to number the layers; pass layer_of=NAME -> LAYER")
    position = {name: i for i, name in enumerate(names)}
    first_block = min(position[n] for n in names if _NUMBERED.match(n))
    last = len(blocks) + 1

    def layer_of(name: str) -> int:
        match = _NUMBERED.match(name)
        if match and match.group(1) in blocks:
            return blocks[match.group(1)]
        return 0 if position.get(name, 0) < first_block else last

    return layer_of


def _one_layer(name: str) -> int:
    return 0


def param_groups(
    model_or_params: nn.Module | Iterable[Any],
    weight_decay: float | None = None,
    no_decay: NoDecay = True,
    layer_decay: float | None = None,
    lr: float | None = None,
    layer_of: Callable[[str], int] | None = None,
) -> list[dict[str, Any]]:
    """Param-group dicts for any optimizer, by rule instead of by hand.

    Args:
        model_or_params: an ``nn.Module`` (rules by module type), or an iterable of tensors
            or of ``(name, tensor)`` pairs: without the modules, tensors of dimension <= 1
            (the biases and normalization weights of torch's layers, but also any other
            vector) get no decay; name patterns and ``layer_decay`` need the names.
        weight_decay: the decay of the decayed group; None leaves the optimizer's default.
        no_decay: see :func:`no_decay_names`; the exempt group gets ``weight_decay=0``.
        layer_decay: ``d`` in (0, 1]: layer l of L gets ``lr * d ** (L - l)`` (needs ``lr``).
        lr: the top layer's learning rate (used with ``layer_decay`` only).
        layer_of: parameter name -> layer number (0 = input side); default
            :func:`numbered_layers`.

    Parameters with ``requires_grad=False`` are left out. Groups come in layer order, the
    decayed group first, parameters in the model's order, so the same model gives the same
    groups (and a compatible ``state_dict``) in every process.

    >>> model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    >>> [(len(g["params"]), g.get("weight_decay")) for g in param_groups(model, 0.1)]
    [(1, 0.1), (3, 0.0)]
    """
    named = _named(model_or_params)
    if isinstance(model_or_params, nn.Module):
        exempt = no_decay_names(model_or_params, no_decay)
    else:
        exempt = _exempt_without_module(named, no_decay)
    trainable = [(n, p) for n, p in named if p.requires_grad]
    lrs: dict[int, float] = {}
    layer_for: Callable[[str], int] = _one_layer
    if layer_decay is not None:
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"Invalid layer_decay value: {layer_decay} (expected 0 < d <= 1)")
        if lr is None:
            raise ValueError("layer_decay needs lr, the learning rate of the top layer")
        if any(n.startswith("<") for n, _ in trainable):
            raise ValueError("layer_decay needs parameter names: pass the model or "
                             "model.named_parameters()")
        layer_for = layer_of or numbered_layers(n for n, _ in trainable)
        layers = {layer_for(n) for n, _ in trainable}
        lrs = {layer: lr * layer_decay ** (max(layers) - layer) for layer in layers}
    elif layer_of is not None:
        raise ValueError("layer_of is used with layer_decay only")
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in trainable:
        layer = layer_for(name)
        decays = name not in exempt
        group = groups.get((layer, decays))
        if group is None:
            group = groups[(layer, decays)] = {"params": []}
            if not decays:
                group["weight_decay"] = 0.0
            elif weight_decay is not None:
                group["weight_decay"] = weight_decay
            if lrs:
                group["lr"] = lrs[layer]
        group["params"].append(param)
    return [groups[key] for key in sorted(groups, key=lambda k: (k[0], not k[1]))]


def _named(model_or_params: nn.Module | Iterable[Any]) -> list[tuple[str, torch.Tensor]]:
    if isinstance(model_or_params, nn.Module):
        return list(model_or_params.named_parameters())
    if isinstance(model_or_params, torch.Tensor):
        raise TypeError("params should be an iterable of Tensors, not a single Tensor")
    named = []
    for index, item in enumerate(model_or_params):
        if isinstance(item, dict):
            raise TypeError("params are already param groups; pass the model or its parameters "
                            "to group them by rule")
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            named.append(item)
        elif isinstance(item, torch.Tensor):
            named.append((f"<{index}>", item))
        else:
            raise TypeError(f"params hold a {type(item).__name__}; expected tensors or "
                            "(name, tensor) pairs")
    return named


def _exempt_without_module(named: list[tuple[str, torch.Tensor]], no_decay: NoDecay) -> set[str]:
    rules, types, patterns = _split_no_decay(no_decay)
    if not rules:
        return set()
    if types:
        raise ValueError("no_decay by module type needs the model, not its parameters")
    return {name for name, param in named
            if param.dim() <= 1 or any(fnmatch.fnmatchcase(name, p) for p in patterns)}
