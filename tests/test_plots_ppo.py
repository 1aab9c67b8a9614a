"""Lesson 03's plots draw what they are given, and the live PPO plot stays quiet under HELPERS_QUIET."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from helpers import plots  # noqa: E402

HISTORY = [{"iteration": 0, "val/gold_reward": -0.3}] + [
    {"iteration": i, "objective/kl": kl, "objective/scores": score, "objective/gold": gold,
     "objective/entropy": 3 - i / 4}
    for i, (kl, score, gold) in enumerate([(0.0, -0.4, -0.3), (1.0, 0.2, 0.1), (2.5, 0.8, 0.3), (2.0, 1.0, 0.0),
                                           (4.0, 1.2, -0.5)], start=1)]


def test_clipped_surrogate_is_flat_beyond_the_clip_on_the_side_the_advantage_favours():
    axes = plots.plot_clipped_surrogate(0.2)
    for ax, sign in zip(axes, (1, -1)):
        ratio, objective = ax.get_lines()[1].get_data()
        beyond = (ratio > 1.25) if sign > 0 else (ratio < 0.75)
        assert max(objective[beyond]) - min(objective[beyond]) < 1e-6
        inside = (ratio > 0.85) & (ratio < 1.15)
        assert abs(objective[inside] - sign * ratio[inside]).max() < 1e-5
    plt.close(axes[0].figure)


def test_history_plot_draws_one_point_per_iteration_and_the_validation_checks():
    axes = plots.plot_ppo_history(HISTORY)
    assert len(axes) == len(plots.PPO_PANELS)
    assert list(axes[0].get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]
    gold_panel = axes[list(plots.PPO_PANELS).index("objective/gold")]
    assert list(gold_panel.get_lines()[1].get_xdata()) == [0]
    plt.close(axes[0].figure)


def test_overoptimisation_plot_marks_the_gold_peak():
    axes = plots.plot_overoptimisation(HISTORY)
    assert "iteration 3" in axes[0].get_title() and "KL 2.5" in axes[1].get_title()
    plt.close(axes[0].figure)


def test_live_plot_is_quiet_under_helpers_quiet_and_draws_once_at_the_end(monkeypatch):
    monkeypatch.setenv("HELPERS_QUIET", "1")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    live = plots.LivePPOPlot("t")
    for row in HISTORY:
        live(row)
    assert shown == [] and live.rows == HISTORY
    assert live.finish() is None
    assert shown == [live.figure]


@pytest.mark.parametrize("quiet", ["", "0"])
def test_live_plot_draws_after_every_training_row_when_not_quiet(monkeypatch, quiet):
    monkeypatch.setenv("HELPERS_QUIET", quiet)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    live = plots.LivePPOPlot("t")
    for row in HISTORY:
        live(row)
    assert len(shown) == len(HISTORY) - 1   # not for the validation-only row 0; no handle outside a kernel


def test_update_size_plot_draws_each_run_and_shades_the_healthy_ranges():
    runs = {"a": [{"iteration": i, "policy/approxkl": 0.01 * i, "policy/clipfrac": 0.05} for i in (1, 2, 3)],
            "b": [{"iteration": 1}, {"iteration": 2, "policy/approxkl": 0.5, "policy/clipfrac": 0.0}]}
    axes = plots.plot_update_sizes(runs)
    assert [list(line.get_xdata()) for line in axes[0].get_lines()] == [[1, 2, 3], [2]]
    band = axes[0].patches[0]        # the shaded span: a rectangle from 0 to the healthy limit
    assert band.get_y() + band.get_height() == pytest.approx(plots.HEALTHY_APPROXKL[1])
    plt.close(axes[0].figure)


def test_ablation_plot_has_one_bar_per_row_on_each_panel():
    rows = [{"name": n, "test": {"gold_reward": g, "kl": 1.0, "malformed": 0.02}}
            for n, g in (("all on", 0.5), ("off", -0.4), ("other", 0.6))]
    axes = plots.plot_ablation(rows)
    assert [len(ax.patches) for ax in axes] == [3, 3, 3]
    assert sorted(p.get_width() for p in axes[0].patches) == [-0.4, 0.5, 0.6]
    plt.close(axes[0].figure)


def test_gain_fraction_plot_draws_the_curves_and_the_optimum():
    ax = plots.plot_gain_fraction({"run": [{"iteration": i, "gain_fraction": i / 10} for i in range(1, 6)]})
    assert list(ax.get_lines()[0].get_ydata()) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert list(ax.get_lines()[1].get_ydata()) == [1.0, 1.0]
    plt.close(ax.figure)
