"""The lab's plots and the ``rectified variance`` command, end to end in quick mode."""

import csv
import json
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from rectified.cli import main
from rectified.variance import (
    adaptive_lr_variance,
    adaptive_lr_variance_first_order,
    rectification_term,
    rho_t,
)
from rectified.variance.command import write_lab
from rectified.variance.plots import (
    plot_histogram_heatmap,
    plot_rectification_vs_warmup,
    plot_theory_vs_simulation,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    return out, write_lab(out, quick=True)


def test_heatmap_draws_the_counts():
    steps = np.array([1, 3, 7])
    edges = np.linspace(-4, 0, 5)
    counts = np.arange(12).reshape(3, 4)
    ax = plot_histogram_heatmap(steps, edges, counts, title="t")
    mesh = ax.collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(4, 3), np.log10(1 + counts.T))
    assert ax.get_title() == "t"
    with pytest.raises(ValueError, match="Invalid counts shape"):
        plot_histogram_heatmap(steps, edges, counts[:, :3])


def test_theory_and_rectification_plots_draw_their_inputs():
    rhos = np.array([5.0, 10.0, 100.0])
    theory = np.array([adaptive_lr_variance(r) for r in rhos])
    ax = plot_theory_vs_simulation(rhos, theory * 1.01, rhos, theory)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), theory)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), theory * 1.01)
    steps = np.arange(1, 50)
    ax = plot_rectification_vs_warmup(steps, beta2s=(0.99,), warmup_steps=(20,))
    expected = [rectification_term(int(t), 0.99, 4.0) for t in steps]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), np.minimum(steps, 20) / 20)
    with pytest.raises(ValueError, match="Invalid warmup_steps value"):
        plot_rectification_vs_warmup(steps, beta2s=(0.99, 0.999), warmup_steps=(20,))


def test_lab_writes_its_files_and_returns_the_numbers(lab):
    out, result = lab
    for path in [*result["figures"].values(), *result["tables"].values(), result["json"]]:
        assert (out / path.split("/")[-1]).stat().st_size > 0
    assert set(result["figures"]) == {
        "variance_vs_rho",
        "variance_vs_step",
        "rectification_vs_warmup",
        "histograms",
    }
    assert all(path.endswith(".png") for path in result["figures"].values())
    with open(result["json"]) as file:
        saved = json.load(file)
    assert saved["numbers"] == json.loads(json.dumps(result["numbers"]))
    numbers = result["numbers"]
    assert numbers["variance_vs_rho"]["decreasing_in_rho"] is True
    # t = 1, 2 have infinite variance: their sample variances dwarf t = 10's
    step = numbers["variance_vs_step"]
    assert step["sma_variance_t1"] > 100 * step["sma_variance_t10"]


def test_lab_tables_hold_the_closed_forms(lab):
    _, result = lab
    with open(result["tables"]["variance_vs_rho"]) as file:
        rows = list(csv.DictReader(file))
    assert any(float(row["rho"]) == 1999.0 for row in rows)
    for row in rows:
        rho = float(row["rho"])
        assert float(row["var_theorem"]) == pytest.approx(adaptive_lr_variance(rho), rel=1e-12)
        assert float(row["var_first_order"]) == pytest.approx(
            adaptive_lr_variance_first_order(rho), rel=1e-12
        )
        # quick mode uses 20,000 samples: 8 standard errors or 15% bounds the heaviest tails
        tolerance = max(8 * float(row["monte_carlo_std_error"]), 0.15 * float(row["var_theorem"]))
        assert abs(float(row["var_monte_carlo"]) - float(row["var_theorem"])) < tolerance
    with open(result["tables"]["rectification"]) as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        t, beta2 = int(row["step"]), float(row["beta2"])
        assert float(row["rho_t"]) == pytest.approx(rho_t(t, beta2))
        assert float(row["r_t"]) == pytest.approx(rectification_term(t, beta2, 4.0))
        if float(row["rho_t"]) <= 4:
            assert math.isnan(float(row["rectified_variance_ratio"]))


def test_lab_monitor_records_load(lab):
    _, result = lab
    from rectified.variance import MonitorRecord

    assert set(result["records"]) == {"adam", "adam_warmup", "radam"}
    for path in result["records"].values():
        record = MonitorRecord.load(path)
        steps, edges, counts = record.gradient_histogram()
        assert counts.shape == (len(steps), len(edges) - 1) and len(steps) > 0


def test_command_line(tmp_path, capsys):
    assert main(["variance", "--out", str(tmp_path / "lab"), "--quick"]) == 0
    assert "decreasing in rho: True" in capsys.readouterr().out
    assert (tmp_path / "lab" / "variance_lab.json").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["variance", "--out", str(blocker), "--quick"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
