"""Plots used across lessons, with one palette so that a method or behaviour has the same colour everywhere."""
from __future__ import annotations

import matplotlib.pyplot as plt

from . import world

# one colour per behaviour: good answers in greens/blues, failures in reds/oranges, malformed grey
BEHAVIOUR_COLOURS = {
    "correct": "#1b9e77", "idk": "#66a61e", "refusal": "#7570b3", "verbose": "#a6cee3",
    "wrong": "#e6ab02", "fabrication": "#d95f02", "harmful": "#e7298a", "insult": "#b2182b",
    world.MALFORMED: "#999999",
}
# one colour per method, for every lesson's comparison plots
METHOD_COLOURS = {"reference": "#666666", "sft": "#a6761d", "best_of_n": "#1f78b4", "ppo": "#e7298a",
                  "dpo": "#1b9e77", "optimal": "#000000"}


def plot_behaviours(card, title: str = "What the model does, per prompt category", ax=None):
    """Stacked bars: the share of each behaviour in each prompt category of a :class:`~helpers.evaluate.Scorecard`."""
    ax = ax or plt.subplots(figsize=(7, 3.2))[1]
    cats = list(card.behaviours)
    for i, cat in enumerate(cats):
        left = 0.0
        for b, rate in card.behaviours[cat].items():
            if rate.count == 0:
                continue
            ax.barh(i, rate.value, left=left, color=BEHAVIOUR_COLOURS[b], edgecolor="white",
                    label=b if b not in ax.get_legend_handles_labels()[1] else None)
            if rate.value > 0.07:
                ax.text(left + rate.value / 2, i, f"{100 * rate.value:.0f}%", ha="center", va="center",
                        fontsize=8, color="white")
            left += rate.value
    ax.set_yticks(range(len(cats)), [f"{c}\n(n={next(iter(card.behaviours[c].values())).n})" for c in cats])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of sampled responses (test split, T = 1)")
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.figure.tight_layout()
    return ax
