"""README's Lightning recipe, run for real: ``configure_optimizers`` returns a rectified
optimizer (Ranger, a Lookahead wrapper, and RAdam) with a warmup-then-cosine schedule; a
checkpoint mid-run and a resume from it end bit-exactly where the uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

lightning = pytest.importorskip("lightning")

import rectified  # noqa: E402
from rectified import schedules  # noqa: E402

STEPS, PER_EPOCH = 8, 4
pytestmark = [pytest.mark.filterwarnings("ignore:The dirpath has changed"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")]


class Regression(lightning.LightningModule):
    def __init__(self, optimizer: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 1))
        self.optimizer_name = optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        inputs, targets = batch
        loss = nn.functional.mse_loss(self.net(inputs), targets)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = rectified.create_optimizer(self, self.optimizer_name, lr=1e-2,
                                               weight_decay=0.01)
        schedule = schedules.join([schedules.linear_warmup(2), schedules.cosine_annealing(6)],
                                  boundaries=[2])
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedules.ScheduleLR(optimizer, schedule),
                                 "interval": "step"}}


def loader() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4 * PER_EPOCH, 6, generator=generator)
    targets = inputs.sum(1, keepdim=True).sin()
    # a fixed order: every epoch, and so a resumed one, sees the same batches
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets),
                                       batch_size=4, shuffle=False)


def fit(folder: Path, optimizer: str, resume: Path | None = None) -> Regression:
    model = Regression(optimizer)
    checkpoints = lightning.pytorch.callbacks.ModelCheckpoint(
        dirpath=folder, every_n_train_steps=PER_EPOCH, save_top_k=-1,
        filename="{step}")
    trainer = lightning.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False,
                                callbacks=[checkpoints], enable_progress_bar=False,
                                enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, loader(), ckpt_path=str(resume) if resume else None)
    assert trainer.global_step == STEPS
    return model


@pytest.mark.parametrize("optimizer", ["ranger", "lookahead_adamw", "radam"])
def test_lightning_fits_and_resumes_bit_exactly(optimizer: str, tmp_path: Path) -> None:
    initial = Regression(optimizer).net[0].weight.detach().clone()
    straight = fit(tmp_path / "straight", optimizer)
    assert not torch.equal(initial, straight.net[0].weight)
    (middle,) = (tmp_path / "straight").glob(f"step={PER_EPOCH}.ckpt")
    saved = torch.load(middle, weights_only=False)
    assert saved["lr_schedulers"][0]["last_epoch"] == PER_EPOCH
    resumed = fit(tmp_path / "resumed", optimizer, resume=middle)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    opt_a = straight.trainer.optimizers[0]
    opt_b = resumed.trainer.optimizers[0]
    assert type(opt_a) is type(opt_b)
    assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
    assert [g["weight_decay"] for g in opt_a.param_groups] == [0.01, 0.0]
