"""``make bench`` section for DPO (lesson 04): align the reference on the course preference set, report ``dpo.*``;
and the beta sweep that ``make artifacts`` precomputes for the lesson (``python -m helpers build dpo-beta-sweep``).

Protocol (issues 6 and 16): every choice is made on the *validation* split, every reported figure is on the *test*
split, and every choice uses the course's one selection rule (:mod:`helpers.selection`): the judged win rate against
the reference on fresh validation samples, never the gold reward.
- The stopping step: :func:`helpers.dpo.train_dpo` with ``select`` = the validation win rate keeps the check with the
  highest one. (The validation *loss* or preference accuracy cannot choose: they barely move while a small beta
  degenerates the outputs, lesson 04 shows it, and the loss is not comparable across betas.)
- beta: one run per entry of :data:`GRID`; the run with the highest validation win rate at its kept step wins.
- Tabular DPO: on the test split's enumerable view merged by equal reward (:meth:`helpers.enumerable.View.by_reward`:
  the same optimum, frontier and beta log Z, a few groups per prompt instead of ~200 candidates), the exact expected
  loss at the chosen beta, and the same from sampled pairs as many per prompt as the course preference set has,
  measured at beta_KL = tau * beta.
"""
from __future__ import annotations

import json
import multiprocessing
import random
import time
from pathlib import Path

import torch

from .. import dpo, enumerable, optimal, selection, world
from ..checkpoint import ARTIFACTS
from ..evaluate import PROTOCOL_SPLIT, answer_rates, gap_closed, scorecard
from ..pretrain import PretrainConfig, load_reference
from ..reward import COURSE_TAU, load_preferences
from .ppo import failure_cuts

# the candidates; 4 epochs at most (one is too few: lesson 04 shows it), the validation win rate picks the step
GRID = tuple(dpo.DPOConfig(beta=beta, lr=3e-4, nll_weight=0.5, max_epochs=4, eval_every=40, patience=3)
             for beta in (0.3, 0.5, 1.0))
VALIDATION_PAIRS = 1500      # a fixed random subset of the validation pairs, for the logged validation loss (speed)
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
        result = dpo.train_dpo(train, val_subset, cfg, reference=reference, desc=f"DPO beta={cfg.beta}",
                               select=lambda p: selection.validation_win_rate(p, reference).value)
        seconds = time.perf_counter() - start
        best = next(h for h in result.history if h["step"] == result.best_step)
        candidates.append({"cfg": cfg, "result": result, "train_s": seconds, "val_win_rate": best["select"],
                           # gold on validation: logged beside the choice, never used for it
                           "val_gold_reward": scorecard(result.policy, prompts=val_prompts).gold_reward,
                           "val_accuracy": best["eval_rewards/accuracies"], "val_loss": best["eval_loss"]})
    # selection.choose breaks ties towards the first listed: list the larger (more conservative) beta first
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i]["cfg"].beta)
    chosen = candidates[selection.choose({i: candidates[i]["val_win_rate"] for i in order})]
    cfg, policy = chosen["cfg"], chosen["result"].policy

    ref_figures = scorecard(reference).figures()
    figures = scorecard(policy, reference).figures()
    best = world.best_gold_reward(PROTOCOL_SPLIT)
    out = {k: figures[k] for k in ("gold_reward", "kl", "win_rate", "malformed", *FAILURES)}
    out["gap_closed"] = gap_closed(figures["gold_reward"], ref_figures["gold_reward"], best)
    out["cut"] = failure_cuts(figures, ref_figures)["cut"]
    out["reference_malformed"] = ref_figures["malformed"]
    out["train_s"] = chosen["train_s"]
    out["chosen"] = {"beta": cfg.beta, "lr": cfg.lr, "nll_weight": cfg.nll_weight, "step": chosen["result"].best_step,
                     "val_win_rate": chosen["val_win_rate"], "val_gold_reward": chosen["val_gold_reward"],
                     "val_accuracy": chosen["val_accuracy"]}
    out["candidates"] = {f"beta_{c['cfg'].beta}": {"val_win_rate": c["val_win_rate"],
                                                   "val_gold_reward": c["val_gold_reward"],
                                                   "val_accuracy": c["val_accuracy"], "val_loss": c["val_loss"],
                                                   "step": c["result"].best_step, "train_s": c["train_s"]}
                         for c in candidates}
    pairs_per_prompt = round(len(train) / len({p.prompt for p in train}))
    out |= tabular_figures(reference, cfg.beta, pairs_per_prompt)
    return {"dpo": out}


# ----------------------------------------------------------------------------------------------------------------
# the beta sweep of lesson 04 (issue 16): beta alone varied, everything else the lesson's main run, for two epochs

BETA_SWEEP_PATH = ARTIFACTS / "dpo_beta_sweep.json"
SWEEP_BETAS = (0.1, 0.25, 0.5, 1.0, 2.0)
SWEEP_NLL_WEIGHTS = (0.0, 0.5)   # pure DPO, and the lesson's main run (NLL 0.5)
SWEEP_VALIDATION_PAIRS = 300     # lesson 04's val_subset: random.Random(0).sample(validation pairs, 300)
SWEEP_FIGURES = ("gold_reward", "kl", "win_rate", "malformed", "harmful_compliance", "false_answer", "fabrication",
                 "insult")


def sweep_config(beta: float, nll_weight: float) -> dpo.DPOConfig:
    """Lesson 04's main run (lr 3e-4, batch 64, checks every 30 steps) at ``beta`` and ``nll_weight``, for two
    epochs, with no early stop (patience never runs out): the whole curve is recorded, the selection rule picks the
    kept step. The lesson trains the first 120 steps of the (0.5, 0.5) point live."""
    return dpo.DPOConfig(beta=beta, lr=3e-4, batch_size=64, nll_weight=nll_weight, max_epochs=2, eval_every=30,
                         patience=10 ** 6)


def sweep_point(beta: float, nll_weight: float) -> dict:
    """One point of the sweep: the history (validation loss and accuracy, the selection score, and the test figures
    at every check: recorded, never used to choose), the kept step, and what the kept policy does with the
    answerable prompts of the train and test splits."""
    torch.set_num_threads(1)
    reference = load_reference()
    train = load_preferences("train")
    val_subset = random.Random(0).sample(load_preferences("validation"), SWEEP_VALIDATION_PAIRS)

    def test_figures(policy) -> dict:
        figures = scorecard(policy, reference).figures()
        return {f"test_{k}": figures[k] for k in SWEEP_FIGURES}

    start = time.perf_counter()
    result = dpo.train_dpo(train, val_subset, sweep_config(beta, nll_weight), reference=reference,
                           desc=f"DPO beta={beta} nll={nll_weight}", on_eval=test_figures,
                           select=lambda p: selection.validation_win_rate(p, reference).value)
    seconds = time.perf_counter() - start
    keep = ("step", "eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "select") + tuple(
        f"test_{k}" for k in SWEEP_FIGURES)
    return {"beta": beta, "nll_weight": nll_weight, "best_step": result.best_step, "seconds": seconds,
            "steps_per_epoch": len(train) // sweep_config(beta, nll_weight).batch_size,
            "history": [{k: h[k] for k in keep} for h in result.history],
            "answers": {split: answer_rates(result.policy, split, n=4) for split in ("train", "test")}}


def _sweep_point(args) -> dict:
    return sweep_point(*args)


def build_beta_sweep(path: Path = BETA_SWEEP_PATH, processes: int = 2) -> dict:
    """Run every (beta, NLL weight) point of the sweep (``processes`` at a time, one torch thread each), choose
    each NLL setting's beta by the selection rule, and save it all as JSON."""
    points = [(b, w) for w in SWEEP_NLL_WEIGHTS for b in SWEEP_BETAS]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        runs = pool.map(_sweep_point, points, chunksize=1)
    chosen = {}
    for w in SWEEP_NLL_WEIGHTS:
        mine = {r["beta"]: r for r in runs if r["nll_weight"] == w}
        # larger beta first: on a tie, the more conservative run
        scores = {b: next(h["select"] for h in mine[b]["history"] if h["step"] == mine[b]["best_step"])
                  for b in sorted(mine, reverse=True)}
        chosen[str(w)] = selection.choose(scores)
    out = {"config": {k: v for k, v in sweep_config(0.5, 0.5).__dict__.items() if k not in ("beta", "nll_weight")},
           "betas": list(SWEEP_BETAS), "nll_weights": list(SWEEP_NLL_WEIGHTS),
           "validation_pairs": SWEEP_VALIDATION_PAIRS, "selection": "helpers.selection.validation_win_rate",
           "chosen_beta": chosen, "runs": runs}
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def load_beta_sweep(path: Path = BETA_SWEEP_PATH) -> dict:
    """The committed sweep (built by ``make artifacts``): {"config", "betas", "nll_weights", "chosen_beta", "runs"};
    ``sweep_run(sweep, beta, nll_weight)`` picks one run."""
    return json.loads(Path(path).read_text())


def sweep_run(sweep: dict, beta: float, nll_weight: float) -> dict:
    """The run of ``sweep`` at ``beta`` and ``nll_weight``."""
    return next(r for r in sweep["runs"] if r["beta"] == beta and r["nll_weight"] == nll_weight)
