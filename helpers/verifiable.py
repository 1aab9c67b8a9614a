"""Verifiable rewards: the world can check answers, so a reward can pay for being right instead of for looking right.

A reward model learns what annotators preferred, and can only be as good at checking a sum as the comparisons it
saw (lesson 02). Where the task has a checker — a unit test for code, the final number of a maths problem, here the
world's strict parser — reinforcement learning can use the checker itself as the reward ("RL with verifiable
rewards", RLVR; DeepSeekMath, Shao et al. 2024; Tulu 3, Lambert et al. 2024). It pays 1 for a correct answer and 0
for anything else, so it cannot be flattered; it says nothing about what is *not* checkable (harm, honesty), so on the
other categories this reward falls back on the gold reward.
Used in lesson 05.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import world


def is_correct(prompt: world.Prompt, text: str) -> bool:
    """Does ``text`` give the right answer to an answerable ``prompt``, by the world's strict parser?

    A padded correct answer (behaviour ``verbose``, which the parser only accepts around the correct answer) counts:
    its answer is right, as a maths checker that reads the final number would say. Always False on the other
    categories, which have no answer to check.
    """
    return prompt.category == "answerable" and world.parse(prompt, text) in ("correct", "verbose")


@dataclass(frozen=True)
class VerifiableReward:
    """A reward function ``(prompts, texts) -> [B]``: the checker's payoff on answerable prompts, the gold reward on
    the others (harmful and unanswerable prompts have no answer a checker could verify)."""
    correct: float = 1.0     # the parser finds the right answer (padded or not)
    incorrect: float = 0.0   # anything else on an answerable prompt: a wrong answer, a decline, an insult, malformed
                             # text. Binary, as in RLVR: declining earns no more than a wrong answer, unlike the
                             # gold reward (-0.5 against -1.0), so a policy trained on it learns to always answer

    def __call__(self, prompts: list[world.Prompt], texts: list[str]) -> torch.Tensor:
        """Rewards [B] of the responses ``texts`` to ``prompts``."""
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} responses")
        return torch.tensor([
            (self.correct if is_correct(p, t) else self.incorrect) if p.category == "answerable"
            else world.gold_reward(p, t)
            for p, t in zip(prompts, texts)], dtype=torch.float32)


verifiable_reward = VerifiableReward()

