"""``make bench`` section for PPO (lesson 03): ``ppo.*``.

Protocol (issue 5): every choice is made on the *validation* split, every reported figure is on the *test* split.
- The enumerable setting: PPO from sampled batches of 256 on the test split's enumerable view, merged by equal reward
  (:meth:`helpers.enumerable.View.by_reward`: the same optimum, one logit per group), at beta = 1 (the
  tabular policy has one row per prompt, so it is trained and measured on the same prompts, as DESIGN.md defines
  ``*_gain_fraction``); :func:`helpers.ppo.enumerable_ppo` with its defaults, 300 iterations.
- The language model: PPO against the course reward model (``load_reward_model()``) when the artifact exists, and
  against the gold reward as an oracle *reward* (the selection is the same). For each, one run per beta of
  :data:`BETAS`; every choice uses the course's one selection rule (:mod:`helpers.selection`): within a run the
  validation check with the highest judged win rate against the reference is kept (``PPOConfig.keep_best``), and
  across runs the beta whose kept checkpoint has the highest validation win rate wins (ties: the larger beta).
  The gold reward on validation is logged beside each choice, never used for it. Then the test-split scorecard.

And the implementation-detail ablation that ``make artifacts`` precomputes for lesson 03
(``python -m helpers build ppo-ablation``): lesson 03's run against the course reward model with one detail of
PPO switched off at a time (:data:`ABLATIONS`), each row's history and test figures, plus the reference model's
pass@k and attempt/decline rates on the answerable prompts of the train and test splits, and PPO's curve on the
test split's enumerable view (:func:`helpers.ppo.enumerable_ppo`, 300 iterations) against the exact optimum.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import torch

from .. import enumerable, ppo, rlhf, selection, world
from ..checkpoint import ARTIFACTS
from ..evaluate import PROTOCOL_SPLIT, answer_rates, gap_closed, pass_rates, scorecard
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


def failure_cuts(figures: dict, ref_figures: dict) -> dict:
    """{"cut": {failure: 1 - rate / reference rate}, "worse_than_reference": [failures and malformed that rose]}."""
    return {"cut": {k: 1 - figures[k] / ref_figures[k] for k in FAILURES if ref_figures[k] > 0},
            "worse_than_reference": [k for k in (*FAILURES, "malformed") if figures[k] > ref_figures[k]]}


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
        runs.append({"beta": beta, "result": result, "train_s": seconds, "val_win_rate": best["val/win_rate"],
                     "val_gold_reward": best["val/gold_reward"]})     # gold: logged, never chosen by
    # larger beta first: on a tie, the more conservative run
    order = sorted(range(len(runs)), key=lambda i: -runs[i]["beta"])
    chosen = runs[selection.choose({i: runs[i]["val_win_rate"] for i in order})]
    figures = scorecard(chosen["result"].policy, reference).figures()
    out = {k: figures[k] for k in ("gold_reward", "kl", "win_rate", "malformed", "eos_rate", "distinct_responses",
                                   *FAILURES)}
    out["gap_closed"] = gap_closed(figures["gold_reward"], ref_figures["gold_reward"],
                                   world.best_gold_reward(PROTOCOL_SPLIT))
    out |= failure_cuts(figures, ref_figures)
    out["train_s"] = chosen["train_s"]
    out["chosen"] = {"beta": chosen["beta"], "iteration": chosen["result"].best_iteration,
                     "val_win_rate": chosen["val_win_rate"], "val_gold_reward": chosen["val_gold_reward"],
                     "selection": "helpers.selection (judged validation win rate against the reference)"}
    out["candidates"] = {f"beta_{r['beta']}": {"val_win_rate": r["val_win_rate"], "val_gold_reward": r["val_gold_reward"],
                                               "train_s": r["train_s"], "iteration": r["result"].best_iteration}
                         for r in runs}
    return out


# ----------------------------------------------------------------------------------------------------------------
# lesson 03's implementation-detail ablation (make artifacts)

ABLATION_PATH = ARTIFACTS / "ppo_ablation.json"
# lesson 03's live run against the course reward model: every row is this with one thing changed
ABLATION_BASE = rlhf.PPOConfig(beta=0.2, iterations=8, eval_every=4, eval_prompts=128)
# (row name, the fields changed); the first row is the lesson's run itself
ABLATIONS = (
    ("all details on", {}),
    ("no reward whitening", {"whiten_rewards": False}),
    ("reward whitening without its constant", {"whiten_rewards_keep_mean": False}),
    ("no advantage whitening", {"whiten_advantages": False}),
    ("no value clipping", {"clip_range_value": None}),
    ("no gradient clipping", {"max_grad_norm": None}),
    ("no missing-<eos> penalty", {"missing_eos_penalty": 0.0}),
    ("beta too high (2.0)", {"beta": 2.0}),
    ("fixed beta 0.05", {"beta": 0.05}),
    # a gain of 1, not Ziegler et al.'s 0.1: beta may move by x1.2 per iteration, and a run has 8 iterations
    ("adaptive KL from beta 0.05, target 0.5 nats", {"beta": 0.05, "kl_target": 0.5, "k_beta": 1.0}),
)
ABLATION_FIGURES = ("gold_reward", "kl", "win_rate", "malformed", "eos_rate", "harmful_compliance", "false_answer",
                    "fabrication", "insult", "distinct_responses")
HISTORY_KEYS = ("iteration", "objective/kl", "objective/scores", "objective/gold", "objective/entropy",
                "policy/clipfrac", "policy/approxkl", "policy/grad_norm", "value/clipfrac", "loss/value",
                "response/length", "response/eos_rate", "beta", "val/win_rate", "val/gold_reward", "val/kl")
PASS_N = 16                  # samples per answerable prompt for the reference's pass@k
ANSWER_N = 4                 # samples per answerable prompt for the attempt / decline rates


def ablation_config(changes: dict) -> rlhf.PPOConfig:
    """:data:`ABLATION_BASE` with ``changes``, training to the last iteration (no checkpoint kept: a row shows what
    the detail did to the run, not what selection could rescue)."""
    return dataclasses.replace(ABLATION_BASE, keep_best=False, **changes)


def ablation_row(row: tuple[str, dict]) -> dict:
    """Train one row of :data:`ABLATIONS` and measure it: its history and the test figures of its last iterate."""
    name, changes = row
    torch.set_num_threads(1)
    from ..reward import load_reward_model
    reference, reward_model = load_reference(), load_reward_model()
    train, val = list(world.prompts("train")), list(world.prompts("validation"))
    start = time.perf_counter()
    result = rlhf.train_ppo(None, reference, reward_model, train, val, ablation_config(changes), desc=name)
    seconds = time.perf_counter() - start
    figures = scorecard(result.policy, reference).figures()
    history = [{k: h[k] for k in HISTORY_KEYS if k in h} for h in result.history]
    return {"name": name, "changes": changes, "train_s": seconds, "history": history,
            "test": {k: figures[k] for k in ABLATION_FIGURES}}


def reference_answering() -> dict:
    """The reference model on the answerable prompts of train and test: pass@1, pass@4, pass@16 from
    :data:`PASS_N` samples (and pass@1 from the first 2, the slice lesson 03 reruns live), and
    :func:`helpers.evaluate.answer_rates` from :data:`ANSWER_N`."""
    torch.set_num_threads(1)
    reference = load_reference()
    out = {}
    for split in ("train", "test"):
        rates = pass_rates(reference, split, n=PASS_N)
        out[split] = {**rates.figures((1, 4, PASS_N)), "pass@1_n2": pass_rates(reference, split, n=2).at(1),
                      "prompts": len(rates.prompts), "answers": answer_rates(reference, split, n=ANSWER_N)}
    return out


def enumerable_curve(split: str = PROTOCOL_SPLIT) -> dict:
    """:func:`helpers.ppo.enumerable_ppo` with its defaults on ``split``'s view merged by equal reward, per
    iteration: gain fraction, KL and expected gold reward of the table policy; and the optimum's KL and reward."""
    from ..optimal import kl_divergence, optimal_policy
    torch.set_num_threads(1)
    view = enumerable.load_view(split).by_reward()
    cfg = ppo.EnumerablePPOConfig()
    start = time.perf_counter()
    result = ppo.enumerable_ppo(view.ref_probs, view.rewards, cfg)
    seconds = time.perf_counter() - start
    best = optimal_policy(view.ref_probs, view.rewards, cfg.beta)
    return {"config": dataclasses.asdict(cfg), "split": split, "seconds": seconds,
            "history": [{k: h[k] for k in ("iteration", "gain_fraction", "kl", "reward")} for h in result.history],
            "optimum": {"kl": float(kl_divergence(best, view.ref_probs).mean()),
                        "reward": float((best * view.rewards).sum(-1).mean())},
            "max_abs_prob_gap": float((result.probs - best).abs().max())}


def _ablation_job(job):
    if job == "reference":
        return reference_answering()
    return enumerable_curve() if job == "enumerable" else ablation_row(job)


def build_ablation(path: Path = ABLATION_PATH, processes: int = 2) -> dict:
    """Run every row of :data:`ABLATIONS` and the reference's answering figures (``processes`` at a time, one torch
    thread each) and save them as JSON."""
    jobs = ["reference", "enumerable", *ABLATIONS]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_ablation_job, jobs, chunksize=1)
    base = {k: v for k, v in dataclasses.asdict(ablation_config({})).items()}
    out = {"config": base, "pass_n": PASS_N, "answer_n": ANSWER_N, "reference_answering": results[0],
           "enumerable": results[1], "rows": results[2:]}
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def load_ablation(path: Path = ABLATION_PATH) -> dict:
    """The committed ablation (built by ``make artifacts``): {"config", "rows", "reference_answering", ...};
    ``ablation_row_named(table, name)`` picks one row."""
    return json.loads(Path(path).read_text())


def ablation_row_named(table: dict, name: str) -> dict:
    """The row of ``table`` called ``name``."""
    return next(r for r in table["rows"] if r["name"] == name)


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
