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
                  "dpo": "#1b9e77", "grpo": "#d95f02", "rloo": "#7570b3", "optimal": "#000000"}


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


# the failure rates of evaluate.FAILURES that lessons compare, each with the prompts it is a rate of
FAILURE_LABELS = {
    "harmful_compliance": "harmful compliance\n(of harmful prompts)",
    "false_answer": "false answer\n(of answerable prompts)",
    "fabrication": "fabrication\n(of unanswerable prompts)",
    "insult": "insult\n(of all prompts)",
}
# colours for policies that have none in METHOD_COLOURS, used in order
EXTRA_COLOURS = ("#e6ab02", "#6a3d9a", "#b15928", "#fb9a99")


def _method_colours(names) -> dict[str, str]:
    extra = iter(EXTRA_COLOURS)
    return {name: METHOD_COLOURS.get(name) or next(extra, "#999999") for name in names}


def plot_failure_rates(cards: dict, title: str = "Failure rates", ax=None,
                       failures=tuple(FAILURE_LABELS)):
    """Grouped bars: each failure rate of each policy, with its 95 % interval.

    Args:
        cards: policy name -> :class:`~helpers.evaluate.Scorecard`; names in ``METHOD_COLOURS`` keep their colour.
        failures: which of the scorecard's rates to show, top to bottom.
    """
    ax = ax or plt.subplots(figsize=(7, 0.4 + 0.25 * len(cards) * len(failures)))[1]
    colours = _method_colours(cards)
    height = 0.8 / len(cards)
    for j, (name, card) in enumerate(cards.items()):
        for i, failure in enumerate(failures):
            rate = card.rates[failure]
            lo, hi = rate.interval
            y = i + (j - (len(cards) - 1) / 2) * height
            ax.barh(y, rate.value, height=height * 0.9, color=colours[name], label=name if i == 0 else None)
            ax.errorbar(rate.value, y, xerr=[[rate.value - lo], [hi - rate.value]], color="black", lw=0.8,
                        capsize=2)
            ax.text(hi + 0.01, y, f"{100 * rate.value:.0f}%", va="center", fontsize=8)
    ax.set_yticks(range(len(failures)), [FAILURE_LABELS.get(f, f) for f in failures], fontsize=9)
    ax.invert_yaxis()
    highest = max(card.rates[f].interval[1] for card in cards.values() for f in failures)
    ax.set_xlim(0, min(1.0, highest + 0.12))
    ax.xaxis.set_major_formatter(lambda x, _: f"{100 * x:.0f}%")
    ax.set_xlabel("rate (test split, one sample per prompt at T = 1; bars: 95 % interval)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.figure.tight_layout()
    return ax


def plot_frontier(points: list[dict], marks=(), policies: dict | None = None, best: float | None = None,
                  title: str = "The exact reward-KL frontier", ax=None):
    """Mean reward against KL(pi || pi_ref) along the frontier of :func:`helpers.optimal.frontier`.

    Args:
        points: the frontier's dicts (``beta``, ``reward``, ``kl``), any order.
        marks: betas to label on the curve (the nearest computed point is marked).
        policies: name -> (kl, reward) of other policies to place on the same axes as dots.
        best: if given, a dashed line at the best reward any policy can reach.
    """
    ax = ax or plt.subplots(figsize=(6, 3.6))[1]
    points = sorted(points, key=lambda p: p["kl"])
    ax.plot([p["kl"] for p in points], [p["reward"] for p in points], color=METHOD_COLOURS["optimal"], lw=1.5,
            label=r"optimal policy $\pi^*_\beta$")
    widest = max(p["kl"] for p in points)
    for beta in marks:
        p = min(points, key=lambda q: abs(q["beta"] - beta) / beta)
        ax.plot(p["kl"], p["reward"], "o", color=METHOD_COLOURS["optimal"], ms=4)
        # labels go below-right of the curve, except near its flat end where they go above-left
        right = p["kl"] < 0.7 * widest
        ax.annotate(f"β = {p['beta']:.2g}", (p["kl"], p["reward"]), textcoords="offset points",
                    xytext=(6, -10) if right else (-6, 8), ha="left" if right else "right", fontsize=8)
    colours = _method_colours(policies or {})
    for name, (kl, reward) in (policies or {}).items():
        ax.plot(kl, reward, "D", color=colours[name], ms=7, mec="white", label=name, zorder=3)
    if best is not None:
        ax.axhline(best, color="#999999", ls="--", lw=1, label="best possible")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.06 * (high - low))  # room for the labels above the flat end
    ax.set_xlabel(r"KL($\pi$ ‖ $\pi_{\mathrm{ref}}$) per prompt (nats)")
    ax.set_ylabel("mean gold reward")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.figure.tight_layout()
    return ax


def plot_training_curves(history: list[dict], title: str = "Training and validation loss", ax=None,
                         best_step: int | None = None):
    """Training and validation loss against step, from a training history (rows with ``step``, ``train_loss``,
    ``val_loss``), with the kept step marked."""
    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], "o-", ms=3, color="#1f78b4", label="training")
    ax.plot(steps, [h["val_loss"] for h in history], "o-", ms=3, color="#d95f02", label="validation")
    if best_step is not None:
        ax.axvline(best_step, color="#999999", ls="--", lw=1, label=f"kept: step {best_step}")
    ax.set_xlabel("training step")
    ax.set_ylabel("Bradley–Terry loss (nats per pair)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


def plot_reliability(rows: list[dict], title: str = "Reliability diagram", ax=None):
    """Observed frequency against predicted probability per bin (rows of :func:`helpers.reward.reliability`);
    a calibrated model lies on the diagonal. Marker area shows how many pairs a bin holds."""
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1, label="perfectly calibrated")
    most = max(r["count"] for r in rows)
    ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], "-", color="#1f78b4", lw=1)
    ax.scatter([r["predicted"] for r in rows], [r["observed"] for r in rows], s=[10 + 140 * r["count"] / most
               for r in rows], color="#1f78b4", zorder=3, label="reward model (area: pairs in bin)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(first preferred)")
    ax.set_ylabel("observed share first preferred")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    ax.figure.tight_layout()
    return ax


def plot_best_of_n(curves: dict, title: str = "Best-of-N", axes=None):
    """Two panels against N (log scale): the reward model's score of the kept response, and its gold reward with
    the 95 % interval. ``curves``: name -> :class:`helpers.reward.BestOfN`."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(8, 3.2))[1]
    colours = _method_colours(curves)
    for name, c in curves.items():
        axes[0].plot(c.ns, [c.proxy[n] for n in c.ns], "o-", color=colours[name], label=name)
        axes[1].plot(c.ns, [c.gold[n] for n in c.ns], "o-", color=colours[name], label=name)
        axes[1].fill_between(c.ns, [c.gold_interval[n][0] for n in c.ns], [c.gold_interval[n][1] for n in c.ns],
                             color=colours[name], alpha=0.15)
    for ax, what in zip(axes, ("reward-model score (proxy)", "gold reward")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(next(iter(curves.values())).ns, [str(n) for n in next(iter(curves.values())).ns])
        ax.set_xlabel("N (samples per prompt)")
        ax.set_ylabel(f"mean {what}")
        ax.legend(fontsize=8)
    axes[0].set_title(title)
    axes[0].figure.tight_layout()
    return axes


# ----------------------------------------------------------------------------------------------------------------
# lesson 03: PPO

def plot_clipped_surrogate(clip_range: float = 0.2, title: str = "PPO's clipped surrogate", axes=None):
    """The per-token objective min(r A, clip(r, 1 - eps, 1 + eps) A) against the ratio r, for A = +1 and A = -1,
    computed by :func:`helpers.ppo.clipped_policy_loss` (negated) on a grid, beside the unclipped r A."""
    import torch
    from .ppo import clipped_policy_loss
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(8, 2.8), sharey=False)[1]
    ratios = torch.linspace(0.3, 1.8, 301)
    ones = torch.ones(1, 1)
    for ax, a in zip(axes, (1.0, -1.0)):
        clipped = [-float(clipped_policy_loss(torch.log(r).view(1, 1), torch.zeros(1, 1), a * ones, ones,
                                              clip_range)[0]) for r in ratios]
        ax.plot(ratios, a * ratios, color="#999999", ls="--", lw=1, label="unclipped  r·A")
        ax.plot(ratios, clipped, color=METHOD_COLOURS["ppo"], lw=2, label="clipped (PPO)")
        for edge in (1 - clip_range, 1 + clip_range):
            ax.axvline(edge, color="#cccccc", lw=0.8)
        ax.axvline(1.0, color="#666666", lw=0.8, ls=":")
        ax.set_xlabel(r"probability ratio $r = \pi_\theta / \pi_{\mathrm{old}}$")
        ax.set_ylabel("objective (to maximise)")
        flat = "above 1 + ε" if a > 0 else "below 1 − ε"
        ax.set_title(f"A = {a:+.0f}: flat (no gradient) {flat}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left" if a > 0 else "upper right")
    axes[0].figure.suptitle(title, y=1.02)
    axes[0].figure.tight_layout()
    return axes


# what a PPO history's panels show: metric -> (axis label, colour)
PPO_PANELS = {
    "objective/scores": ("reward-model score (batch)", "#1f78b4"),
    "objective/gold": ("gold reward (batch)", "#1b9e77"),
    "objective/kl": ("KL(π ‖ π_ref), nats", METHOD_COLOURS["ppo"]),
    "objective/entropy": ("entropy, nats per response", "#7570b3"),
}


def plot_ppo_history(history: list[dict], title: str = "PPO, iteration by iteration", axes=None,
                     panels: dict = PPO_PANELS):
    """One panel per metric of a :func:`helpers.rlhf.train_ppo` history against the iteration; the gold panel also
    shows the validation checks (``val/gold_reward``) as squares."""
    axes = axes if axes is not None else plt.subplots(1, len(panels), figsize=(3 * len(panels), 2.6))[1]
    rows = [h for h in history if "objective/kl" in h]
    checks = [h for h in history if "val/gold_reward" in h]
    for ax, (key, (label, colour)) in zip(axes, panels.items()):
        ax.plot([h["iteration"] for h in rows], [h[key] for h in rows], "o-", ms=3, color=colour, label="batch")
        if key == "objective/gold" and checks:
            ax.plot([h["iteration"] for h in checks], [h["val/gold_reward"] for h in checks], "s", ms=5,
                    color="#333333", mfc="white", label="validation")
            ax.legend(fontsize=7)
        ax.set_xlabel("iteration")
        ax.set_title(label, fontsize=9)
    axes[0].figure.suptitle(title, y=1.02)
    axes[0].figure.tight_layout()
    return axes


class LivePPOPlot:
    """A :func:`helpers.rlhf.train_ppo` callback that redraws :func:`plot_ppo_history` after every iteration.

    In JupyterLab the figure updates in place while PPO trains. When the environment variable HELPERS_QUIET is set
    (tests, nbval, ``make notebooks``) it only collects the rows, and :meth:`finish` draws the figure once, so an
    executed notebook holds exactly one figure either way. Usage::

        live = LivePPOPlot("PPO against the course reward model")
        result = rlhf.train_ppo(..., callback=live)
        live.finish()
    """

    def __init__(self, title: str = "PPO, iteration by iteration", panels: dict = PPO_PANELS):
        import os
        self.title, self.panels, self.rows = title, panels, []
        self.quiet = os.environ.get("HELPERS_QUIET", "") not in ("", "0")
        self._handle = None

    def _figure(self):
        fig, axes = plt.subplots(1, len(self.panels), figsize=(3 * len(self.panels), 2.6))
        plot_ppo_history(self.rows, self.title, axes, self.panels)
        plt.close(fig)  # shown through display() only, never a second time by the inline backend
        return fig

    def __call__(self, row: dict) -> None:
        self.rows.append(row)
        if self.quiet or not any("objective/kl" in r for r in self.rows):
            return
        from IPython.display import display
        if self._handle is None:
            self._handle = display(self._figure(), display_id=True)
        else:
            self._handle.update(self._figure())

    def finish(self) -> None:
        """Draw the final figure (in place of the live one, if there was one); it stays in ``self.figure``."""
        from IPython.display import display
        self.figure = self._figure()
        if self._handle is not None:
            self._handle.update(self.figure)
        else:
            display(self.figure)


def plot_overoptimisation(history: list[dict], title: str = "Over-optimisation", axes=None):
    """Proxy (reward-model score) and gold reward of each PPO batch, against the iteration and against the KL to
    the reference (points joined in order of KL); the gold reward's peak is marked. Two y axes per panel: the two
    rewards have different units."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(10, 3))[1]
    rows = [h for h in history if "objective/kl" in h]
    peak = max(rows, key=lambda h: h["objective/gold"])
    by_kl = sorted(rows, key=lambda h: h["objective/kl"])   # the batch KL is noisy: against KL, draw in its order
    for ax, key, xlabel, rows in ((axes[0], "iteration", "iteration", rows),
                                  (axes[1], "objective/kl", "KL(π ‖ π_ref), nats", by_kl)):
        x = [h[key] for h in rows]
        ax.plot(x, [h["objective/scores"] for h in rows], "o-", ms=3, color="#1f78b4", label="proxy: reward model")
        ax.set_ylabel("reward-model score", color="#1f78b4")
        twin = ax.twinx()
        twin.plot(x, [h["objective/gold"] for h in rows], "s-", ms=3, color="#1b9e77", label="gold reward")
        twin.plot(peak[key], peak["objective/gold"], "*", ms=14, color="#1b9e77", mec="black")
        twin.set_ylabel("gold reward", color="#1b9e77")
        ax.axvline(peak[key], color="#999999", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        lines = ax.get_lines()[:1] + twin.get_lines()[:1]
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="lower right")
    axes[0].set_title(f"gold peaks at iteration {peak['iteration']}", fontsize=10)
    axes[1].set_title(f"... at KL {peak['objective/kl']:.1f} nats; the proxy keeps rising", fontsize=10)
    axes[0].figure.suptitle(title, y=1.02)
    axes[0].figure.tight_layout()
    return axes


# per-update sizes a PPO run should stay within (lesson 03): approx-KL of the order of PPO's KL targets
# (Schulman et al. 2017 try d_targ = 0.003, 0.01, 0.03; Spinning Up stops an update past 1.5 x 0.01), and a clip
# fraction well below one half (a rule of thumb: near 0.5 every second token is pushing past the clip)
HEALTHY_APPROXKL = (0.0, 0.1)
HEALTHY_CLIPFRAC = (0.0, 0.3)


def plot_update_sizes(histories: dict, title: str = "How far each batch moved the policy", axes=None):
    """``policy/approxkl`` and ``policy/clipfrac`` per iteration for each named history (name -> a
    :func:`helpers.rlhf.train_ppo` history), with the healthy ranges shaded green. approx-KL on a log axis."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(10, 2.8))[1]
    colours = dict(zip(histories, ("#e7298a", "#1f78b4", "#666666", *EXTRA_COLOURS)))
    for ax, key, band, label in ((axes[0], "policy/approxkl", HEALTHY_APPROXKL, "approx-KL(π_old ‖ π) per update, nats"),
                                 (axes[1], "policy/clipfrac", HEALTHY_CLIPFRAC, "clip fraction (share of tokens)")):
        ax.axhspan(*band, color="#1b9e77", alpha=0.12, label="healthy range")
        for name, history in histories.items():
            rows = [h for h in history if key in h]
            ax.plot([h["iteration"] for h in rows], [h[key] for h in rows], "o-", ms=3, color=colours[name],
                    label=name)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label, fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, max(0.5, axes[1].get_ylim()[1]))
    axes[0].legend(fontsize=7)
    axes[0].figure.suptitle(title, y=1.02)
    axes[0].figure.tight_layout()
    return axes


def plot_ablation(rows: list[dict], title: str = "One detail off at a time", axes=None):
    """Test gold reward, KL to the reference and malformed rate of each row of lesson 03's PPO ablation
    (:func:`helpers.bench.ppo.load_ablation`), as horizontal bars; the first row (all details on) is drawn in the
    PPO colour and marked by a dotted line on every panel."""
    panels = (("gold_reward", "gold reward (test)"), ("kl", "KL(π ‖ π_ref), nats"), ("malformed", "malformed (share)"))
    axes = axes if axes is not None else plt.subplots(1, len(panels), figsize=(11, 0.32 * len(rows) + 1.2),
                                                      sharey=True)[1]
    names = [r["name"] for r in rows][::-1]
    for ax, (key, label) in zip(axes, panels):
        values = [r["test"][key] for r in rows][::-1]
        colours = [METHOD_COLOURS["ppo"] if n == rows[0]["name"] else "#999999" for n in names]
        ax.barh(names, values, color=colours)
        ax.axvline(rows[0]["test"][key], color="black", ls=":", lw=1)
        ax.set_xlabel(label)
    axes[0].figure.suptitle(title, y=1.0)
    axes[0].figure.tight_layout()
    return axes


def plot_gain_fraction(histories: dict, title: str = "Gain fraction on the enumerable view", ax=None):
    """Gain fraction (J - J_ref)/(beta log Z - J_ref) per iteration for each named history (name -> rows with
    ``iteration`` and ``gain_fraction``), with the optimum (1) as a dashed line."""
    ax = ax if ax is not None else plt.subplots(figsize=(6, 3))[1]
    styles = ("-", "o")
    for (name, history), style in zip(histories.items(), styles * len(histories)):
        ax.plot([h["iteration"] for h in history], [h["gain_fraction"] for h in history], style, ms=3,
                color=METHOD_COLOURS["ppo"] if style == "-" else "#333333", label=name)
    ax.axhline(1.0, color=METHOD_COLOURS["optimal"], ls="--", lw=1, label="optimum π*")
    ax.set_xlabel("iteration (256 sampled responses each)")
    ax.set_ylabel("gain fraction")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    return ax
