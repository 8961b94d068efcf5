"""``plot_horizon_scores``: one line per forecaster, the data it was given, clear errors."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from bayesrnn.evaluation.horizon_plots import plot_horizon_scores

SCORES = {
    "bayesrnn": {"crps": [1.0, 2.0, 3.0], "coverage_90": [0.9, 0.8, 0.7]},
    "persistence": {"crps": [1.5, 2.5, 3.5], "coverage_90": [0.95, 0.9, 0.85]},
}


def test_each_forecaster_is_a_line_of_its_own_values(tmp_path):
    figure = plot_horizon_scores(SCORES, tmp_path / "horizons.png", title="t")
    left, right = figure.axes
    assert [line.get_label() for line in left.lines] == ["bayesrnn", "persistence"]
    np.testing.assert_array_equal(left.lines[1].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(left.lines[1].get_ydata(), [1.5, 2.5, 3.5])
    np.testing.assert_array_equal(right.lines[0].get_ydata(), [0.9, 0.8, 0.7])
    assert right.lines[-1].get_ydata()[0] == 0.9  # the nominal level
    assert (tmp_path / "horizons.png").read_bytes()[:4] == b"\x89PNG"


def test_it_draws_into_given_axes():
    figure = Figure()
    pair = figure.subplots(1, 2)
    assert plot_horizon_scores(SCORES, ax=pair) is figure
    assert len(pair[0].lines) == 2


@pytest.mark.parametrize(
    ("scores", "fragment"),
    [
        ({}, "at least one forecaster"),
        ({"a": {"crps": [1.0]}}, "per-horizon 'coverage_90' list"),
        ({"a": {"crps": [1.0, float("nan")], "coverage_90": [0.9, 0.9]}}, "finite numbers"),
        (
            {"a": SCORES["bayesrnn"], "b": {"crps": [1.0], "coverage_90": [0.9]}},
            "the same number of horizons",
        ),
    ],
)
def test_bad_scores_are_errors(scores, fragment):
    with pytest.raises(ValueError, match=fragment):
        plot_horizon_scores(scores)
