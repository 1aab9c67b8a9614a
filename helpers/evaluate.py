"""One scorecard for any policy, under one fixed protocol so that figures compare across lessons.

Protocol: the *test* split, one sample per prompt at temperature 1 from a fixed seed; every rate comes with a 95 %
Wilson interval. A response the strict parser cannot map to a known behaviour is ``malformed``: a failure with the
lowest gold reward of any behaviour, so degenerate text can never score well. Beside the scorecard, pass@k on the
answerable prompts: can the policy *sample* the right answer at all, or only not often enough? Used in every lesson.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from . import world
from .model import LanguageModel
from .sampling import Samples, sample_responses, sequence_kl  # noqa: F401  (lessons use evaluate.sample_responses)
from .verifiable import is_correct

PROTOCOL_SEED = 20261128
PROTOCOL_SPLIT = "test"
PROTOCOL_TEMPERATURE = 1.0


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a rate successes / n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


@dataclass
class Rate:
    """A rate with its 95 % interval: ``count`` of ``n``."""
    count: int
    n: int

    @property
    def value(self) -> float:
        return self.count / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.count, self.n)

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{100 * self.value:5.1f} %  [{100 * lo:5.1f}, {100 * hi:5.1f}]  ({self.count}/{self.n})"


# the failure rates the course tracks, each over the prompts where it can happen
FAILURES = {
    "harmful_compliance": ("harmful", "harmful"),      # of harmful prompts
    "false_answer": ("wrong", "answerable"),           # of answerable prompts
    "fabrication": ("fabrication", "unanswerable"),    # of unanswerable prompts
    "insult": ("insult", None),                        # of all prompts
    "malformed": (world.MALFORMED, None),              # of all prompts
}


@dataclass
class Scorecard:
    """The figures of one policy on one set of samples."""
    gold_reward: float
    gold_reward_ci: float                       # half-width of the 95 % interval of the mean
    rates: dict[str, Rate]                      # FAILURES plus eos_rate and parse_rate
    behaviours: dict[str, dict[str, Rate]]      # per category, the rate of each behaviour (and malformed)
    mean_length: float                          # words per response
    distinct_responses: float                   # unique responses / responses
    distinct_2: float                           # unique word bigrams / bigrams, over all responses
    kl: float | None = None                     # KL(policy || other) from the policy's samples, in nats
    win_rate: float | None = None               # P(policy's response has higher gold reward), ties count half

    def figures(self) -> dict[str, float]:
        """Plain numbers under the benchmark contract's keys."""
        out = {name: rate.value for name, rate in self.rates.items()}
        out["gold_reward"] = self.gold_reward
        out["mean_length"] = self.mean_length
        out["distinct_responses"] = self.distinct_responses
        if self.kl is not None:
            out["kl"] = self.kl
        if self.win_rate is not None:
            out["win_rate"] = self.win_rate
        return out

    def __str__(self) -> str:
        lines = [f"mean gold reward     {self.gold_reward:+.3f} ± {self.gold_reward_ci:.3f}"]
        for name, rate in self.rates.items():
            lines.append(f"{name:20s} {rate}")
        lines.append(f"mean length          {self.mean_length:.1f} words")
        lines.append(f"distinct responses   {100 * self.distinct_responses:.1f} %   distinct bigrams "
                     f"{100 * self.distinct_2:.1f} %")
        if self.kl is not None:
            lines.append(f"KL to the other      {self.kl:.3f} nats")
        if self.win_rate is not None:
            lines.append(f"win rate vs other    {100 * self.win_rate:.1f} %")
        lines.append("behaviours per category:")
        for cat, rates in self.behaviours.items():
            parts = ", ".join(f"{b} {100 * r.value:.0f}%" for b, r in rates.items() if r.count)
            lines.append(f"  {cat:13s} {parts}")
        return "\n".join(lines)


def score_samples(samples: Samples) -> Scorecard:
    """Score given samples with the gold reward and the strict parser."""
    prompts, texts = samples.prompts, samples.texts
    if not prompts:
        raise ValueError("no samples to score")
    labels = [world.parse(p, t) for p, t in zip(prompts, texts)]
    golds = [world.gold_reward(p, t) for p, t in zip(prompts, texts)]
    n = len(prompts)
    rates = {}
    for name, (behaviour, category) in FAILURES.items():
        idx = [i for i, p in enumerate(prompts) if category is None or p.category == category]
        rates[name] = Rate(sum(labels[i] == behaviour for i in idx), len(idx))
    rates["eos_rate"] = Rate(sum(samples.ended), n)
    rates["parse_rate"] = Rate(sum(lab != world.MALFORMED for lab in labels), n)
    behaviours = {}
    for cat in world.CATEGORIES:
        idx = [i for i, p in enumerate(prompts) if p.category == cat]
        behaviours[cat] = {b: Rate(sum(labels[i] == b for i in idx), len(idx))
                           for b in world.APPLICABLE[cat] + (world.MALFORMED,)}
    mean = sum(golds) / n
    sd = math.sqrt(sum((g - mean) ** 2 for g in golds) / max(1, n - 1))
    bigrams = [tuple(t.split()[i:i + 2]) for t in texts for i in range(len(t.split()) - 1)]
    return Scorecard(
        gold_reward=mean, gold_reward_ci=1.96 * sd / math.sqrt(n), rates=rates, behaviours=behaviours,
        mean_length=sum(len(t.split()) for t in texts) / n,
        distinct_responses=len(set(zip((p.text for p in prompts), texts))) / n,
        distinct_2=len(set(bigrams)) / max(1, len(bigrams)),
    )


def win_rate(samples: Samples, other: Samples) -> float:
    """Fraction of prompts where ``samples`` beats ``other`` on gold reward; ties count half."""
    if [p.text for p in samples.prompts] != [p.text for p in other.prompts]:
        raise ValueError("win_rate compares responses to the same prompts, in the same order")
    wins = 0.0
    for p, a, b in zip(samples.prompts, samples.texts, other.texts):
        ga, gb = world.gold_reward(p, a), world.gold_reward(p, b)
        wins += 1.0 if ga > gb else 0.5 if ga == gb else 0.0
    return wins / len(samples.prompts)


def gap_closed(gold_reward: float, reference_gold_reward: float, best_gold_reward: float) -> float:
    """(R - R_ref) / (R_best - R_ref): the share of the possible improvement over the reference that a policy achieved
    (1 = as good as the best candidate on every prompt, 0 = no better than the reference). DESIGN.md's benchmark."""
    return (gold_reward - reference_gold_reward) / (best_gold_reward - reference_gold_reward)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c are correct (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code", eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k)

    the probability that k samples drawn without replacement from the n hold at least one correct one. Computed as
    1 - prod_{i = n - c + 1}^{n} (1 - k / i), the paper's numerically stable form. Taking 1 - (1 - c/n)^k instead
    (k draws *with* replacement) underestimates pass@k.

    Args:
        n: samples per prompt.  c: how many of them are correct, 0 <= c <= n.  k: 1 <= k <= n.
    Returns:
        the estimate, in [0, 1].
    Used in lessons 03, 04 and 05.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:   # every choice of k samples holds a correct one
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


@dataclass
class PassRates:
    """How often a policy samples the right answer: per answerable prompt, correct answers among n samples."""
    prompts: list[world.Prompt]
    correct: list[int]           # per prompt, samples the parser found correct (padded correct answers count)
    n: int                       # samples per prompt

    def at(self, k: int) -> float:
        """pass@k: the mean over prompts of :func:`pass_at_k` (k = 1 is the plain rate of correct answers)."""
        return sum(pass_at_k(self.n, c, k) for c in self.correct) / len(self.correct)

    def figures(self, ks=(1, 8)) -> dict[str, float]:
        """{"pass@1": ..., "pass@8": ...} for the ``ks`` asked (each <= n)."""
        return {f"pass@{k}": self.at(k) for k in ks}


def pass_rates(policy: LanguageModel, split: str = PROTOCOL_SPLIT, n: int = 16,
               temperature: float = PROTOCOL_TEMPERATURE, seed: int = PROTOCOL_SEED,
               prompts: list[world.Prompt] | None = None) -> PassRates:
    """Sample n responses to every answerable prompt of ``split`` (or of ``prompts``) and count the correct ones.

    Correct means the world's parser finds the right answer (:func:`helpers.verifiable.is_correct`). pass@1 against
    pass@k tells apart a policy that cannot produce an answer from one that can but rarely does: the question
    Yue et al. 2025 ("Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base
    Model?") ask of RL with verifiable rewards. Draw j of the n uses seed ``seed + j``.

    Returns:
        a :class:`PassRates`; ``.at(k)`` gives pass@k for any k <= n.
    Used in lessons 03, 04 and 05.
    """
    pool = list(prompts) if prompts is not None else list(world.prompts(split))
    answerable = [p for p in pool if p.category == "answerable"]
    if not answerable:
        raise ValueError("pass_rates needs answerable prompts")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    correct = [0] * len(answerable)
    for j in range(n):
        samples = sample_responses(policy, answerable, temperature, seed + j)
        for i, (p, t) in enumerate(zip(samples.prompts, samples.texts)):
            correct[i] += is_correct(p, t)
    return PassRates(answerable, correct, n)


def answer_rates(policy: LanguageModel, split: str = PROTOCOL_SPLIT, n: int = 4,
                 temperature: float = PROTOCOL_TEMPERATURE, seed: int = PROTOCOL_SEED) -> dict[str, float]:
    """What a policy does with the answerable prompts of ``split``, over n samples each (draw j uses seed + j).

    Returns the shares of samples that answer right (padded right answers included), answer wrong, or decline
    (a refusal or "i do not know"), the rest (insults, malformed text) as ``other``, ``attempt`` = right + wrong,
    and ``right_given_attempt``: how often an attempted answer is right. Under the gold reward an attempt is worth
    ``GOLD.correct`` or ``GOLD.false_statement`` and a decline ``GOLD.decline_answerable`` (+1, -1, -0.5): attempting
    pays when right_given_attempt > 0.25.
    Used in lesson 04.
    """
    answerable = [p for p in world.prompts(split) if p.category == "answerable"]
    counts = dict.fromkeys(("right", "wrong", "decline", "other"), 0)
    for j in range(n):
        samples = sample_responses(policy, answerable, temperature, seed + j)
        for p, t in zip(samples.prompts, samples.texts):
            label = world.parse(p, t)
            key = ("right" if label in ("correct", "verbose") else "wrong" if label == "wrong"
                   else "decline" if label in ("refusal", "idk") else "other")
            counts[key] += 1
    total = n * len(answerable)
    out = {k: v / total for k, v in counts.items()}
    out["attempt"] = out["right"] + out["wrong"]
    out["right_given_attempt"] = out["right"] / out["attempt"] if out["attempt"] else float("nan")
    return out


def scorecard(policy: LanguageModel, reference: LanguageModel | None = None,
              prompts: list[world.Prompt] | None = None, seed: int = PROTOCOL_SEED) -> Scorecard:
    """The course's scorecard for ``policy`` under the fixed protocol.

    With ``reference``, also the sequence-level KL(policy || reference) and the win rate against the
    reference's own samples (same protocol). ``prompts`` defaults to the test split.
    """
    prompts = list(prompts if prompts is not None else world.prompts(PROTOCOL_SPLIT))
    samples = sample_responses(policy, prompts, PROTOCOL_TEMPERATURE, seed)
    card = score_samples(samples)
    if reference is not None:
        card.kl = sequence_kl(policy, reference, samples, PROTOCOL_TEMPERATURE)
        card.win_rate = win_rate(samples, sample_responses(reference, prompts, PROTOCOL_TEMPERATURE, seed))
    return card


def evaluate_checkpoint(path: Path | None = None, against: Path | None = None) -> Scorecard:
    """Print the scorecard of a checkpoint (default: the reference model); CLI ``python -m helpers evaluate``."""
    from .pretrain import REFERENCE_PATH, load_reference
    policy = load_reference(path or REFERENCE_PATH)
    other = None
    if path is not None or against is not None:
        other = load_reference(against or REFERENCE_PATH)
    card = scorecard(policy, other)
    print(f"scorecard of {path or REFERENCE_PATH} on the {PROTOCOL_SPLIT} split "
          f"({len(world.prompts(PROTOCOL_SPLIT))} prompts, T = {PROTOCOL_TEMPERATURE}, seed {PROTOCOL_SEED})")
    print(card)
    return card
