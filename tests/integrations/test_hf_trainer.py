"""README's recipes for the Hugging Face ``transformers.Trainer``, run for real: a tiny Llama
(built from a config, nothing downloaded), a few steps, a checkpoint, and a resume from it that
ends bit-exactly where the uninterrupted run ends.

Two ways in: ``optimizers=(create_optimizer(...), None)`` and
``optimizer_cls_and_kwargs=(rectified.RAdam, {...})``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")

import rectified  # noqa: E402
from rectified import grouping  # noqa: E402

STEPS, SAVE_AT = 6, 3


class Tokens(torch.utils.data.Dataset):
    """Fixed random token windows; the model learns to predict each from the one before."""

    def __init__(self, count: int = 32, length: int = 8) -> None:
        self.ids = torch.randint(0, 64, (count, length),
                                 generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def tiny_llama() -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=2, max_position_embeddings=16)
    return transformers.LlamaForCausalLM(config)


def arguments(out: Path) -> Any:
    return transformers.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4,
        learning_rate=3e-3, weight_decay=0.1, lr_scheduler_type="linear", save_strategy="steps",
        save_steps=SAVE_AT, logging_steps=1, report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True)


def trainer_with_optimizer(out: Path) -> Any:
    model = tiny_llama()
    optimizer = rectified.create_optimizer(model, "radam", lr=3e-3, weight_decay=0.1)
    return transformers.Trainer(model=model, args=arguments(out), train_dataset=Tokens(),
                                optimizers=(optimizer, None))


def trainer_with_class(out: Path) -> Any:
    return transformers.Trainer(
        model=tiny_llama(), args=arguments(out), train_dataset=Tokens(),
        optimizer_cls_and_kwargs=(rectified.RAdam, {"lr": 3e-3, "betas": (0.9, 0.99)}))


def inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


@pytest.mark.parametrize("make", [trainer_with_optimizer, trainer_with_class],
                         ids=["optimizers", "optimizer_cls_and_kwargs"])
def test_trainer_trains_and_resumes_bit_exactly(make: Any, tmp_path: Path) -> None:
    straight = make(tmp_path / "straight")
    initial = {k: v.clone() for k, v in straight.model.state_dict().items()}
    result = straight.train()
    assert isinstance(inner(straight.optimizer), rectified.RAdam)
    losses = [e["loss"] for e in straight.state.log_history if "loss" in e]
    assert len(losses) == STEPS and all(0 < loss < 10 for loss in losses)
    assert not torch.equal(initial["lm_head.weight"], straight.model.lm_head.weight)
    groups = inner(straight.optimizer).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert all(s["step"].item() == STEPS for s in inner(straight.optimizer).state.values())

    resumed = make(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / f"checkpoint-{SAVE_AT}"))
    assert resumed.state.global_step == result.global_step == STEPS
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    for a, b in zip(inner(straight.optimizer).state.values(),
                    inner(resumed.optimizer).state.values(), strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_factory_exempts_what_the_trainer_exempts() -> None:
    model = tiny_llama()
    trainer_decays = set(transformers.Trainer.get_decay_parameter_names(None, model))
    names = {name for name, _ in model.named_parameters()}
    exempt = grouping.no_decay_names(model)
    # the norms are LlamaRMSNorm, found by their class name
    assert exempt == names - trainer_decays
    assert any(name.endswith("input_layernorm.weight") for name in exempt)
