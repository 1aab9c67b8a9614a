"""Reward modeling with Bradley-Terry: preference data, the loss, training with early stopping, evaluation, and
Best-of-N sampling.

Bradley-Terry (1952) models a comparison as P(a > b) = sigma(r(a) - r(b)). Fitting r to preferences by maximum
likelihood gives the loss -log sigma(r(chosen) - r(rejected)): binary cross-entropy on the reward margin
(InstructGPT, Ouyang et al. 2022, eq. 1). The plain reward model is the course transformer with a scalar head read at the
``<eos>`` token (:class:`helpers.model.ScalarModel`); the course reward model (:class:`RewardModel`) adds what a
two-layer model cannot route to ``<eos>`` by itself: how likely the reference model found each response token.

Shapes: B = number of pairs (or sequences), T = sequence length.
Used in lessons 02, 03, 05, 06.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import enumerable, world
from .checkpoint import ARTIFACTS, load, save
from .early_stopping import EarlyStopping
from .model import LanguageModel, ModelConfig, ScalarModel, Transformer, token_logprobs
from .pretrain import load_reference
from .progress import progress
from .sampling import Samples, sample_responses
from .tokenizer import Tokenizer, collate_preferences, encode_pairs, pad_sequences

PREFERENCES_PATH = ARTIFACTS / "preferences.jsonl"
REWARD_MODEL_PATH = ARTIFACTS / "reward_model.pt"


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Per-pair Bradley-Terry loss -log sigma(r_chosen - r_rejected), computed stably with log-sigmoid.

    Taking ``torch.log(torch.sigmoid(m))`` instead underflows to log(0) = -inf once the margin m is below -88.7
    (float32: exp(-m) overflows there); ``F.logsigmoid`` never does. Its gradient with respect to the margin is
    sigma(m) - 1.

    Args:
        chosen_rewards: [B] scores of the preferred responses.
        rejected_rewards: [B] scores of the other responses.
    Returns:
        [B] losses (not reduced: take ``.mean()`` for a batch loss).
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen {tuple(chosen_rewards.shape)} and rejected {tuple(rejected_rewards.shape)} "
                         f"rewards must have the same shape")
    if chosen_rewards.numel() == 0:  # the mean of no losses is nan
        raise ValueError("bradley_terry_loss needs at least one pair; got empty reward tensors")
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


# ----------------------------------------------------------------------------------------------------------------
# preference data

def make_preferences(policy: LanguageModel, prompts: list[world.Prompt], annotator: world.Annotator,
                     responses_per_prompt: int = 4, seed: int = 0) -> list[world.PreferencePair]:
    """Label pairs of the policy's own samples with a (simulated) annotator.

    For every prompt, sample ``responses_per_prompt`` responses; every two distinct ones form a pair, shown in a
    random left/right order, and the annotator's noisy choice decides which is ``chosen``.
    """
    if responses_per_prompt < 2:
        raise ValueError("need at least two responses per prompt to make a pair")
    # its own stream for the left/right order: sharing the annotator's seed would correlate order and choice
    rng = random.Random(f"left-right order {seed}")
    samples = [sample_responses(policy, prompts, temperature=1.0, seed=seed * 1000 + k)
               for k in range(responses_per_prompt)]
    pairs = []
    for i, prompt in enumerate(prompts):
        texts = sorted({s.texts[i] for s in samples if s.ended[i]})
        for a in range(len(texts)):
            for b in range(a + 1, len(texts)):
                left, right = (texts[a], texts[b]) if rng.random() < 0.5 else (texts[b], texts[a])
                pairs.append(annotator.label(prompt, left, right))
    return pairs


def save_preferences(pairs: list[world.PreferencePair], path: Path) -> None:
    """One JSON object per line: prompt, chosen, rejected, source, annotator."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for p in pairs:
            f.write(json.dumps(asdict(p)) + "\n")


def read_preferences(path: Path) -> list[world.PreferencePair]:
    """The rows :func:`save_preferences` wrote."""
    with open(path) as f:
        return [world.PreferencePair(**json.loads(line)) for line in f if line.strip()]


def load_preferences(split: str = "train", path: Path = PREFERENCES_PATH) -> list[world.PreferencePair]:
    """The course preference set built by ``make artifacts``: the reference model's samples labeled by the
    simulated annotator (tau = :data:`COURSE_TAU`). ``split`` is "train", "validation" or "test"."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no preference set at {path}; run `make artifacts` to build it")
    texts = {p.text for p in world.prompts(split)}
    return [p for p in read_preferences(path) if p.prompt in texts]


# ----------------------------------------------------------------------------------------------------------------
# the reward model

class RewardModel(nn.Module):
    """The course reward model: a scalar head read at ``<eos>``, plus the reference model's "surprise".

        r(x, y) = head(h_eos) + sum_t g(h_t) * log pi_ref(y_t | x, y_<t)      (sum over response tokens t)

    Why the second term: in a two-layer transformer the knowledge that "4 plus 5" is 9 lives in the language-model
    head's prediction at the position *before* the answer word; no later position reads it, ``<eos>`` least of all.
    So a plain scalar head at ``<eos>`` cannot check answers it has not seen in training (lesson 02 measures it).
    The frozen reference model's log-prob of each response token is that knowledge made visible: a wrong sum is a
    surprising token. ``g`` (one linear layer, zero at the start) learns how much each token's surprise counts, so
    a fresh model scores exactly like the plain one. Only ``transformer``, ``head`` and ``gate`` train.

    Exposes ``score(input_ids, attention_mask) -> [B]`` like :class:`ScalarModel`. Used in lessons 02, 03, 05, 06.
    """

    surprise_floor = -10.0  # log-probs below this count as this: one impossible token must not dominate the sum

    def __init__(self, cfg: ModelConfig, sep_id: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.sep_id = Tokenizer().sep_id if sep_id is None else sep_id
        self.transformer = Transformer(cfg)
        self.head = nn.Linear(cfg.n_embd, 1)
        self.gate = nn.Linear(cfg.n_embd, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.reference = LanguageModel(cfg).requires_grad_(False)

    @classmethod
    def from_language_model(cls, lm: LanguageModel) -> "RewardModel":
        """Backbone and frozen reference both start as ``lm`` (the reference model)."""
        model = cls(lm.cfg)
        model.transformer.load_state_dict(lm.transformer.state_dict())
        model.reference.load_state_dict(lm.state_dict())
        return model

    def train(self, mode: bool = True) -> "RewardModel":
        super().train(mode)
        self.reference.eval()  # frozen, so always in eval mode
        return self

    def response_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: real tokens after the first ``<sep>`` (the response, ``<eos>`` included)."""
        first_sep = (input_ids == self.sep_id).int().argmax(-1)                     # [B]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return (positions[None, :] > first_sep[:, None]) & attention_mask.bool()

    def surprise(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, T]: log pi_ref of each response token (floored), 0 elsewhere."""
        with torch.no_grad():
            logp = token_logprobs(self.reference(input_ids, attention_mask), input_ids)  # [B, T-1]
        logp = F.pad(logp.clamp(min=self.surprise_floor), (1, 0))                   # [B, T]: entry t for token t
        return logp * self.response_mask(input_ids, attention_mask)

    def score_parts(self, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms of r separately, each [B]: the head at ``<eos>`` and the gated surprise sum."""
        hidden = self.transformer(input_ids, attention_mask)                        # [B, T, C]
        last = attention_mask.sum(-1) - 1                                             # [B]
        at_eos = self.head(hidden).squeeze(-1).gather(1, last[:, None]).squeeze(1)
        knowledge = (self.gate(hidden).squeeze(-1) * self.surprise(input_ids, attention_mask)).sum(-1)
        return at_eos, knowledge

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """r(x, y) [B] for right-padded ``<bos> x <sep> y <eos>`` rows."""
        at_eos, knowledge = self.score_parts(input_ids, attention_mask)
        return at_eos + knowledge


Scorer = ScalarModel | RewardModel  # anything with .score(input_ids, attention_mask) -> [B] and .cfg


def score_pairs(model: Scorer, pairs: list[world.PreferencePair],
                tokenizer: Tokenizer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward-model scores of chosen and rejected responses, each [B]."""
    batch = collate_preferences(pairs, tokenizer or Tokenizer(), model.cfg.block_size)
    chosen = model.score(batch.chosen.input_ids, batch.chosen.attention_mask)
    rejected = model.score(batch.rejected.input_ids, batch.rejected.attention_mask)
    return chosen, rejected


@torch.no_grad()
def score_texts(model: Scorer, prompts: list[str], responses: list[str], batch_size: int = 512) -> torch.Tensor:
    """Reward-model scores of (prompt, response) texts [B], in batches."""
    tok = Tokenizer()
    out = []
    for i in range(0, len(prompts), batch_size):
        batch = encode_pairs(tok, prompts[i:i + batch_size], responses[i:i + batch_size], model.cfg.block_size)
        out.append(model.score(batch.input_ids, batch.attention_mask))
    return torch.cat(out)


@torch.no_grad()
def score_samples(model: Scorer, samples: Samples, batch_size: int = 512) -> torch.Tensor:
    """Reward-model scores [B] of sampled responses, from their token ids (a sample can hold tokens, such as a
    stray ``<bos>``, that its decoded text cannot be encoded back from)."""
    out = []
    for i in range(0, len(samples.texts), batch_size):
        batch = pad_sequences(samples.prompt_ids[i:i + batch_size], samples.response_ids[i:i + batch_size],
                              model.cfg.pad_id, model.cfg.block_size)
        out.append(model.score(batch.input_ids, batch.attention_mask))
    return torch.cat(out)


@torch.no_grad()
def pairwise_accuracy(model: Scorer, pairs: list[world.PreferencePair]) -> float:
    """Fraction of pairs where the model scores ``chosen`` above ``rejected``."""
    chosen = score_texts(model, [p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = score_texts(model, [p.prompt for p in pairs], [p.rejected for p in pairs])
    return float((chosen > rejected).float().mean())


@dataclass(frozen=True)
class RewardTrainConfig:
    max_epochs: int = 4          # an upper bound: early stopping usually ends sooner
    batch_size: int = 64         # pairs per step
    lr: float = 3e-4             # AdamW; the backbone is pretrained, so small steps
    weight_decay: float = 0.01
    eval_every: int = 25         # steps between validation checks
    patience: int = 6            # stop after this many checks without a better validation loss
    max_steps: int | None = None  # a hard cap, for quick runs in notebooks and tests
    seed: int = 0


# the small reward model lesson 02 trains live (<= 20 s): few steps at a larger learning rate, checked often
LIVE_CONFIG = RewardTrainConfig(max_steps=120, eval_every=10, patience=4, lr=1e-3)


def live_validation_pairs() -> list[world.PreferencePair]:
    """Every fifth validation pair, at most 1,000: enough to see overfitting, cheap enough to check often."""
    return load_preferences("validation")[::5][:1000]


@dataclass
class RewardTrainResult:
    model: Scorer                 # the weights with the best validation loss
    history: list[dict]           # one row per validation check: step, train_loss, val_loss, val_accuracy
    best_step: int


def _mean_loss(model: Scorer, pairs: list[world.PreferencePair], batch_size: int = 256) -> tuple[float, float]:
    losses, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            c, r = score_pairs(model, pairs[i:i + batch_size])
            losses += float(bradley_terry_loss(c, r).sum())
            correct += int((c > r).sum())
    return losses / len(pairs), correct / len(pairs)


def train_reward_model(train_pairs: list[world.PreferencePair], val_pairs: list[world.PreferencePair],
                       cfg: RewardTrainConfig = RewardTrainConfig(), init: Scorer | None = None,
                       desc: str = "reward model") -> RewardTrainResult:
    """Fit a reward model to preferences with the Bradley-Terry loss, keeping the weights with the best
    validation loss (early stopping).

    Args:
        train_pairs, val_pairs: PreferencePair rows; validation decides when to stop, never the test split.
        cfg: see :class:`RewardTrainConfig`.
        init: the starting model; default: the reference model's transformer with a fresh scalar head.
    """
    if not train_pairs or not val_pairs:
        raise ValueError("train_reward_model needs non-empty training and validation pairs")
    torch.manual_seed(cfg.seed)
    model = init if init is not None else ScalarModel.from_language_model(load_reference())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    steps_per_epoch = max(1, len(train_pairs) // cfg.batch_size)
    total = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    stopper = EarlyStopping(model, cfg.patience)
    history, running = [], []
    order: list[int] = []
    for step in progress(range(1, total + 1), desc=desc):
        if not order:
            order = list(range(len(train_pairs)))
            rng.shuffle(order)
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        chosen, rejected = score_pairs(model, [train_pairs[i] for i in idx])
        loss = bradley_terry_loss(chosen, rejected).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
        if step % cfg.eval_every == 0 or step == total:
            model.eval()
            val_loss, val_acc = _mean_loss(model, val_pairs)
            model.train()
            history.append({"step": step, "train_loss": sum(running) / len(running), "val_loss": val_loss,
                            "val_accuracy": val_acc})
            running = []
            if stopper.update(model, val_loss, step):
                break
    stopper.restore(model)
    model.eval()
    return RewardTrainResult(model, history, stopper.best_step)


# ----------------------------------------------------------------------------------------------------------------
# evaluation

def gold_agreement(model: Scorer, prompts: list[world.Prompt], responses_a: list[str],
                   responses_b: list[str], min_gap: float = 0.0) -> dict:
    """How often the reward model orders two responses like the gold reward does, over pairs whose gold rewards
    differ: overall (``all``, over ``n`` pairs), per prompt kind (``by_kind``: arithmetic, capital, ..., harmful,
    unanswerable), and per pair of behaviours (``by_pair``: "refusal vs wrong" -> (rate, pairs)). With ``min_gap``,
    only pairs whose gold rewards differ by more than that count (two harmful answers that differ by a word of
    brevity cost differ by 0.02)."""
    texts = [p.text for p in prompts]
    sa, sb = score_texts(model, texts, responses_a), score_texts(model, texts, responses_b)
    hits: dict[str, list[bool]] = {}
    by_pair: dict[str, list[bool]] = {}
    for p, a, b, x, y in zip(prompts, responses_a, responses_b, sa.tolist(), sb.tolist()):
        ga, gb = world.gold_reward(p, a), world.gold_reward(p, b)
        if abs(ga - gb) <= min_gap:
            continue
        hits.setdefault(p.kind, []).append((ga > gb) == (x > y))
        by_pair.setdefault(" vs ".join(sorted((world.parse(p, a), world.parse(p, b)))), []).append((ga > gb) == (x > y))
    everything = [h for v in hits.values() for h in v]
    return {"all": sum(everything) / len(everything), "n": len(everything),
            "by_kind": {k: sum(v) / len(v) for k, v in sorted(hits.items())},
            "by_pair": {k: (sum(v) / len(v), len(v)) for k, v in sorted(by_pair.items())}}


def candidate_pairs(prompts: list[world.Prompt], seed: int = 0) -> tuple[list[world.Prompt], list[str], list[str]]:
    """A fixed, balanced probe set from the enumerable view's candidates (:func:`helpers.enumerable.candidates`):
    for each prompt, one pair for every two behaviours its candidates show (malformed text counts as one), each
    side a random wording of its behaviour (seeded)."""
    rng = random.Random(seed)
    ps, a, b = [], [], []
    for p in prompts:
        by_label: dict[str, list[str]] = {}
        for text in enumerable.candidates(p):
            by_label.setdefault(world.parse(p, text), []).append(text)
        labels = list(by_label)
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                ps.append(p)
                a.append(rng.choice(by_label[labels[i]]))
                b.append(rng.choice(by_label[labels[j]]))
    return ps, a, b


def reliability(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, bins: int = 10) -> list[dict]:
    """Calibration: pairs binned by the model's P(first > second) = sigma(r_a - r_b); per bin, the mean predicted
    probability and the observed fraction of pairs where the first was chosen.

    Each pair is counted both ways round (chosen first, then rejected first) so every bin is populated symmetrically.

    Args:
        chosen_scores, rejected_scores: [B] a reward model's scores of each pair's two responses
            (from :func:`score_texts`).
    """
    probs = torch.cat([torch.sigmoid(chosen_scores - rejected_scores), torch.sigmoid(rejected_scores - chosen_scores)])
    outcome = torch.cat([torch.ones(len(chosen_scores)), torch.zeros(len(chosen_scores))])
    rows = []
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        mask = (probs >= lo) & ((probs < hi) if k < bins - 1 else (probs <= hi))
        if mask.any():
            rows.append({"bin": (lo, hi), "predicted": float(probs[mask].mean()),
                         "observed": float(outcome[mask].mean()), "count": int(mask.sum())})
    return rows


def expected_calibration_error(rows: list[dict]) -> float:
    """ECE of a :func:`reliability` table: the count-weighted mean of |predicted - observed| over its bins."""
    total = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in rows) / total


def fit_temperature(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks"): the T > 0 that
    minimises the Bradley-Terry loss of sigma((r_chosen - r_rejected) / T) on held-out pairs (the validation
    split, never the test split). T > 1 softens over-confident probabilities; the ordering, hence the accuracy,
    is unchanged.

    Args:
        chosen_scores, rejected_scores: [B] a reward model's scores of validation pairs.
    Returns:
        T, found by a grid search over log T in [-3, 3] refined by golden-section search. Used in lesson 02.
    """
    margins = (chosen_scores - rejected_scores).double()

    def loss(log_t: float) -> float:
        return float(bradley_terry_loss(margins / math.exp(log_t), torch.zeros_like(margins)).mean())

    grid = [k / 20 for k in range(-60, 61)]
    best = min(grid, key=loss)
    lo, hi = best - 0.05, best + 0.05
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)


# ----------------------------------------------------------------------------------------------------------------
# Best-of-N

@dataclass
class BestOfN:
    """Best-of-N at several N, all from one set of samples: per N, the chosen responses and their mean rewards."""
    ns: list[int]
    chosen: dict[int, list[str]]       # N -> the response kept for each prompt
    proxy: dict[int, float]            # N -> mean reward-model score of the kept responses
    gold: dict[int, float]             # N -> mean gold reward of the kept responses
    gold_interval: dict[int, tuple[float, float]]  # N -> 95 % interval of that mean (normal approximation)


@torch.no_grad()
def best_of_n(policy: LanguageModel, reward_model: Scorer, prompts: list[world.Prompt],
              ns: tuple[int, ...] = (1, 2, 4, 8, 16), seed: int = 0, temperature: float = 1.0) -> BestOfN:
    """For each prompt, sample max(ns) responses; for each N keep the one the reward model scores highest among
    the first N. Sharing the samples makes the curve over N smooth and costs one sampling pass.

    No training at all: the policy is unchanged, and inference costs N samples plus N reward-model calls. A
    response that never ended gets -inf, so it is kept only when none of the N ended.
    """
    if not ns or min(ns) < 1:
        raise ValueError(f"every N must be at least 1, got {ns}")
    samples = [sample_responses(policy, prompts, temperature, seed=seed * 7919 + k) for k in range(max(ns))]
    scores = torch.stack([score_samples(reward_model, s) for s in samples], dim=1)              # [P, N]
    ended = torch.tensor([s.ended for s in samples]).T                                           # [P, N]
    ranked = scores.masked_fill(~ended, float("-inf"))
    result = BestOfN(sorted(ns), {}, {}, {}, {})
    for n in result.ns:
        pick = ranked[:, :n].argmax(dim=1)                                                       # [P]
        chosen = [samples[k].texts[i] for i, k in enumerate(pick.tolist())]
        gold = torch.tensor([world.gold_reward(p, y) for p, y in zip(prompts, chosen)], dtype=torch.float64)
        half = 1.96 * float(gold.std()) / len(gold) ** 0.5
        result.chosen[n] = chosen
        result.proxy[n] = float(scores[torch.arange(len(prompts)), pick].mean())
        result.gold[n] = float(gold.mean())
        result.gold_interval[n] = (float(gold.mean()) - half, float(gold.mean()) + half)
    return result


def best_of_n_exact(ref_probs: torch.Tensor, scores: torch.Tensor, gold: torch.Tensor, ns) -> list[dict]:
    """Exact Best-of-N on an enumerable view (:func:`helpers.optimal.best_of_n_policy`): select by ``scores`` (a
    reward model's, the proxy), measure with ``gold``. No sampling, so N = 1024 costs what N = 2 does.

    Args:
        ref_probs, scores, gold: [P, K] pi_ref over each prompt's candidates, proxy scores, gold rewards.
        ns: the N to compute.
    Returns:
        one row per N: ``n``, ``kl_bound`` (log N - (N - 1) / N, the KL of Best-of-N to pi_ref when no two
        candidates tie, an upper bound otherwise: Beirami et al. 2024), ``kl`` (the exact mean KL), ``proxy``
        and ``gold`` (means over prompts of the expected scores), ``gold_ci`` (half-width of the 95 % interval over
        prompts) and ``gold_per_prompt`` [P].
    Used in lesson 02.
    """
    from .optimal import best_of_n_kl_bound, best_of_n_policy, kl_divergence
    rows = []
    for n in ns:
        policy = best_of_n_policy(ref_probs, scores, n)                                  # [P, K]
        per_prompt = (policy * gold).sum(-1)                                              # [P]
        half = 1.96 * float(per_prompt.std()) / len(per_prompt) ** 0.5 if len(per_prompt) > 1 else 0.0
        rows.append({"n": n, "kl_bound": best_of_n_kl_bound(n), "kl": float(kl_divergence(policy, ref_probs).mean()),
                     "proxy": float((policy * scores).sum(-1).mean()), "gold": float(per_prompt.mean()),
                     "gold_ci": half, "gold_per_prompt": per_prompt})
    return rows


def relabel(pairs: list[world.PreferencePair], annotator: world.Annotator) -> list[world.PreferencePair]:
    """The same pairs of responses, judged again by another annotator (say, one with a bias): what changes is
    only the labels, so any change in the reward model trained on them comes from the annotator."""
    return [annotator.label(world.find_prompt(p.prompt), p.chosen, p.rejected) for p in pairs]


# ----------------------------------------------------------------------------------------------------------------
# the course artifacts

COURSE_TAU = 0.5  # the course annotator's noise: P(better chosen) = sigma(1) = 0.73 for a gold gap of 0.5


def build_preferences(path: Path = PREFERENCES_PATH, responses_per_prompt: int = 6, seed: int = 0) -> list:
    """The course preference set: reference samples on the prompts of every split, labeled at tau = COURSE_TAU.

    Train pairs are for training, validation pairs for every choice (early stopping, hyperparameters), test pairs
    only for the figures a lesson reports. Each split has its own seeds, so adding a split never changes another.
    """
    reference = load_reference()
    pairs = []
    for k, split in enumerate(world.SPLITS):
        annotator = world.Annotator(tau=COURSE_TAU, seed=seed + k)
        pairs += make_preferences(reference, list(world.prompts(split)), annotator, responses_per_prompt,
                                  seed=seed + k)
    save_preferences(pairs, path)
    return pairs


def build_reward_model(path: Path = REWARD_MODEL_PATH, cfg: RewardTrainConfig = RewardTrainConfig()) -> RewardTrainResult:
    """The course reward model (:class:`RewardModel`): trained on the course preference set, early-stopped on its
    validation part."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the thread count changes float rounding: fixed, so that a rebuild is bit-identical
    try:
        torch.manual_seed(cfg.seed)
        init = RewardModel.from_language_model(load_reference())
        result = train_reward_model(load_preferences("train"), load_preferences("validation"), cfg, init=init,
                                    desc="course reward model")
    finally:
        torch.set_num_threads(previous_threads)
    save(result.model, path)
    return result


def load_reward_model(path: Path = REWARD_MODEL_PATH) -> RewardModel:
    """The course reward model built by ``make artifacts``, in eval mode. Used in lessons 03, 05, 06."""
    return load(path, RewardModel)
