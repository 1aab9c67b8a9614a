"""``make bench`` section for DPO (lesson 04): align the reference on the course preference set, report ``dpo.*``.

Protocol (issue 6): every choice is made on the *validation* split, every reported figure is on the *test* split.
- The stopping step: :func:`helpers.dpo.train_dpo` keeps the weights with the lowest validation DPO loss.
- beta, learning rate and NLL weight: one run per entry of :data:`GRID`; the run whose samples have the highest mean
  gold reward on the validation prompts wins. Not the validation *loss* or preference accuracy: those barely move
  while a small beta degenerates the outputs (lesson 04 shows it), and the loss is not comparable across betas.
- Tabular DPO: on the test split's enumerable view merged by equal reward (:meth:`helpers.enumerable.View.by_reward`:
  the same optimum, frontier and beta log Z, a few groups per prompt instead of ~200 candidates), the exact expected loss at the chosen beta, and the same from
  sampled pairs as many per prompt as the course preference set has, measured at beta_KL = tau * beta.
"""
from __future__ import annotations

import random
import time

import torch

from .. import dpo, enumerable, optimal, world
from ..evaluate import PROTOCOL_SPLIT, gap_closed, scorecard
from ..pretrain import PretrainConfig, load_reference
from ..reward import COURSE_TAU, load_preferences

# the candidates; 4 epochs at most (one is too few), early stopping on the validation loss picks the step
GRID = tuple(dpo.DPOConfig(beta=beta, lr=3e-4, nll_weight=0.5, max_epochs=4, eval_every=40, patience=3)
             for beta in (0.3, 0.5, 1.0))
VALIDATION_PAIRS = 1500      # a fixed random subset of the validation pairs for early stopping (speed)
FAILURES = ("harmful_compliance", "false_answer", "fabrication", "insult")


def tabular_figures(reference, beta: float, pairs_per_prompt: int, split: str = PROTOCOL_SPLIT) -> dict:
    """Gain fractions of tabular DPO on ``split``'s enumerable view at beta_KL = COURSE_TAU * beta: from the exact
    expected loss, and from ``pairs_per_prompt`` sampled pairs per prompt."""
    view = enumerable.load_view(split).by_reward()   # equal-reward candidates merged: same optimum, ~16 per prompt
    ref_probs, rewards = view.ref_probs, view.rewards
    beta_kl = COURSE_TAU * beta
    exact, _ = dpo.tabular_dpo(ref_probs, lambda l: dpo.expected_dpo_loss(l, ref_probs, rewards, COURSE_TAU, beta),
                               steps=300, lr=0.3)
    counts = dpo.sample_candidate_pairs(ref_probs, rewards, COURSE_TAU, pairs_per_prompt, seed=0)
    sampled, _ = dpo.tabular_dpo(ref_probs, lambda l: dpo.sampled_dpo_loss(l, ref_probs, counts, beta),
                                 steps=300, lr=0.1)
    return {"tabular_gain_fraction": optimal.gain_fraction(exact, ref_probs, rewards, beta_kl),
            "tabular_sampled_gain_fraction": optimal.gain_fraction(sampled, ref_probs, rewards, beta_kl),
            "tabular_pairs_per_prompt": pairs_per_prompt, "tabular_beta_kl": beta_kl}


def bench_dpo() -> dict:
    """{"dpo": {...}} under the benchmark contract's keys, plus the choices made and each candidate's figures."""
    torch.set_num_threads(PretrainConfig().threads)
    reference = load_reference()
    train, val = load_preferences("train"), load_preferences("validation")
    val_subset = random.Random(0).sample(val, min(VALIDATION_PAIRS, len(val)))
    val_prompts = list(world.prompts("validation"))
    candidates = []
    for cfg in GRID:
        start = time.perf_counter()
        result = dpo.train_dpo(train, val_subset, cfg, reference=reference, desc=f"DPO beta={cfg.beta}")
        seconds = time.perf_counter() - start
        best = next(h for h in result.history if h["step"] == result.best_step)
        candidates.append({"cfg": cfg, "result": result, "train_s": seconds,
                           "val_gold_reward": scorecard(result.policy, prompts=val_prompts).gold_reward,
                           "val_accuracy": best["eval_rewards/accuracies"], "val_loss": best["eval_loss"]})
    chosen = max(candidates, key=lambda c: c["val_gold_reward"])
    cfg, policy = chosen["cfg"], chosen["result"].policy

    ref_figures = scorecard(reference).figures()
    figures = scorecard(policy, reference).figures()
    best = world.best_gold_reward(PROTOCOL_SPLIT)
    out = {k: figures[k] for k in ("gold_reward", "kl", "win_rate", "malformed", *FAILURES)}
    out["gap_closed"] = gap_closed(figures["gold_reward"], ref_figures["gold_reward"], best)
    out["cut"] = {k: 1 - figures[k] / ref_figures[k] for k in FAILURES if ref_figures[k] > 0}
    out["reference_malformed"] = ref_figures["malformed"]
    out["train_s"] = chosen["train_s"]
    out["chosen"] = {"beta": cfg.beta, "lr": cfg.lr, "nll_weight": cfg.nll_weight, "step": chosen["result"].best_step,
                     "val_gold_reward": chosen["val_gold_reward"], "val_accuracy": chosen["val_accuracy"]}
    out["candidates"] = {f"beta_{c['cfg'].beta}": {"val_gold_reward": c["val_gold_reward"],
                                                   "val_accuracy": c["val_accuracy"], "val_loss": c["val_loss"],
                                                   "step": c["result"].best_step, "train_s": c["train_s"]}
                         for c in candidates}
    pairs_per_prompt = round(len(train) / len({p.prompt for p in train}))
    out |= tabular_figures(reference, cfg.beta, pairs_per_prompt)
    return {"dpo": out}
