"""``make bench`` section for PPO (lesson 03): ``ppo.*``.

Protocol (issue 5): every choice is made on the *validation* split, every reported figure is on the *test* split.
- The enumerable setting: PPO from sampled batches of 256 on the test split's enumerable view, merged by equal reward
  (:meth:`helpers.enumerable.View.by_reward`: the same optimum, one logit per group), at beta = 1 (the
  tabular policy has one row per prompt, so it is trained and measured on the same prompts, as DESIGN.md defines
  ``*_gain_fraction``); :func:`helpers.ppo.enumerable_ppo` with its defaults, 300 iterations.
- The language model: PPO against the course reward model (``load_reward_model()``) when the artifact exists, and
  against the gold reward as an oracle. For each, one run per beta of :data:`BETAS`; within a run, the iteration
  whose validation gold reward is highest is kept (``PPOConfig.keep_best``), and across runs the beta with the
  highest validation gold reward wins. Then the test-split scorecard of the winner.
"""
from __future__ import annotations

import time

import torch

from .. import enumerable, ppo, rlhf, world
from ..evaluate import PROTOCOL_SPLIT, gap_closed, scorecard
from ..pretrain import PretrainConfig, load_reference

BETAS = (0.1, 0.2)           # the KL coefficients tried on validation against the course reward model
ORACLE_BETAS = (0.05,)       # the gold reward's scores spread about half as wide: the same pull in its units
RUN = rlhf.PPOConfig()        # everything else: the defaults
FAILURES = ("harmful_compliance", "false_answer", "fabrication", "insult")


def table_figures(train, iterations: int) -> dict:
    """Run ``train()``, a policy-gradient run on the enumerable view (PPO here, GRPO and RLOO in :mod:`.grpo`), and
    report ``enumerable_gain_fraction`` after ``iterations``, the first iteration reaching 95 %, the KL and seconds."""
    start = time.perf_counter()
    result = train()
    seconds = time.perf_counter() - start
    reached = next((h["iteration"] for h in result.history if h["gain_fraction"] >= 0.95), None)
    return {"enumerable_gain_fraction": result.history[-1]["gain_fraction"],
            "enumerable_iterations": iterations, "enumerable_iteration_95": reached,
            "enumerable_kl": result.history[-1]["kl"], "enumerable_s": seconds}


def enumerable_figures(reference, cfg: ppo.EnumerablePPOConfig = ppo.EnumerablePPOConfig()) -> dict:
    """:func:`table_figures` of :func:`helpers.ppo.enumerable_ppo` with ``cfg`` on the test split's view."""
    view = enumerable.load_view(PROTOCOL_SPLIT).by_reward()   # equal-reward candidates merged: same optimum
    return table_figures(lambda: ppo.enumerable_ppo(view.ref_probs, view.rewards, cfg), cfg.iterations)


def lm_figures(reference, reward, ref_figures: dict, betas=BETAS, cfg: rlhf.PPOConfig = RUN) -> dict:
    """Train one PPO run per beta against ``reward``, choose on validation, report the test scorecard."""
    train, val = list(world.prompts("train")), list(world.prompts("validation"))
    runs = []
    for beta in betas:
        run_cfg = rlhf.PPOConfig(**{**cfg.__dict__, "beta": beta})
        start = time.perf_counter()
        result = rlhf.train_ppo(None, reference, reward, train, val, run_cfg, desc=f"PPO beta={beta}")
        seconds = time.perf_counter() - start
        best = next(h for h in result.history if h["iteration"] == result.best_iteration)
        runs.append({"beta": beta, "result": result, "train_s": seconds, "val_gold_reward": best["val/gold_reward"]})
    chosen = max(runs, key=lambda r: r["val_gold_reward"])
    figures = scorecard(chosen["result"].policy, reference).figures()
    out = {k: figures[k] for k in ("gold_reward", "kl", "win_rate", "malformed", "eos_rate", "distinct_responses",
                                   *FAILURES)}
    out["gap_closed"] = gap_closed(figures["gold_reward"], ref_figures["gold_reward"],
                                   world.best_gold_reward(PROTOCOL_SPLIT))
    out["cut"] = {k: 1 - figures[k] / ref_figures[k] for k in FAILURES if ref_figures[k] > 0}
    out["worse_than_reference"] = [k for k in (*FAILURES, "malformed") if figures[k] > ref_figures[k]]
    out["train_s"] = chosen["train_s"]
    out["chosen"] = {"beta": chosen["beta"], "iteration": chosen["result"].best_iteration,
                     "val_gold_reward": chosen["val_gold_reward"]}
    out["candidates"] = {f"beta_{r['beta']}": {"val_gold_reward": r["val_gold_reward"], "train_s": r["train_s"],
                                               "iteration": r["result"].best_iteration} for r in runs}
    return out


def bench_ppo() -> dict:
    """{"ppo": {...}}: the enumerable figure, the run against the course reward model (when it exists) under the
    contract's keys, and the gold-reward oracle under ``ppo.oracle``."""
    torch.set_num_threads(PretrainConfig().threads)
    reference = load_reference()
    ref_figures = scorecard(reference).figures()
    out = enumerable_figures(reference)
    try:
        from ..reward import load_reward_model
        reward_model = load_reward_model()
    except (ImportError, FileNotFoundError) as e:
        out["reward_model_missing"] = f"{type(e).__name__}: {e}"
    else:
        out |= lm_figures(reference, reward_model, ref_figures)
    out["oracle"] = lm_figures(reference, rlhf.gold_reward_function, ref_figures, ORACLE_BETAS)
    return {"ppo": out}
