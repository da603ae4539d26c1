"""``rectified.create_optimizer`` against the param groups a user would build by hand."""

from __future__ import annotations

import copy
import doctest
from typing import Any

import pytest
import torch
from torch import nn

import rectified
from rectified import factory, grouping

# the constructor (over hand-built groups) each name must equal
HAND_BUILT = {
    "sgd": lambda p, **kw: rectified.SGD(p, momentum=0.9, **kw),
    "adagrad": rectified.Adagrad,
    "rmsprop": rectified.RMSprop,
    "adadelta": rectified.Adadelta,
    "adam": rectified.Adam,
    "amsgrad": lambda p, **kw: rectified.Adam(p, amsgrad=True, **kw),
    "adamw": rectified.AdamW,
    "adabound": rectified.AdaBound,
    "amsbound": lambda p, **kw: rectified.AdaBound(p, amsbound=True, **kw),
    "nadam": rectified.NAdam,
    "radam": rectified.RAdam,
    "ranger": rectified.Ranger,
}
EXTRA = {"sgd": {"momentum": 0.9}}


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.mix = nn.Linear(width, width)
        self.scale = nn.LayerNorm(width)  # a norm whose name does not say so

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(x + torch.tanh(self.mix(x)))


class Tiny(nn.Module):
    """embedding, two numbered blocks, a BatchNorm, a head: every rule has something to do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.blocks = nn.ModuleList([Block(6), Block(6)])
        self.bn = nn.BatchNorm1d(6)
        self.norm = nn.Linear(6, 6, bias=False)  # named "norm", but a Linear: its weight decays
        self.head = nn.Linear(6, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).mean(1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(self.bn(x)))


def hand_groups(model: Tiny, weight_decay: float) -> list[dict[str, Any]]:
    """What a user writes by hand: decayed weights, then biases and norm parameters."""
    decayed = [model.embed.weight, model.blocks[0].mix.weight, model.blocks[1].mix.weight,
               model.norm.weight, model.head.weight]
    exempt = [model.blocks[0].mix.bias, model.blocks[0].scale.weight, model.blocks[0].scale.bias,
              model.blocks[1].mix.bias, model.blocks[1].scale.weight, model.blocks[1].scale.bias,
              model.bn.weight, model.bn.bias, model.head.bias]
    return [{"params": decayed, "weight_decay": weight_decay},
            {"params": exempt, "weight_decay": 0.0}]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 4) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        tokens = torch.randint(0, 11, (8, 5), generator=generator)
        target = torch.randint(0, 3, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(tokens), target).backward()
        optimizer.step()


def same_groups(got: list[dict[str, Any]], got_model: nn.Module, want: list[dict[str, Any]],
                want_model: nn.Module) -> None:
    """The same parameters (by name in their models) and the same hyperparameters."""
    got_names = {id(p): n for n, p in got_model.named_parameters()}
    want_names = {id(p): n for n, p in want_model.named_parameters()}
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert [got_names[id(p)] for p in g["params"]] == \
               [want_names[id(p)] for p in w["params"]]
        assert {k: v for k, v in g.items() if k != "params"} == \
               {k: v for k, v in w.items() if k != "params"}


def test_every_name_is_listed() -> None:
    names = rectified.list_optimizers()
    assert set(HAND_BUILT) <= set(names)
    assert {f"lookahead_{n}" for n in HAND_BUILT if n != "ranger"} <= set(names)
    assert len(names) == 2 * len(HAND_BUILT) - 1


@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_factory_equals_hand_built_groups(name: str) -> None:
    torch.manual_seed(0)
    model = Tiny().double()
    twin = copy.deepcopy(model)
    made = rectified.create_optimizer(model, name, lr=1e-2, weight_decay=0.1, **EXTRA.get(name, {}))
    hand = HAND_BUILT[name](hand_groups(twin, 0.1), lr=1e-2, weight_decay=0.1)
    assert type(made) is type(hand)
    same_groups(made.param_groups, model, hand.param_groups, twin)
    train(model, made)
    train(twin, hand)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["lookahead_sgd", "lookahead_adamw", "Lookahead-RAdam"])
def test_lookahead_by_name_equals_hand_wrapped(name: str) -> None:
    torch.manual_seed(0)
    model = Tiny().double()
    twin = copy.deepcopy(model)
    base = name.lower().replace("-", "_").removeprefix("lookahead_")
    made = rectified.create_optimizer(model, name, lr=1e-2, weight_decay=0.1, lookahead_k=2,
                                      lookahead_alpha=0.3, **EXTRA.get(base, {}))
    hand = rectified.Lookahead(HAND_BUILT[base](hand_groups(twin, 0.1), lr=1e-2,
                                                weight_decay=0.1), k=2, alpha=0.3)
    assert isinstance(made, rectified.Lookahead)
    assert type(made.optimizer) is type(hand.optimizer)
    train(model, made, steps=5)
    train(twin, hand, steps=5)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_lookahead_flag_equals_lookahead_name() -> None:
    model = Tiny()
    by_flag = rectified.create_optimizer(model, "adam", lookahead=True, lookahead_k=3)
    by_name = rectified.create_optimizer(model, "lookahead_adam", lookahead_k=3)
    assert type(by_flag) is type(by_name) is rectified.Lookahead
    assert by_flag.defaults == by_name.defaults  # the inner Adam's defaults, then Lookahead's
    assert by_flag.defaults["lookahead_k"] == 3 and by_flag.defaults["lookahead_alpha"] == 0.5


def test_default_weight_decay_is_the_optimizers() -> None:
    model = Tiny()
    adamw = rectified.create_optimizer(model, "adamw")
    assert [g["weight_decay"] for g in adamw.param_groups] == [1e-2, 0.0]  # AdamW's default
    radam = rectified.create_optimizer(model, "radam")  # no decay: one group, as torch would
    assert len(radam.param_groups) == 1
    assert radam.param_groups[0]["weight_decay"] == 0.0
    assert len(radam.param_groups[0]["params"]) == len(list(model.parameters()))


def test_normalization_found_by_module_type() -> None:
    class MyRMSNorm(nn.Module):  # a library's own norm: found by its class name
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))

    model = nn.ModuleDict({
        "a": nn.GroupNorm(2, 4), "b": nn.InstanceNorm2d(4, affine=True), "c": nn.RMSNorm(4),
        "d": nn.LazyBatchNorm1d(), "e": nn.BatchNorm3d(4), "f": MyRMSNorm(),
        "g": nn.Conv2d(4, 4, 3), "h": nn.Embedding(5, 4),
    })
    exempt = grouping.no_decay_names(model)
    assert exempt == {"a.weight", "a.bias", "b.weight", "b.bias", "c.weight", "d.weight",
                      "d.bias", "e.weight", "e.bias", "f.gain", "g.bias"}
    with_embeddings = grouping.no_decay_names(model, no_decay=[nn.Embedding, "g.*"])
    assert with_embeddings == exempt | {"h.weight", "g.weight"}
    assert grouping.no_decay_names(model, no_decay=False) == set()


def test_tied_and_frozen_parameters() -> None:
    model = nn.Sequential(nn.Embedding(7, 4), nn.LayerNorm(4), nn.Linear(4, 7))
    model[2].weight = model[0].weight  # tied: one tensor, one group
    model[1].bias.requires_grad_(False)  # frozen: left out
    groups = grouping.param_groups(model, weight_decay=0.1)
    assert [[id(p) for p in g["params"]] for g in groups] == [
        [id(model[0].weight)], [id(model[1].weight), id(model[2].bias)]]


def test_layer_decay_against_hand_computed_rates() -> None:
    model = Tiny()
    d, lr = 0.5, 1e-2
    optimizer = rectified.create_optimizer(model, "adamw", lr=lr, weight_decay=0.1,
                                           layer_decay=d)
    # layers: 0 embed; 1, 2 the blocks; 3 what follows them (bn, norm, head)
    want = [
        ([model.embed.weight], lr * d**3, 0.1),
        ([model.blocks[0].mix.weight], lr * d**2, 0.1),
        ([model.blocks[0].mix.bias, model.blocks[0].scale.weight, model.blocks[0].scale.bias],
         lr * d**2, 0.0),
        ([model.blocks[1].mix.weight], lr * d, 0.1),
        ([model.blocks[1].mix.bias, model.blocks[1].scale.weight, model.blocks[1].scale.bias],
         lr * d, 0.0),
        ([model.norm.weight, model.head.weight], lr, 0.1),
        ([model.bn.weight, model.bn.bias, model.head.bias], lr, 0.0),
    ]
    assert len(optimizer.param_groups) == len(want)
    for group, (params, group_lr, wd) in zip(optimizer.param_groups, want, strict=True):
        assert [id(p) for p in group["params"]] == [id(p) for p in params]
        assert group["lr"] == pytest.approx(group_lr, rel=0, abs=0)
        assert group["weight_decay"] == wd


def test_layer_decay_with_a_custom_layer_map() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    groups = grouping.param_groups(model, layer_decay=0.1, lr=1.0,
                                   layer_of=lambda name: 5 if name.startswith("1.") else 3)
    assert [g["lr"] for g in groups] == [pytest.approx(0.01)] * 2 + [1.0, 1.0]


def test_plain_parameters_use_the_dimension_rule() -> None:
    weight, bias = torch.zeros(3, 2, requires_grad=True), torch.zeros(3, requires_grad=True)
    optimizer = rectified.create_optimizer([weight, bias], "sgd", lr=0.1, weight_decay=0.01)
    assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == [[id(weight)],
                                                                              [id(bias)]]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def test_param_groups_pass_through() -> None:
    weight = torch.zeros(3, 2, requires_grad=True)
    optimizer = rectified.create_optimizer([{"params": [weight], "lr": 0.5}], "radam", lr=0.1)
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert optimizer.param_groups[0]["params"] == [weight]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: rectified.create_optimizer(m, "adamax"), "unknown optimizer 'adamax'; choose"),
        (lambda m: rectified.create_optimizer(m, "ranger", lookahead=True),
         "'ranger' is Lookahead(RAdam) already"),
        (lambda m: rectified.create_optimizer(m, "lookahead_adam", lookahead=True),
         "already wrapped in Lookahead"),
        (lambda m: rectified.create_optimizer(m, "adamw", layer_decay=0.5),
         "layer_decay needs lr"),
        (lambda m: rectified.create_optimizer(m, "adamw", lr=1.0, layer_decay=1.5),
         "Invalid layer_decay value: 1.5"),
        (lambda m: rectified.create_optimizer(m, "adamw", lr=-1.0), "Invalid learning rate: -1.0"),
        (lambda m: rectified.create_optimizer(list(m.parameters()), "adamw", lr=1.0,
                                              layer_decay=0.5), "layer_decay needs parameter "),
        (lambda m: rectified.create_optimizer(nn.Linear(2, 2).requires_grad_(False), "sgd"),
         "no trainable parameters"),
        (lambda m: rectified.create_optimizer(m, "adamw", no_decay=[3]),
         "Invalid no_decay entry: 3"),
    ],
)
def test_bad_arguments(call: Any, message: str) -> None:
    with pytest.raises(ValueError) as error:
        call(Tiny())
    assert message in str(error.value)


@pytest.mark.parametrize("module", [factory, grouping])
def test_docstring_examples(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
