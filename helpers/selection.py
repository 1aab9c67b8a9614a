"""Choosing a run without the gold reward: the course's one selection rule for every method.

A real project cannot read the gold reward, and the proxy reward cannot choose a KL strength (it always prefers the
weakest penalty, the run that exploited it most). What a practitioner does instead is a held-out human evaluation:
fresh samples from the candidate and from the reference on held-out prompts, judged side by side. Here the judge is
the simulated annotator (:class:`helpers.world.Annotator`, the course's stand-in for people), the prompts are the
*validation* split, and the samples use a seed of their own, so nothing reported on the test split was chosen on it.

Every lesson that picks beta, a KL target, a number of steps or a checkpoint (PPO, DPO, GRPO, RLOO, Best-of-N)
uses :func:`validation_win_rate` and :func:`choose`; a run chosen on gold is labelled an oracle wherever it appears.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping

from . import world
from .model import LanguageModel
from .sampling import Samples, sample_responses

SELECTION_SPLIT = "validation"
SELECTION_SEED = 20261204          # fresh samples: not the test protocol's seed, not any training seed
SELECTION_TEMPERATURE = 1.0
JUDGE = world.Annotator(tau=0.5)   # the course annotator, honest and noisy


@dataclass(frozen=True)
class WinRate:
    """How often the judge prefers the candidate's response to the reference's, over ``n`` prompts."""
    value: float       # mean P(judge prefers the candidate); 0.5 = no better than the reference
    n: int

    def __float__(self) -> float:
        return self.value


def judged_win_rate(samples: Samples, other: Samples, judge: world.Annotator = JUDGE) -> WinRate:
    """Mean probability that ``judge`` prefers ``samples`` to ``other``, prompt by prompt.

    The judge's own choice probability is averaged over both presentation orders (so neither model gains from being shown first)
    instead of drawing one noisy choice per prompt: the expectation of the same evaluation, without its coin flips.
    """
    if [p.text for p in samples.prompts] != [p.text for p in other.prompts]:
        raise ValueError("judged_win_rate compares responses to the same prompts, in the same order")
    if not samples.prompts:
        raise ValueError("no samples to judge")
    total = 0.0
    for p, a, b in zip(samples.prompts, samples.texts, other.texts):
        total += 0.5 * (judge.prob_left(p, a, b) + 1.0 - judge.prob_left(p, b, a))
    return WinRate(total / len(samples.prompts), len(samples.prompts))


def validation_win_rate(policy: LanguageModel, reference: LanguageModel, prompts: list[world.Prompt] | None = None,
                        seed: int = SELECTION_SEED, judge: world.Annotator = JUDGE) -> WinRate:
    """The selection score of ``policy``: its judged win rate against ``reference`` on fresh validation samples.

    Both models sample one response per prompt (default: every validation prompt) at temperature 1 from ``seed``.
    """
    pool = list(prompts) if prompts is not None else list(world.prompts(SELECTION_SPLIT))
    if any(p.split == "test" for p in pool):
        raise ValueError("selection never looks at the test split: pass validation (or train) prompts")
    mine = sample_responses(policy, pool, SELECTION_TEMPERATURE, seed)
    theirs = sample_responses(reference, pool, SELECTION_TEMPERATURE, seed)
    return judged_win_rate(mine, theirs, judge)


def choose(scores: Mapping[Hashable, float]) -> Hashable:
    """The candidate with the highest selection score; ties go to the first one listed (list the cheaper or more
    conservative candidate first: a smaller step, a larger beta)."""
    if not scores:
        raise ValueError("nothing to choose from")
    best_key, best = None, float("-inf")
    for key, value in scores.items():
        if float(value) > best:
            best_key, best = key, float(value)
    return best_key
