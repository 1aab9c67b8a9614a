"""The lesson plots draw what they are given: one bar per policy and failure, one curve point per beta."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from helpers import evaluate, optimal, plots, world  # noqa: E402


def _card(behaviour_of):
    """A scorecard of made-up samples: each test prompt answered with the behaviour ``behaviour_of(prompt)``."""
    prompts = list(world.prompts("test"))[::10]
    texts = [world.response(p, behaviour_of(p)) for p in prompts]
    return evaluate.score_samples(evaluate.Samples(prompts, texts, [True] * len(texts), [], []))


def test_failure_rate_bars_have_the_scorecards_heights():
    cards = {"reference": _card(lambda p: "insult"),
             "sft": _card(lambda p: world.GOOD_DEMONSTRATION[p.category])}
    ax = plots.plot_failure_rates(cards)
    heights = sorted(round(bar.get_width(), 6) for bar in ax.patches)
    expected = sorted(round(c.rates[f].value, 6) for c in cards.values() for f in plots.FAILURE_LABELS)
    assert heights == expected
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(cards)
    plt.close(ax.figure)


def test_frontier_plot_draws_every_point_and_each_policy():
    g = torch.Generator().manual_seed(0)
    ref = torch.softmax(torch.randn(4, 5, generator=g), -1)
    rewards = torch.randn(4, 5, generator=g)
    points = optimal.frontier(ref, rewards, [0.1, 1.0, 10.0])
    ax = plots.plot_frontier(points, marks=(1.0,), policies={"reference": (0.0, 0.1)}, best=1.0)
    curve = ax.lines[0]
    assert sorted(curve.get_xdata()) == sorted(p["kl"] for p in points)
    assert "reference" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.get_text() == "β = 1" for t in ax.texts)
    plt.close(ax.figure)
