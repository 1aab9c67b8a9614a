"""The course reward model's surprise term: why it is there, and what it costs.

:class:`helpers.reward.RewardModel` scores r(x, y) = head(h_eos) + sum_t g(h_t) log pi_ref(y_t | x, y_<t). The second
term builds the reference model's likelihood into the reward, so it overlaps with the KL penalty to pi_ref that
lesson 03's PPO adds on top. Two measurements, both shown in lesson 02:

- :func:`eos_probe`: does a plain scalar head at ``<eos>`` have the information to check an answer? A logistic
  probe on the reference transformer's ``<eos>`` hidden state, trained on right and wrong answers of train prompts
  and tested on test prompts. (The hypothesis the surprise term rests on is that it does not.)
- :func:`ppo_ablation`: PPO against the course reward model as trained and with its surprise term zeroed (the gate
  set to 0, the head unchanged), scored with the evaluation scorecard on the test split. It takes about a minute, so
  ``python -m helpers build surprise-ablation`` (part of ``make artifacts``) stores the table in
  ``helpers/artifacts/surprise_ablation.json`` and :func:`load_ppo_ablation` reads it.

Used in lesson 02.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world
from .checkpoint import ARTIFACTS, load_results, save_results
from .evaluate import scorecard
from .model import LanguageModel
from .pretrain import load_reference
from .reward import RewardModel, load_reward_model
from .rlhf import PPOConfig, train_ppo
from .tokenizer import Tokenizer, encode_pairs

ABLATION_PATH = ARTIFACTS / "surprise_ablation.json"
# lesson 03's live run against the course reward model (beta in the reward model's score units)
ABLATION_PPO = PPOConfig(beta=0.2, iterations=8, eval_every=4, eval_prompts=128)


def without_surprise(model: RewardModel) -> RewardModel:
    """A copy of ``model`` whose gate is zero: r(x, y) = head(h_eos) alone, the head exactly as trained."""
    out = copy.deepcopy(model)
    torch.nn.init.zeros_(out.gate.weight)
    torch.nn.init.zeros_(out.gate.bias)
    return out.eval()


# ----------------------------------------------------------------------------------------------------------------
# the probe

def _right_wrong(prompts: list[world.Prompt], variants: int = 3) -> tuple[list[world.Prompt], list[str], list[int]]:
    ps, texts, labels = [], [], []
    for p in prompts:
        if p.category != "answerable":
            continue
        for v in range(variants):
            for behaviour, label in (("correct", 1), ("wrong", 0)):
                ps.append(p)
                texts.append(world.response(p, behaviour, v))
                labels.append(label)
    return ps, texts, labels


@torch.no_grad()
def eos_features(model: LanguageModel, prompts: list[world.Prompt], texts: list[str]) -> torch.Tensor:
    """[B, C] the transformer's final hidden state at each response's ``<eos>`` (what a scalar head reads)."""
    batch = encode_pairs(Tokenizer(), [p.text for p in prompts], texts)
    hidden = model.transformer(batch.input_ids, batch.attention_mask)              # [B, T, C]
    last = batch.attention_mask.sum(-1) - 1                                         # [B]
    return hidden[torch.arange(len(texts)), last]


def eos_probe(model: LanguageModel | None = None, steps: int = 500, seed: int = 0) -> dict:
    """Can a linear read-out of the ``<eos>`` hidden state tell a right answer from a wrong one on unseen prompts?

    A logistic regression (weights + bias, L2 1e-3, full-batch Adam) on the reference transformer's ``<eos>`` state
    of correct and wrong answers to the train split's answerable prompts; accuracy on the train rows and on the test
    split's rows (balanced: chance is 0.5). High train and chance-level test accuracy: the state identifies the
    train *facts*, not whether an answer is right. Returns {"train_accuracy", "test_accuracy", "n_train", "n_test"}.
    """
    model = model if model is not None else load_reference()
    model.eval()
    data = {}
    for split in ("train", "test"):
        ps, texts, labels = _right_wrong(list(world.prompts(split)))
        data[split] = (eos_features(model, ps, texts), torch.tensor(labels, dtype=torch.float32))
    x, y = data["train"]
    mean, std = x.mean(0), x.std(0) + 1e-6
    torch.manual_seed(seed)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(steps):
        logits = ((x - mean) / std) @ w + b
        loss = F.binary_cross_entropy_with_logits(logits, y) + 1e-3 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {}
    for split, (xs, ys) in data.items():
        with torch.no_grad():
            pred = (((xs - mean) / std) @ w + b) > 0
        out[f"{split}_accuracy"] = float((pred == ys.bool()).float().mean())
        out[f"n_{split}"] = len(ys)
    return out


# ----------------------------------------------------------------------------------------------------------------
# PPO with and without the term

def ppo_ablation(cfg: PPOConfig = ABLATION_PPO) -> dict:
    """PPO (lesson 03's run) against the course reward model as trained and with the surprise term zeroed; each
    policy's test-split scorecard (gold reward, KL to pi_ref, failure rates, mean length) plus the reference's."""
    torch.set_num_threads(1)  # fixed, so a rebuild gives the same figures
    reference = load_reference()
    course = load_reward_model()
    train, val = list(world.prompts("train")), list(world.prompts("validation"))
    rows = {"reference": scorecard(reference, reference)}
    seconds = {}
    for name, rm in (("as trained", course), ("surprise zeroed", without_surprise(course))):
        start = time.perf_counter()
        run = train_ppo(None, reference, rm, train, val, cfg, desc=f"PPO, {name}")
        seconds[name] = time.perf_counter() - start
        rows[name] = scorecard(run.policy, reference)
    table = {}
    for name, card in rows.items():
        table[name] = {"gold_reward": card.gold_reward, "gold_reward_ci": card.gold_reward_ci, "kl": card.kl,
                       "win_rate": card.win_rate, "mean_length": card.mean_length,
                       # each rate as [count, n]: the lesson computes its Wilson interval
                       **{k: [card.rates[k].count, card.rates[k].n]
                          for k in ("false_answer", "harmful_compliance", "fabrication", "insult", "malformed")}}
    return {"config": {k: getattr(cfg, k) for k in ("beta", "iterations", "batch_size", "lr", "seed")},
            "policies": table, "train_seconds": seconds}


def build_ppo_ablation(path: Path = ABLATION_PATH) -> dict:
    """Run :func:`ppo_ablation` and store it as JSON (``make artifacts``)."""
    result = ppo_ablation()
    save_results(result, path)
    return result


def load_ppo_ablation(path: Path = ABLATION_PATH) -> dict:
    """The stored :func:`ppo_ablation` table."""
    return load_results(path, "surprise-ablation")
