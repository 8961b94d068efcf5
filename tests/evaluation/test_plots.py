"""Plot writers produce real PNG files atomically, without touching pyplot's global state."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bayesrnn.evaluation.calibration import reliability_bins
from bayesrnn.evaluation.plots import (
    plot_elbo_trace,
    plot_entropy_histograms,
    plot_pruning_curve,
    plot_reliability_diagram,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, returned: Figure) -> None:
    assert isinstance(returned, Figure)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000
    # Only the target is left: the temporary file was moved into place, not copied.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.fixture
def bins():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(200, 5, generator=gen), -1)
    labels = torch.randint(0, 5, (200,), generator=gen)
    return reliability_bins(probs, labels, n_bins=10)


def test_reliability_diagram(tmp_path: Path, bins) -> None:
    path = tmp_path / "new" / "dir" / "reliability.png"
    _assert_png(path, plot_reliability_diagram(bins, path, title="test"))


def test_reliability_diagram_mass_bins_as_string_path(tmp_path: Path) -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    mass = reliability_bins(probs, torch.tensor([0, 1, 1]), n_bins=3, strategy="mass")
    path = tmp_path / "mass.png"
    _assert_png(path, plot_reliability_diagram(mass, str(path)))


def test_entropy_histograms(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    path = tmp_path / "entropy.png"
    in_entropy = torch.rand(300, generator=gen)
    out_entropy = np.random.default_rng(0).uniform(0.5, 2.0, size=(10, 30))  # any shape
    _assert_png(path, plot_entropy_histograms(in_entropy, out_entropy, path))


def test_entropy_histograms_identical_values(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    _assert_png(path, plot_entropy_histograms([1.0, 1.0], [1.0], path, labels=("fwd", "rev")))


def test_pruning_curve(tmp_path: Path) -> None:
    path = tmp_path / "pruning.png"
    _assert_png(path, plot_pruning_curve([0.0, 0.5, 0.8, 0.95], [78.0, 78.2, 79.0, 110.0], path))


@pytest.mark.parametrize("with_terms", [False, True])
def test_elbo_trace(tmp_path: Path, with_terms: bool) -> None:
    steps = torch.arange(1, 51, dtype=torch.float64)
    nll, kl = 100.0 / steps, torch.full((50,), 3.0)
    path = tmp_path / "elbo.png"
    terms = {"kl": kl, "nll": nll} if with_terms else {}
    _assert_png(path, plot_elbo_trace(-(nll + kl), path, **terms))


def test_overwrites_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "pruning.png"
    path.write_bytes(b"old")
    _assert_png(path, plot_pruning_curve([0.0, 0.5], [80.0, 90.0], path))


def test_no_pyplot_figures_left_open(tmp_path: Path, bins) -> None:
    before = plt.get_fignums()
    plot_reliability_diagram(bins, tmp_path / "r.png")
    plot_elbo_trace([1.0, 2.0], tmp_path / "e.png")
    assert plt.get_fignums() == before


def test_bad_inputs_raise(tmp_path: Path, bins) -> None:
    with pytest.raises(ValueError, match="suffix matplotlib can write"):
        plot_pruning_curve([0.0], [80.0], tmp_path / "curve.xyz")
    with pytest.raises(ValueError, match="bins"):
        plot_reliability_diagram({"ece": 0.1}, tmp_path / "r.png")
    with pytest.raises(ValueError, match="fractions"):
        plot_pruning_curve([0.0, 1.5], [80.0, 90.0], tmp_path / "p.png")
    with pytest.raises(ValueError, match="perplexities"):
        plot_pruning_curve([0.0, 0.5], [80.0], tmp_path / "p.png")
    with pytest.raises(ValueError, match="perplexities"):
        plot_pruning_curve([0.0, 0.5], [80.0, float("nan")], tmp_path / "p.png")
    with pytest.raises(ValueError, match="in_entropy"):
        plot_entropy_histograms([], [1.0], tmp_path / "h.png")
    with pytest.raises(ValueError, match="labels"):
        plot_entropy_histograms([1.0], [1.0], tmp_path / "h.png", labels=("only one",))
    with pytest.raises(ValueError, match="elbo"):
        plot_elbo_trace([], tmp_path / "e.png")
    with pytest.raises(ValueError, match="kl"):
        plot_elbo_trace([1.0, 2.0], tmp_path / "e.png", kl=[1.0])
    assert list(tmp_path.iterdir()) == []  # nothing written for rejected input


def test_elbo_trace_per_item_with_epoch_lines(tmp_path):
    path = tmp_path / "per-item.png"
    elbo, kl, nll = [-40.0, -30.0, -20.0, -12.0], [10.0, 8.0, 6.0, 4.0], [30.0, 22.0, 14.0, 8.0]
    written = plot_elbo_trace(elbo, path, kl=kl, nll=nll, items=[10, 10, 10, 4], epoch_starts=[2])
    _assert_png(path, written)
    with pytest.raises(ValueError, match="items"):
        plot_elbo_trace(elbo, tmp_path / "x.png", items=[10, 0, 10, 4])
    with pytest.raises(ValueError, match="items"):
        plot_elbo_trace(elbo, tmp_path / "x.png", items=[10, 10])


def test_elbo_per_item_has_no_dip_at_a_short_last_window() -> None:
    # two epochs of four windows, the last one short: the data term is 2 nats per token and
    # each window carries a 1/C share (1 nat) of the epoch's KL whatever its length
    items = torch.tensor([20.0, 20.0, 20.0, 5.0] * 2)
    nll, kl = 2.0 * items, torch.ones(8)
    figure = plot_elbo_trace(-(nll + kl), kl=kl, nll=nll, items=items, epoch_starts=[4])
    elbo = figure.axes[0].lines[0].get_ydata()
    per_token_kl = 4 / 65  # the epoch's KL (4 nats) over its 65 tokens
    np.testing.assert_allclose(elbo, -(2.0 + per_token_kl), rtol=1e-12)
    kl_line = [line for line in figure.axes[1].lines if line.get_label() == "KL"]
    if not kl_line:  # seaborn's legend entries: the second term drawn is the KL
        kl_line = [figure.axes[1].lines[1]]
    np.testing.assert_allclose(kl_line[0].get_ydata(), per_token_kl, rtol=1e-12)
