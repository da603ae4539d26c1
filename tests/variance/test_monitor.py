"""VarianceMonitor records what it claims: each number is recomputed here from the gradients,
the parameters before and after the step, and the optimizer's state, with numpy."""

import numpy as np
import pytest
import torch
from torch import nn

import rectified
from rectified.formats import codes
from rectified.variance import QUANTILE_LEVELS, MonitorRecord, VarianceMonitor

LO, HI, BINS = -8.0, 0.0, 16

OPTIMIZERS = {
    "rectified.Adam": lambda p: rectified.Adam(p, lr=0.05),
    "rectified.Adam-amsgrad": lambda p: rectified.Adam(p, lr=0.05, amsgrad=True),
    "rectified.AdamW": lambda p: rectified.AdamW(p, lr=0.05),
    "rectified.RAdam": lambda p: rectified.RAdam(p, lr=0.05),
    "rectified.Ranger": lambda p: rectified.Ranger(p, lr=0.05, k=2),
    "rectified.RAdam-8bit": lambda p: rectified.RAdam(p, lr=0.05, state_format="8bit",
                                                      min_8bit_size=0),
    "rectified.Adam-amsgrad-8bit": lambda p: rectified.Adam(p, lr=0.05, amsgrad=True,
                                                            state_format="8bit", min_8bit_size=0),
    "rectified.AdamW-bfloat16": lambda p: rectified.AdamW(p, lr=0.05, state_format="bfloat16"),
    "rectified.Lookahead(Adam)": lambda p: rectified.Lookahead(rectified.Adam(p, lr=0.05), k=3),
    "torch.Adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "torch.Adam-amsgrad": lambda p: torch.optim.Adam(p, lr=0.05, amsgrad=True),
    "torch.AdamW": lambda p: torch.optim.AdamW(p, lr=0.05),
    "torch.RAdam": lambda p: torch.optim.RAdam(p, lr=0.05),
}


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(16, 6, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, 3, (16,), generator=generator)


def expected_histogram(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        logs = np.clip(np.log10(np.abs(x.ravel())), LO, HI)
    return np.histogram(logs, bins=BINS, range=(LO, HI))[0]


def state_owner(optimizer):
    return optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer


def expected_psi(optimizer, p: torch.Tensor) -> np.ndarray:
    """ψ = 1 / (√(v / (1 - β2^t)) + ε) straight from the optimizer's state."""
    owner = state_owner(optimizer)
    group = next(g for g in owner.param_groups if any(q is p for q in g["params"]))
    state = owner.state[p]
    key = "max_exp_avg_sq" if group.get("amsgrad") else "exp_avg_sq"
    v = state[key]
    if v.dtype == torch.uint8:  # 8-bit codes: their values
        v = codes.decode(v, state[key + "_scales"], codes.UNSIGNED).double()
    t = float(state["step"])
    beta2 = float(group["betas"][1])
    return 1.0 / (np.sqrt(v.double().numpy().ravel() / (1 - beta2**t)) + group["eps"])


def train(model, optimizer, steps, on_step=None, closure=False):
    for step in range(1, steps + 1):
        x, y = batch(step)

        def loss_fn(x=x, y=y):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        if closure:
            optimizer.step(loss_fn)
        else:
            loss_fn()
            before = [p.detach().clone() for p in model.parameters()]
            grads = [p.grad.detach().clone() for p in model.parameters()]
            optimizer.step()
            if on_step is not None:
                on_step(step, before, grads)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_records_match_statistics_computed_from_the_optimizer(name):
    model = tiny_model()
    optimizer = OPTIMIZERS[name](model.parameters())
    monitor = VarianceMonitor(optimizer, every=2, bins=BINS, lo=LO, hi=HI, sample_size=1000)
    params = list(model.parameters())
    expected = {}

    def on_step(step, before, grads):
        if step % 2 == 1:
            expected[step] = [
                (
                    expected_histogram(g.numpy()),
                    expected_histogram((p.detach() - b).numpy()),
                    expected_psi(optimizer, p),
                )
                for p, b, g in zip(params, before, grads)
            ]

    train(model, optimizer, 9, on_step)
    record = monitor.record()
    np.testing.assert_array_equal(record.steps, [1, 3, 5, 7, 9])
    np.testing.assert_allclose(record.bin_edges, np.linspace(LO, HI, BINS + 1))
    for k, step in enumerate(record.steps):
        for j, (grad_hist, update_hist, psi) in enumerate(expected[step]):
            np.testing.assert_array_equal(record.gradient_counts[k, j], grad_hist)
            np.testing.assert_array_equal(record.update_counts[k, j], update_hist)
            assert record.lr_mean[k, j] == pytest.approx(psi.mean(), rel=1e-12)
            assert record.lr_variance[k, j] == pytest.approx(psi.var(), rel=1e-10)
            np.testing.assert_allclose(
                record.lr_quantiles[k, j], np.quantile(psi, QUANTILE_LEVELS), rtol=1e-12
            )
    # Per-layer and aggregated views agree with the raw counts.
    steps, _, counts = monitor.gradient_histogram()
    np.testing.assert_array_equal(steps, record.steps)
    np.testing.assert_array_equal(counts, record.gradient_counts.sum(axis=1))
    _, _, first_layer = monitor.update_histogram(0)
    np.testing.assert_array_equal(first_layer, record.update_counts[:, 0])
    assert counts.sum(axis=1).tolist() == [sum(p.numel() for p in params)] * 5


def test_sampled_layers_use_the_sampled_elements():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(100, 60), nn.Tanh(), nn.Linear(60, 2)).double()
    optimizer = rectified.RAdam(model.parameters(), lr=0.01)
    monitor = VarianceMonitor(
        optimizer,
        every=1,
        bins=BINS,
        lo=LO,
        hi=HI,
        sample_size=500,
        names=model.named_parameters(),
    )
    weight = model[0].weight
    chosen = monitor.sample_indices("0.weight")
    assert len(chosen) == 500 and len(np.unique(chosen)) == 500
    assert chosen.max() < weight.numel()
    x = torch.randn(32, 100, dtype=torch.float64)
    nn.functional.mse_loss(model(x), torch.zeros(32, 2, dtype=torch.float64)).backward()
    grad = weight.grad.detach().numpy().ravel()[chosen]
    before = weight.detach().numpy().ravel()[chosen].copy()
    optimizer.step()
    update = weight.detach().numpy().ravel()[chosen] - before
    record = monitor.record()
    layer = record.layers.index("0.weight")
    np.testing.assert_array_equal(record.gradient_counts[0, layer], expected_histogram(grad))
    np.testing.assert_array_equal(record.update_counts[0, layer], expected_histogram(update))
    psi = expected_psi(optimizer, weight)[chosen]
    assert record.lr_mean[0, layer] == pytest.approx(psi.mean(), rel=1e-12)
    np.testing.assert_allclose(record.lr_quantiles[0, layer], np.quantile(psi, QUANTILE_LEVELS))
    # Aggregated counts weigh each layer's sample up to the layer's size.
    assert record.sampled.tolist() == [500, 60, 120, 2]
    _, _, counts = record.gradient_histogram()
    assert counts[0].sum() == pytest.approx(sum(p.numel() for p in model.parameters()))
    _, _, layer_counts = record.gradient_histogram("0.weight")
    np.testing.assert_allclose(layer_counts[0], expected_histogram(grad) * 6000 / 500)
    stats = record.adaptive_lr_stats()
    weights = record.numels / record.numels.sum()
    assert stats.pooled_mean()[0] == pytest.approx(stats.mean[0] @ weights)


def test_gradients_computed_by_a_closure_are_recorded():
    model = tiny_model()
    optimizer = rectified.Adam(model.parameters(), lr=0.05)
    monitor = VarianceMonitor(optimizer, every=1, bins=BINS, lo=LO, hi=HI)
    optimizer.zero_grad(set_to_none=True)  # no gradient before the step
    train(model, optimizer, 1, closure=True)
    grads = [p.grad.numpy() for p in model.parameters()]
    record = monitor.record()
    for j, g in enumerate(grads):
        np.testing.assert_array_equal(record.gradient_counts[0, j], expected_histogram(g))


def test_monitoring_does_not_change_the_trajectory():
    runs = []
    for monitored in (False, True):
        model = tiny_model()
        optimizer = rectified.RAdam(model.parameters(), lr=0.05)
        if monitored:
            VarianceMonitor(optimizer, every=1)
        train(model, optimizer, 6)
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_memory_is_bounded_by_thinning():
    model = tiny_model()
    optimizer = rectified.Adam(model.parameters(), lr=0.05)
    monitor = VarianceMonitor(optimizer, every=1, max_records=4)
    train(model, optimizer, 9)
    # Steps 1..5 -> 1, 3, 5 (every 2); then 7, 9 -> 1, 5, 9 (every 4).
    assert monitor.record().steps.tolist() == [1, 5, 9]
    assert monitor.every == 4
    train(model, optimizer, 40)
    steps = monitor.record().steps
    assert len(steps) <= 4
    assert len(set(np.diff(steps))) == 1  # still evenly spaced


def test_detach_stops_recording_and_keeps_the_record():
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    monitor = VarianceMonitor(optimizer, every=1)
    train(model, optimizer, 3)
    monitor.detach()
    train(model, optimizer, 3)
    assert monitor.record().steps.tolist() == [1, 2, 3]
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    optimizer = rectified.Ranger(model.parameters(), lr=0.05)
    monitor = VarianceMonitor(optimizer, every=2, names=model.named_parameters())
    train(model, optimizer, 7)
    path = tmp_path / "monitor.bin"  # any name: written exactly there
    monitor.save(path)
    loaded = VarianceMonitor.load(path)
    assert isinstance(loaded, MonitorRecord)
    original = monitor.record()
    assert loaded.layers == ["0.weight", "0.bias", "2.weight", "2.bias"] == original.layers
    assert loaded.info == original.info and loaded.info["optimizer"] == "Ranger"
    for name in (
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
    ):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
    for view in ("gradient_histogram", "update_histogram"):
        for a, b in zip(getattr(loaded, view)(), getattr(monitor, view)()):
            np.testing.assert_array_equal(a, b)


def test_load_rejects_a_file_that_is_not_a_record(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, steps=np.arange(3))
    with pytest.raises(ValueError, match="Invalid monitor file"):
        MonitorRecord.load(path)


def test_layers_without_gradients_are_empty_and_nan():
    model = tiny_model()
    model[2].bias.requires_grad_(False)
    optimizer = rectified.Adam(model.parameters(), lr=0.05)
    monitor = VarianceMonitor(optimizer, every=1)
    train_params = [p for p in model.parameters() if p.requires_grad]
    x, y = batch(1)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    record = monitor.record()
    assert len(train_params) == 3
    assert record.gradient_counts[0, 3].sum() == 0
    assert np.isnan(record.lr_mean[0, 3]) and not np.isnan(record.lr_mean[0, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "Invalid every value: 0"),
        ({"bins": 0}, "Invalid bins value: 0"),
        ({"sample_size": 0}, "Invalid sample_size value: 0"),
        ({"lo": 1.0, "hi": 1.0}, "Invalid lo, hi values: 1.0, 1.0"),
        ({"max_records": 1}, "Invalid max_records value: 1"),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    optimizer = rectified.Adam(tiny_model().parameters())
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        VarianceMonitor(optimizer, **kwargs)


def test_non_adam_optimizers_are_rejected():
    with pytest.raises(ValueError, match="Invalid optimizer value: SGD"):
        VarianceMonitor(torch.optim.SGD(tiny_model().parameters(), lr=0.1))
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        VarianceMonitor(object())
