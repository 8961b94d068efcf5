"""Plot functions draw into a caller's axes, return the figure, and write any matplotlib format."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bayesrnn.evaluation.calibration import reliability_bins
from bayesrnn.evaluation.forecast_plots import (
    plot_forecast_fan,
    plot_interval_reliability,
    plot_pit_histogram,
)
from bayesrnn.evaluation.plots import (
    plot_elbo_trace,
    plot_entropy_histograms,
    plot_pruning_curve,
    plot_reliability_diagram,
)
from bayesrnn.models.regressor import Forecast


@pytest.fixture
def bins():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(200, 5, generator=gen), -1)
    labels = torch.randint(0, 5, (200,), generator=gen)
    return reliability_bins(probs, labels, n_bins=7)


def test_reliability_diagram_into_one_axes_or_a_pair(bins) -> None:
    figure = Figure()
    ax = figure.subplots()
    returned = plot_reliability_diagram(bins, ax=ax)
    assert returned is figure
    assert len(ax.containers[0]) == 7  # one accuracy bar per bin
    left, right = Figure().subplots(1, 2)
    returned = plot_reliability_diagram(bins, ax=(left, right))
    assert returned is left.figure
    assert len(right.containers[0]) == 7  # counts per bin in the second panel
    with pytest.raises(ValueError, match="pair of matplotlib Axes"):
        plot_reliability_diagram(bins, ax=[left])
    with pytest.raises(ValueError, match="Axes"):
        plot_reliability_diagram(bins, ax="top")


def test_single_panel_plots_draw_into_the_given_axes() -> None:
    figure = Figure()
    grid = figure.subplots(2, 2)
    assert plot_pruning_curve([0.0, 0.5, 0.9], [80.0, 81.0, 95.0], ax=grid[0, 0]) is figure
    assert len(grid[0, 0].lines) == 1
    assert grid[0, 0].lines[0].get_xdata().tolist() == [0.0, 50.0, 90.0]
    assert plot_entropy_histograms([1.0, 2.0, 2.5], [2.0, 3.0], ax=grid[0, 1]) is figure
    assert len(grid[0, 1].get_legend().get_texts()) == 2
    assert plot_elbo_trace([-3.0, -2.0, -1.5, -1.0], ax=grid[1, 0]) is figure
    assert grid[1, 0].lines[0].get_ydata().tolist() == [-3.0, -2.0, -1.5, -1.0]
    assert plot_pit_histogram(np.linspace(0.01, 0.99, 50), bins=5, ax=grid[1, 1]) is figure
    assert len(grid[1, 1].containers[0]) == 5  # one bar per PIT bin
    with pytest.raises(ValueError, match="one matplotlib Axes"):
        plot_pruning_curve([0.0], [80.0], ax=grid[0])


def test_elbo_terms_need_two_axes() -> None:
    top, bottom = Figure().subplots(2)
    figure = plot_elbo_trace([-3.0, -2.0], kl=[1.0, 1.0], nll=[2.0, 1.0], ax=(top, bottom))
    assert figure is top.figure
    assert len(bottom.lines) == 2  # NLL and KL
    with pytest.raises(ValueError, match="pair of matplotlib Axes"):
        plot_elbo_trace([-3.0, -2.0], kl=[1.0, 1.0], ax=top)


def test_forecast_plots_into_axes() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = Forecast(torch.randn(3, 20, 1, generator=generator), torch.ones(3, 20, 1))
    observed = torch.randn(20, generator=generator)
    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert plot_forecast_fan(draws, observed, ax=left) is figure
    assert len(left.collections) == 2  # the 90% and 50% bands
    assert plot_interval_reliability(torch.rand(50, generator=generator), ax=right) is figure


def test_a_pyplot_figure_is_left_open_and_its_own(tmp_path: Path) -> None:
    figure, ax = plt.subplots()
    try:
        canvas = figure.canvas
        returned = plot_pruning_curve([0.0, 0.5], [80.0, 90.0], tmp_path / "grid.svg", ax=ax)
        assert returned is figure
        assert plt.fignum_exists(figure.number)  # not closed
        assert figure.canvas is canvas  # its canvas not swapped for ours
        assert (tmp_path / "grid.svg").read_bytes().lstrip().startswith(b"<?xml")
    finally:
        plt.close(figure)


def test_without_path_or_ax_a_new_figure_is_returned_and_nothing_written(tmp_path) -> None:
    before = plt.get_fignums()
    figure = plot_elbo_trace([-3.0, -2.0, -1.0])
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    assert plt.get_fignums() == before  # not registered with pyplot: freed once dropped
    figure.savefig(tmp_path / "again.png")  # still a working figure
    assert (tmp_path / "again.png").stat().st_size > 1000


@pytest.mark.parametrize(("suffix", "magic"), [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_other_formats_by_suffix(tmp_path: Path, bins, suffix: str, magic: bytes) -> None:
    path = tmp_path / f"reliability{suffix}"
    figure = plot_reliability_diagram(bins, path)
    assert isinstance(figure, Figure)
    assert path.read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_unsupported_suffix_is_a_clear_error(tmp_path: Path, bins) -> None:
    for name in ("plot.docx", "plot"):
        with pytest.raises(ValueError, match=r"suffix matplotlib can write \(.*pdf.*svg"):
            plot_reliability_diagram(bins, tmp_path / name)
    with pytest.raises(ValueError, match="path must be a str"):
        plot_pruning_curve([0.0], [80.0], 42)
    assert list(tmp_path.iterdir()) == []
