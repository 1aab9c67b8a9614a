"""Checking labels: agreement between annotators (percent and Cohen's kappa), position bias, agreement with the
gold reward, and a report of them all."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from .. import world
from .storage import CHOICES, Label, LabelSet, export_pairs


def percent_agreement(x: Sequence[str], y: Sequence[str]) -> float:
    """The fraction of items on which two annotators gave the same label."""
    if len(x) != len(y) or not x:
        raise ValueError("percent_agreement needs two equally long, non-empty label lists")
    return sum(a == b for a, b in zip(x, y)) / len(x)


def cohens_kappa(x: Sequence[str], y: Sequence[str]) -> float:
    """Cohen's kappa: agreement beyond chance, kappa = (p_o - p_e) / (1 - p_e) (Cohen 1960, eq. 1).

    p_o is the observed agreement; p_e = sum over labels k of p_x(k) * p_y(k) is the agreement two annotators
    would reach by chance with their own label frequencies. 1 is perfect agreement, 0 chance level, < 0 worse
    than chance. NaN when p_e = 1 (both always gave the same single label: agreement beyond chance is undefined).
    """
    p_o = percent_agreement(x, y)
    n = len(x)
    fx, fy = Counter(x), Counter(y)
    p_e = sum(fx[k] * fy[k] for k in fx) / (n * n)
    return float("nan") if p_e == 1 else (p_o - p_e) / (1 - p_e)


def agreement(labels: Iterable[Label] | LabelSet, annotator_a: str, annotator_b: str) -> dict:
    """Percent agreement and Cohen's kappa of two annotators on the items both judged (skips left out).

    Judgments are compared in item terms ("first", "second", "tie", "both_bad"), so two people who saw a pair in
    opposite left/right orders still agree when they preferred the same response.
    """
    labels = labels.labels if isinstance(labels, LabelSet) else list(labels)
    by = {who: {lab.item: lab.outcome for lab in labels if lab.annotator == who and lab.label != "skip"}
          for who in (annotator_a, annotator_b)}
    common = sorted(set(by[annotator_a]) & set(by[annotator_b]))
    if not common:
        return {"items": 0, "percent": float("nan"), "kappa": float("nan")}
    x = [by[annotator_a][i] for i in common]
    y = [by[annotator_b][i] for i in common]
    return {"items": len(common), "percent": percent_agreement(x, y), "kappa": cohens_kappa(x, y)}


def _gold(lab: Label) -> tuple[float, float] | None:
    """Gold rewards of the left and right response, or None if the prompt is not one of the world's."""
    try:
        prompt = world.find_prompt(lab.prompt)
    except KeyError:
        return None
    return world.gold_reward(prompt, lab.left), world.gold_reward(prompt, lab.right)


def position_bias(labels: Iterable[Label] | LabelSet) -> dict[str, dict]:
    """Per annotator: how often a decisive label picked the left response, against how often the gold reward
    prefers the left one on the same pairs (gold ties count half). With left/right order shuffled, an unbiased
    annotator's ``left_rate`` is close to ``gold_left_rate``; ``interval`` is the 95 % Wilson interval of
    ``left_rate``. Only decisive labels on the world's prompts count."""
    from ..evaluate import wilson_interval
    labels = labels.labels if isinstance(labels, LabelSet) else list(labels)
    out = {}
    for who in sorted({lab.annotator for lab in labels}):
        lefts = gold_lefts = n = 0
        for lab in labels:
            if lab.annotator == who and lab.decisive and (gold := _gold(lab)) is not None:
                n += 1
                lefts += lab.label == "a"
                gold_lefts += 1.0 if gold[0] > gold[1] else 0.5 if gold[0] == gold[1] else 0.0
        out[who] = {"decisive": n, "left_rate": lefts / n if n else float("nan"),
                    "interval": wilson_interval(lefts, n), "gold_left_rate": gold_lefts / n if n else float("nan")}
    return out


def gold_agreement(labels: Iterable[Label] | LabelSet) -> dict[str, dict]:
    """Per annotator: on decisive labels where the gold reward tells the two responses apart, the fraction whose
    chosen response has the higher gold reward."""
    labels = labels.labels if isinstance(labels, LabelSet) else list(labels)
    out = {}
    for who in sorted({lab.annotator for lab in labels}):
        agree = n = 0
        for lab in labels:
            if lab.annotator == who and lab.decisive and (gold := _gold(lab)) is not None and gold[0] != gold[1]:
                n += 1
                agree += (gold[0] > gold[1]) == (lab.label == "a")
        out[who] = {"compared": n, "agreement": agree / n if n else float("nan")}
    return out


def report(labels: LabelSet) -> str:
    """Everything about a folder of labels, as text: counts, pairs, agreement, position bias, gold agreement."""
    lines = [f"{len(labels.labels)} labels from {len(labels.annotators)} annotator(s); "
             f"{len(labels.damaged)} damaged line(s) skipped", str(export_pairs(labels))]
    for who in labels.annotators:
        counts = Counter(lab.label for lab in labels.labels if lab.annotator == who)
        lines.append(f"  {who:12s} " + ", ".join(f"{k} {counts[k]}" for k in CHOICES))
    names = labels.annotators
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ag = agreement(labels, a, b)
            lines.append(f"agreement {a} / {b}: {ag['items']} shared items, {100 * ag['percent']:.0f} % agree, "
                         f"Cohen's kappa {ag['kappa']:.2f}")
    for who, pb in position_bias(labels).items():
        lo, hi = pb["interval"]
        lines.append(f"position bias {who}: picked the left response in {100 * pb['left_rate']:.0f} % "
                     f"[{100 * lo:.0f}, {100 * hi:.0f}] of {pb['decisive']} decisive labels; the gold reward "
                     f"prefers the left one in {100 * pb['gold_left_rate']:.0f} %")
    for who, ga in gold_agreement(labels).items():
        lines.append(f"gold agreement {who}: {100 * ga['agreement']:.0f} % of {ga['compared']} pairs")
    return "\n".join(lines)
