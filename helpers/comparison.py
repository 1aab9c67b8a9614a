"""The controlled comparison: every method on the same data, the same budget and the same axes (lesson 05).

One preference set (the course's), one reward model (the course's, trained on it), one budget: the same labels and,
for the online methods, the same number of sampled responses (:class:`ComparisonBudget`). Best-of-N (N swept), PPO,
DPO, GRPO and RLOO (each swept over its strength beta) are run; every strength and every stopping point is chosen
by the course's one selection rule (:func:`helpers.selection.validation_win_rate`: the simulated annotator's judged
win rate against the reference on fresh *validation* samples; never the gold reward, never the test split). The
chosen runs are then measured on the *test* split on two axes that must never be mixed:

- **free-running**: the scorecard's gold reward (95 % interval), the sequence-level KL from samples, gap_closed and
  the win rate (:mod:`helpers.evaluate`); for Best-of-N the KL is the exact formula log N - (N - 1)/N;
- **enumerable**: the policy restricted to the test view's candidates (its probabilities renormalised; the
  unmerged view, so that its KL is exact, :meth:`helpers.enumerable.View.by_reward`) as a point (expected gold
  reward, KL to pi_ref), its probability mass on the candidates, and :func:`fraction_of_optimum` against the exact
  frontier (:func:`exact_frontier`); Best-of-N exactly, from :func:`helpers.optimal.best_of_n_policy` with the
  reward model's scores of the candidates. :func:`frontier_check` verifies that no point lies above the frontier.

Every other cost is measured and reported beside them (:data:`COST_KEYS`). ``make artifacts`` runs both settings
once into ``helpers/artifacts/comparison.json`` (:func:`build_comparison`, :func:`load_comparison`); the lesson
reruns the ``short`` setting live and checks with :func:`differences` that it reproduces the committed one.

Shapes: N = test prompts on the view, K = candidates per prompt (padded). Used in lesson 05.
"""
from __future__ import annotations

import ast
import copy
import importlib
import inspect
import io
import json
import math
import random
import textwrap
import time
import tokenize
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import dpo, enumerable, grpo, optimal, reward, rlhf, selection, world
from .checkpoint import ARTIFACTS, load_results, save_results
from .evaluate import PROTOCOL_SEED, PROTOCOL_SPLIT, PROTOCOL_TEMPERATURE, gap_closed, scorecard, win_rate
from .model import LanguageModel
from .pretrain import load_reference
from .sampling import Samples, sample_responses, sequence_kl
from .threads import one_thread

COMPARISON_PATH = ARTIFACTS / "comparison.json"
METHODS = ("best_of_n", "ppo", "dpo", "grpo", "rloo")
ONLINE = ("ppo", "grpo", "rloo")
BATCH = 256                   # sampled responses per online iteration: PPO's batch, GRPO's 32 prompts x 8
BEST_OF_N_SEEDS = {"validation": 7, "test": 11}   # the Best-of-N draws: seeds of their own on each split
FRONTIER_TOLERANCE = 1e-3     # gold-reward units: a point this far above the exact frontier is flagged
COST_KEYS = ("train_s", "responses_sampled", "labels_used", "reward_model_calls", "models_in_memory",
             "gradient_steps", "lines_of_code")


@dataclass(frozen=True)
class ComparisonBudget:
    """What every method gets. Strengths are listed most conservative first (largest beta, smallest N): the
    selection rule breaks ties towards the first listed."""
    iterations: int = 20           # online methods: iterations of BATCH sampled responses each (5,120 in all)
    check_every: int = 4           # iterations between selection checks (each: 456 validation samples, judged)
    dpo_steps: int = 240           # DPO steps of 64 pairs: two passes over the course's 7,886 training pairs
    dpo_check_every: int = 40      # DPO steps between selection checks
    dpo_pairs: int | None = None   # None: every training pair; a number: a seeded sample of them (the short run)
    best_of_n: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    ppo_betas: tuple[float, ...] = (0.3, 0.1, 0.03)       # KL coefficient, per-token k1 in the reward (score units)
    dpo_betas: tuple[float, ...] = (1.0, 0.3, 0.1)        # DPO's beta, with lesson 04's NLL term (weight 0.5)
    grpo_betas: tuple[float, ...] = (0.16, 0.04, 0.01)    # GRPO's k3 term in the loss
    rloo_betas: tuple[float, ...] = (0.3, 0.1, 0.03)      # RLOO: KL in the reward, as Ahmadian et al. do
    enumerable_stride: int = 1     # every k-th test prompt on the enumerable view (1: all 452)
    every_strength_on_test: bool = True   # also measure the runs not chosen (for the plots; nothing is chosen there)
    trajectories: bool = True      # at every check, also the test samples' gold reward, proxy score and KL (reported
                                   # for the over-optimisation plot, never read by the selection)
    seed: int = 0

    def strengths(self, method: str) -> tuple:
        return {"best_of_n": self.best_of_n, "ppo": self.ppo_betas, "dpo": self.dpo_betas,
                "grpo": self.grpo_betas, "rloo": self.rloo_betas}[method]


SETTINGS = {
    # the live rerun: one strength each, two iterations or 20 DPO steps; 10-20 s per method on a quiet machine
    "short": ComparisonBudget(iterations=2, check_every=2, dpo_steps=20, dpo_check_every=20, dpo_pairs=20 * 64,
                              best_of_n=(1, 4),
                              ppo_betas=(0.1,), dpo_betas=(0.3,), grpo_betas=(0.04,), rloo_betas=(0.1,),
                              enumerable_stride=8, every_strength_on_test=False,
                              trajectories=False),
    "full": ComparisonBudget(),
}

# ----------------------------------------------------------------------------------------------------------------
# the exact frontier and the distance to it


def exact_frontier(ref_probs: torch.Tensor, rewards: torch.Tensor, points: int = 600) -> list[dict]:
    """The exact reward-KL frontier [{beta, kl, reward}], sorted by KL, from :func:`helpers.optimal.frontier` over a
    fine grid of beta (1e-3 .. 1e3, log-spaced), closed at both ends: pi_ref (beta = inf, KL 0) and the limit
    beta -> 0 (pi_ref restricted to each prompt's best candidates; the highest reward any policy can reach).
    Computed in float64: near pi_ref the KLs are ~1e-7, where float32's rounding would disorder them."""
    ref_probs, rewards = ref_probs.double(), rewards.double()
    betas = torch.logspace(3, -3, points, dtype=torch.float64).tolist()
    curve = [{"beta": p["beta"], "kl": p["kl"], "reward": p["reward"]}
             for p in optimal.frontier(ref_probs, rewards, betas)]
    real = ref_probs > 0
    best = rewards.masked_fill(~real, float("-inf")).amax(-1, keepdim=True)                # [N, 1]
    greedy = ref_probs * (rewards == best) * real
    greedy = greedy / greedy.sum(-1, keepdim=True)
    ends = [{"beta": math.inf, "kl": 0.0, "reward": float((ref_probs * rewards).sum(-1).mean())},
            {"beta": 0.0, "kl": float(optimal.kl_divergence(greedy, ref_probs).mean()),
             "reward": float((greedy * rewards).sum(-1).mean())}]
    return [ends[0]] + curve + [ends[1]]          # KL grows as beta falls


def frontier_reward(kl: float, frontier: list[dict]) -> float:
    """R*(KL): the frontier's gold reward at ``kl``, interpolated linearly (the frontier is concave, so on a fine
    grid the chord lies a hair below it); beyond its last point, the highest reward reachable."""
    kls, rs = [p["kl"] for p in frontier], [p["reward"] for p in frontier]
    if kl <= kls[0]:
        return rs[0]
    if kl >= kls[-1]:
        return rs[-1]
    i = next(i for i in range(1, len(kls)) if kls[i] >= kl)
    w = (kl - kls[i - 1]) / max(kls[i] - kls[i - 1], 1e-300)
    return rs[i - 1] + w * (rs[i] - rs[i - 1])


def fraction_of_optimum(reward_: float, kl: float, frontier: list[dict]) -> float:
    """(R - R_ref) / (R*(KL) - R_ref): the share of what the exact optimum gains at the same KL that a policy gains.
    1 on the frontier, 0 at pi_ref's reward; 0 when the optimum itself gains nothing at that KL (KL = 0)."""
    ref = frontier[0]["reward"]
    possible = frontier_reward(kl, frontier) - ref
    return 0.0 if possible <= 1e-12 else (reward_ - ref) / possible


def frontier_check(points: list[dict], frontier: list[dict], tolerance: float = FRONTIER_TOLERANCE) -> dict:
    """Does any point {name, kl, reward} lie above the exact frontier by more than ``tolerance``? Such a point
    means the KL was under-counted (a merged view, a missing renormalisation), since no policy can beat pi*."""
    excess = {p["name"]: p["reward"] - frontier_reward(p["kl"], frontier) for p in points}
    above = sorted(name for name, e in excess.items() if e > tolerance)
    return {"tolerance": tolerance, "max_excess": max(excess.values(), default=0.0), "above": above,
            "all_below": not above}


def policy_on_view(policy: LanguageModel, view: enumerable.View) -> tuple[torch.Tensor, torch.Tensor]:
    """A language model restricted to the view's candidates: (probs [N, K] renormalised over each prompt's
    candidates, mass [N] the share of the model's probability the candidates hold)."""
    flat = enumerable.sequence_logprobs_of(policy, [p.text for p, ts in zip(view.prompts, view.texts) for _ in ts],
                                           [t for ts in view.texts for t in ts], desc="the policy on the view")
    logps = torch.full(view.logps.shape, float("-inf"))
    i = 0
    for n, ts in enumerate(view.texts):
        logps[n, :len(ts)] = flat[i:i + len(ts)]
        i += len(ts)
    return torch.softmax(logps, -1), logps.exp().sum(-1)


def view_point(probs: torch.Tensor, view: enumerable.View, frontier: list[dict]) -> dict:
    """The enumerable figures of a policy over the candidates: expected gold reward, KL to pi_ref, fraction."""
    r = float((probs * view.rewards).sum(-1).mean())
    kl = float(optimal.kl_divergence(probs, view.ref_probs).mean())
    return {"reward": r, "kl": kl, "fraction_of_optimum": fraction_of_optimum(r, kl, frontier)}


# ----------------------------------------------------------------------------------------------------------------
# lines of code


def lines_of_code(*objects) -> int:
    """Lines of code of functions and classes, counted from their source with ``inspect``: lines holding code,
    not blank lines, comments or docstrings."""
    total = 0
    for obj in objects:
        source = textwrap.dedent(inspect.getsource(obj))
        docstrings = set()
        for node in ast.walk(ast.parse(source)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                docstrings |= set(range(body[0].lineno, body[0].end_lineno + 1))
        code = set()
        skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                tokenize.ENCODING, tokenize.ENDMARKER)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type not in skip:
                code |= set(range(tok.start[0], tok.end[0] + 1))
        total += len(code - docstrings)
    return total


# what each method's implementation is: its loss and loop, and the pieces they call that the course wrote for it
# (the shared model, sampling and tokenizer are everyone's and are not counted)
_PPO = ["helpers.ppo:" + n for n in ("masked_mean", "whiten", "kl_penalised_rewards", "gae", "clipped_policy_loss",
                                     "clipped_value_loss", "FixedKLController", "AdaptiveKLController")] + \
       ["helpers.rlhf:" + n for n in ("PPOConfig", "Rollouts", "response_values", "_score", "rollout",
                                      "compute_advantages", "ppo_update", "make_value_model", "train_ppo")]
_GROUP = ["helpers.ppo:clipped_policy_loss", "helpers.ppo:kl_penalised_rewards", "helpers.ppo:masked_mean"] + \
         ["helpers.grpo:" + n for n in ("k3_kl", "grpo_loss", "GRPOConfig", "_scores", "group_rewards",
                                        "advantages_of", "train_grpo")]
IMPLEMENTATIONS = {
    "best_of_n": ["helpers.reward:best_of_n"],
    "ppo": _PPO,
    "dpo": ["helpers.dpo:" + n for n in ("_check_same_shape", "_check_beta", "_log_ratio_difference", "dpo_loss",
                                         "DPOConfig", "_logps", "_reference_logps", "_pair_step", "_evaluate",
                                         "train_dpo")] + ["helpers.early_stopping:EarlyStopping"],
    "grpo": _GROUP + ["helpers.grpo:grpo_advantages"],
    "rloo": _GROUP + ["helpers.grpo:rloo_advantages"],
}
REWARD_MODEL_IMPLEMENTATION = ["helpers.reward:" + n for n in ("bradley_terry_loss", "RewardModel", "_mean_loss",
                                                               "train_reward_model")]


def _resolve(name: str):
    module, attr = name.split(":")
    return getattr(importlib.import_module(module), attr)


def implementation_lines(method: str) -> dict:
    """{lines_of_code, lines_of_code_with_reward_model}: the method's own code, and with the reward model's training
    added for the methods that need one."""
    own = lines_of_code(*map(_resolve, IMPLEMENTATIONS[method]))
    rm = lines_of_code(*map(_resolve, REWARD_MODEL_IMPLEMENTATION)) if method != "dpo" else 0
    return {"lines_of_code": own, "lines_of_code_with_reward_model": own + rm}


# ----------------------------------------------------------------------------------------------------------------
# one run per strength, stopping point chosen by the selection rule


@dataclass
class _Setup:
    budget: ComparisonBudget
    reference: LanguageModel
    reward_model: reward.RewardModel
    train_pairs: list
    labels_reward_model: int        # the preference labels the reward model consumed (train, and validation to stop)
    view: enumerable.View
    frontier: list[dict]
    reference_card: dict


class _Checkpoints:
    """Selection checks during a run: the judged validation win rate of the policy at each check, the best
    weights so far (ties: the earlier step), and the training time with the checks' own time left out."""

    def __init__(self, s: _Setup):
        self.s, self.rows, self.best = s, [], None
        self.start, self.checking = time.perf_counter(), 0.0

    def check(self, policy: LanguageModel, step: int, gradient_steps: int) -> None:
        t = time.perf_counter()
        train_s = t - self.start - self.checking
        score = float(selection.validation_win_rate(policy, self.s.reference))
        self.rows.append({"step": step, "val_win_rate": score, "train_s": train_s, "gradient_steps": gradient_steps})
        if self.s.budget.trajectories:
            self.rows[-1]["test"] = _trajectory_point(policy, self.s)
        if self.best is None or score > self.best[0]["val_win_rate"]:
            self.best = (self.rows[-1], copy.deepcopy(policy.state_dict()))
        self.checking += time.perf_counter() - t


def _online_config(method: str, beta: float, b: ComparisonBudget):
    """The PPO, GRPO or RLOO settings of one run: the lessons' defaults, ``beta`` and the budget's iterations."""
    if method == "ppo":
        cfg = replace(rlhf.PPOConfig(), beta=beta, iterations=b.iterations, eval_every=0, keep_best=False,
                      seed=b.seed)
        assert cfg.batch_size == BATCH
    else:
        cfg = replace(grpo.GRPOConfig(), beta=beta, iterations=b.iterations, seed=b.seed,
                      **({"advantage": "rloo", "kl_in": "reward"} if method == "rloo" else {}))
        assert cfg.prompts_per_batch * cfg.group_size == BATCH
    return cfg


def _train_online(method: str, policy: LanguageModel, reference: LanguageModel, reward_model, cfg, callback=None):
    """Train ``policy`` in place with PPO (against ``reward_model``, a value model of its own) or GRPO/RLOO."""
    train = list(world.prompts("train"))
    if method == "ppo":
        rlhf.train_ppo(policy, reference, reward_model, train, list(world.prompts("validation")), cfg,
                       callback=callback, desc=f"PPO beta={cfg.beta}")
    else:
        grpo.train_grpo(policy, reference, reward_model, train, cfg, callback=callback,
                        desc=f"{method.upper()} beta={cfg.beta}")


def _dpo_pairs(train_pairs: list, b: ComparisonBudget) -> list:
    """Every training pair, or the budget's seeded sample of them."""
    return train_pairs if b.dpo_pairs is None else random.Random(b.seed).sample(train_pairs, b.dpo_pairs)


def train_dpo_run(policy: LanguageModel, reference: LanguageModel, pairs: list, beta: float, b: ComparisonBudget,
               on_eval=None) -> None:
    """DPO with lesson 04's NLL term on ``pairs``, ``b.dpo_steps`` steps, ``on_eval`` every ``b.dpo_check_every``:
    the comparison's DPO run (lesson 05 also starts GRPO from one)."""
    # the validation pairs only feed the loop's logged loss: the stopping point is the selection rule's
    val_pairs = random.Random(b.seed).sample(reward.load_preferences("validation"), 256)
    cfg = dpo.DPOConfig(beta=beta, lr=3e-4, nll_weight=0.5, max_epochs=10 ** 6, max_steps=b.dpo_steps,
                        eval_every=b.dpo_check_every, patience=10 ** 9, seed=b.seed)
    dpo.train_dpo(pairs, val_pairs, cfg, policy=policy, reference=reference, on_eval=on_eval,
                  desc=f"DPO beta={beta}")


def _online_run(method: str, beta: float, s: _Setup) -> tuple[dict, LanguageModel]:
    b = s.budget
    policy = copy.deepcopy(s.reference)
    checks = _Checkpoints(s)
    checks.rows.append({"step": 0, "val_win_rate": 0.5, "train_s": 0.0, "gradient_steps": 0})  # pi_ref itself
    checks.best = (checks.rows[0], copy.deepcopy(policy.state_dict()))
    cfg = _online_config(method, beta, b)
    if method == "ppo":
        steps_per_iteration = cfg.epochs * math.ceil(cfg.batch_size / cfg.minibatch_size)
    else:
        steps_per_iteration = cfg.epochs * math.ceil(cfg.prompts_per_batch * cfg.group_size / cfg.minibatch_size)

    def callback(row: dict) -> None:
        it = row["iteration"]
        if it > 0 and (it % b.check_every == 0 or it == b.iterations):
            checks.check(policy, it, it * steps_per_iteration)

    _train_online(method, policy, s.reference, s.reward_model, cfg, callback)
    return _chosen_run(beta, checks, policy, {
        "responses_sampled": checks.best[0]["step"] * BATCH, "labels_used": s.labels_reward_model,
        "reward_model_calls": checks.best[0]["step"] * BATCH,
        "models_in_memory": 4 if method == "ppo" else 3})   # + the value model for PPO


def _dpo_run(beta: float, s: _Setup) -> tuple[dict, LanguageModel]:
    b = s.budget
    assert b.dpo_steps % b.dpo_check_every == 0
    policy = copy.deepcopy(s.reference)
    checks = _Checkpoints(s)
    calls = []

    def on_eval(model: LanguageModel) -> dict:
        step = len(calls) * b.dpo_check_every
        calls.append(step)
        if step == 0:    # pi_ref itself: its judged win rate against itself is 1/2 exactly
            checks.rows.append({"step": 0, "val_win_rate": 0.5, "train_s": 0.0, "gradient_steps": 0})
            checks.best = (checks.rows[0], copy.deepcopy(model.state_dict()))
        else:
            checks.check(model, step, step)
        return {}

    pairs = _dpo_pairs(s.train_pairs, b)
    train_dpo_run(policy, s.reference, pairs, beta, b, on_eval)
    return _chosen_run(beta, checks, policy, {"responses_sampled": 0, "labels_used": len(pairs),
                                              "reward_model_calls": 0, "models_in_memory": 2})


def _chosen_run(beta: float, checks, policy: LanguageModel, costs: dict) -> tuple[dict, LanguageModel]:
    """The policy at the check the selection rule chose, and the run's record with that check's costs."""
    chosen, state = checks.best
    policy.load_state_dict(state)
    run = {"strength": beta, "checks": checks.rows, "chosen_step": chosen["step"],
           "val_win_rate": chosen["val_win_rate"], "train_s": chosen["train_s"],
           "run_train_s": checks.rows[-1]["train_s"],
           "costs": {"train_s": chosen["train_s"], **costs, "gradient_steps": chosen["gradient_steps"]}}
    run["selection_samples"] = (len(checks.rows) - 1) * len(world.prompts(selection.SELECTION_SPLIT))
    return run, policy.eval()


@torch.no_grad()
def _trajectory_point(policy: LanguageModel, s: _Setup) -> dict:
    """Gold reward, proxy (reward-model) score and sequence KL of the policy's test samples (reported only)."""
    samples = sample_responses(policy, list(world.prompts(PROTOCOL_SPLIT)), PROTOCOL_TEMPERATURE, PROTOCOL_SEED)
    gold = [world.gold_reward(p, t) for p, t in zip(samples.prompts, samples.texts)]
    return {"gold_reward": sum(gold) / len(gold), "proxy_reward": float(reward.score_samples(s.reward_model,
                                                                                            samples).mean()),
            "kl": sequence_kl(policy, s.reference, samples, PROTOCOL_TEMPERATURE)}


def _free_running(policy: LanguageModel, s: _Setup) -> dict:
    """The test scorecard's figures of a policy, and the reward model's mean score of the same samples (proxy)."""
    card = scorecard(policy, s.reference)
    samples = sample_responses(policy, list(world.prompts(PROTOCOL_SPLIT)), PROTOCOL_TEMPERATURE, PROTOCOL_SEED)
    return _figures(card.gold_reward, card.gold_reward_ci, card.kl, card.win_rate, s) | {
        "proxy_reward": float(reward.score_samples(s.reward_model, samples).mean()),
        "rates": {k: r.value for k, r in card.rates.items()}}


def _figures(gold: float, ci: float, kl: float, wins: float, s: _Setup) -> dict:
    ref, best = s.reference_card["gold_reward"], s.reference_card["best_gold_reward"]
    return {"gold_reward": gold, "gold_reward_ci": ci, "kl": kl, "win_rate": wins,
            "gap_closed": gap_closed(gold, ref, best)}


def _model_method(method: str, s: _Setup, log) -> dict:
    runs = []
    for beta in s.budget.strengths(method):
        t = time.perf_counter()
        run, policy = _dpo_run(beta, s) if method == "dpo" else _online_run(method, beta, s)
        run["sweep_s"] = time.perf_counter() - t
        runs.append((run, policy))
        log(f"{method} beta={beta}: step {run['chosen_step']}, validation win rate {run['val_win_rate']:.4f} "
            f"({run['sweep_s']:.0f} s)")
    key = selection.choose({i: run["val_win_rate"] for i, (run, _) in enumerate(runs)})
    for i, (run, policy) in enumerate(runs):
        run["chosen"] = i == key
        if run["chosen"] or s.budget.every_strength_on_test:
            probs, mass = policy_on_view(policy, s.view)
            run["test"] = _free_running(policy, s) | {
                "enumerable": view_point(probs, s.view, s.frontier) | {"mass_on_candidates": float(mass.mean())}}
    return _summary(method, "beta", [run for run, _ in runs], key)


def _summary(method: str, strength: str, runs: list[dict], key: int) -> dict:
    chosen = runs[key]
    return {"strength": strength, "chosen": {strength: chosen["strength"], "step": chosen["chosen_step"],
                                             "val_win_rate": chosen["val_win_rate"]},
            "test": chosen["test"], "costs": chosen["costs"] | implementation_lines(method)
            | {"sweep_s": sum(r["sweep_s"] for r in runs),
               "selection_samples": sum(r.get("selection_samples", 0) for r in runs)}, "runs": runs}


# ----------------------------------------------------------------------------------------------------------------
# Best-of-N: no training; N chosen by the same rule


def _as_samples(prompts: list[world.Prompt], texts: list[str]) -> Samples:
    return Samples(list(prompts), list(texts), [not t.endswith(" ...") for t in texts], [], [])


def _best_of_n(s: _Setup, log) -> dict:
    ns = s.budget.best_of_n
    val, test = list(world.prompts("validation")), list(world.prompts(PROTOCOL_SPLIT))
    t = time.perf_counter()
    ref_val = sample_responses(s.reference, val, selection.SELECTION_TEMPERATURE, selection.SELECTION_SEED)
    on_val = reward.best_of_n(s.reference, s.reward_model, val, ns, seed=BEST_OF_N_SEEDS["validation"])
    scores = {n: float(selection.judged_win_rate(_as_samples(val, on_val.chosen[n]), ref_val)) for n in ns}
    select_s = time.perf_counter() - t
    on_test = reward.best_of_n(s.reference, s.reward_model, test, ns, seed=BEST_OF_N_SEEDS["test"])
    ref_test = sample_responses(s.reference, test, PROTOCOL_TEMPERATURE, PROTOCOL_SEED)
    rm_scores = s.view.scores(lambda p, r: reward.score_texts(s.reward_model, p, r))           # [N, K]
    runs = []
    for n in ns:
        lo, hi = on_test.gold_interval[n]
        probs = optimal.best_of_n_policy(s.view.ref_probs, rm_scores, n)
        runs.append({"strength": n, "chosen_step": 0, "val_win_rate": scores[n], "train_s": 0.0,
                     "test": _figures(on_test.gold[n], (hi - lo) / 2, optimal.best_of_n_kl_bound(n),
                                      win_rate(_as_samples(test, on_test.chosen[n]), ref_test), s)
                     | {"proxy_reward": on_test.proxy[n], "kl_is": "log N - (N - 1)/N, exact without ties",
                        "enumerable": view_point(probs, s.view, s.frontier)},
                     "costs": {"train_s": 0.0, "responses_sampled": n * len(test), "labels_used":
                               s.labels_reward_model, "reward_model_calls": n * len(test), "models_in_memory": 2,
                               "gradient_steps": 0}})
    key = selection.choose({i: r["val_win_rate"] for i, r in enumerate(runs)})
    for i, r in enumerate(runs):
        r["chosen"], r["sweep_s"] = i == key, 0.0
    runs[0]["sweep_s"] = time.perf_counter() - t
    runs[0]["selection_samples"] = max(ns) * len(val)      # one pass of max(N) draws serves every N
    log(f"best_of_n: N = {runs[key]['strength']} chosen, validation win rates {scores} ({runs[0]['sweep_s']:.0f} s, "
        f"{select_s:.0f} s of it choosing)")
    curve = []
    for n in sorted(set(ns) | {2 ** k for k in range(11)}):
        probs = optimal.best_of_n_policy(s.view.ref_probs, rm_scores, n)
        curve.append({"n": n, **view_point(probs, s.view, s.frontier),
                      "proxy_reward": float((probs * rm_scores).sum(-1).mean())})
    out = _summary("best_of_n", "n", runs, key)
    out["test"]["enumerable"]["mass_on_candidates"] = None     # pi_ref's draws; see the reference's coverage
    out["enumerable_curve"] = curve
    return out


# ----------------------------------------------------------------------------------------------------------------
# the comparison


def run_comparison(setting: str | ComparisonBudget = "short", methods=METHODS, log=print) -> dict:
    """Run every method of ``methods`` under one budget and measure the chosen runs on the test split.

    Args:
        setting: ``"short"`` (what the lesson reruns live: 10-20 s per method on a lightly loaded 2-core machine,
            about a minute each when it is shared), ``"full"`` (the committed artifact: 45 min on the shared
            machine), or a :class:`ComparisonBudget`.
        methods: any of :data:`METHODS`.
        log: called with one line per finished run (``print`` by default; ``lambda _: None`` for silence).
    Returns:
        a JSON-ready dict: ``budget``; ``reference`` (its test figures, both axes); ``frontier`` (the exact
        frontier, thinned for plotting); ``methods[method]`` with ``chosen`` (strength, step, validation win rate),
        ``test`` (free-running figures, ``enumerable`` point), ``costs``, and ``runs`` (every strength with its
        selection checks); ``frontier_check``; ``seconds``. Deterministic from ``budget.seed`` on one machine:
        it runs on one thread, since the thread count changes float rounding.
    Used in lesson 05.
    """
    budget = SETTINGS[setting] if isinstance(setting, str) else setting
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    start = time.perf_counter()
    with one_thread():
        reference = load_reference()
        view = enumerable.load_view(PROTOCOL_SPLIT)
        if budget.enumerable_stride > 1:
            view = view.subset(range(0, len(view.prompts), budget.enumerable_stride))
        frontier = exact_frontier(view.ref_probs, view.rewards)
        card = scorecard(reference)
        train_pairs = reward.load_preferences("train")
        s = _Setup(budget, reference, reward.load_reward_model(), train_pairs,
                   len(train_pairs) + len(reward.load_preferences("validation")), view, frontier,
                   {"gold_reward": card.gold_reward, "best_gold_reward": world.best_gold_reward(PROTOCOL_SPLIT)})
        out = {"setting": setting if isinstance(setting, str) else "custom", "budget": asdict(budget),
               "reference": {"gold_reward": card.gold_reward, "gold_reward_ci": card.gold_reward_ci,
                             "best_gold_reward": s.reference_card["best_gold_reward"],
                             "enumerable": {"reward": frontier[0]["reward"], "kl": 0.0, "prompts": len(view.prompts),
                                            "mass_on_candidates": float(view.coverage().mean())}},
               "frontier": frontier[::max(1, len(frontier) // 120)] + [frontier[-1]], "methods": {}}
        for method in methods:
            t = time.perf_counter()
            out["methods"][method] = _best_of_n(s, log) if method == "best_of_n" else _model_method(method, s, log)
            out["methods"][method]["seconds"] = time.perf_counter() - t
        out["frontier_check"] = frontier_check(enumerable_points(out), frontier)
        out["built"] = {"torch": torch.__version__, "threads": 1}
        out["seconds"] = time.perf_counter() - start
        return out


def enumerable_points(result: dict) -> list[dict]:
    """Every point a comparison placed on the enumerable view, named ``method[strength]`` (each run measured on
    test) and ``best_of_n_curve[N]`` (Best-of-N's exact curve): {name, reward, kl, fraction_of_optimum, ...}."""
    points = [{"name": f"{m}[{r['strength']}]", **r["test"]["enumerable"]}
              for m, res in result["methods"].items() for r in res["runs"] if "test" in r]
    return points + [{"name": f"best_of_n_curve[{p['n']}]", **p}
                     for p in result["methods"].get("best_of_n", {}).get("enumerable_curve", [])]


def summary(result: dict) -> dict:
    """The benchmark contract's figures of one setting: {method: {gold_reward, kl, gap_closed, fraction_of_optimum,
    train_s, responses_sampled, labels_used, models_in_memory, lines_of_code, ...}}."""
    out = {}
    for method, res in result["methods"].items():
        test, costs = res["test"], res["costs"]
        out[method] = {k: test[k] for k in ("gold_reward", "gold_reward_ci", "kl", "gap_closed", "win_rate")} | {
            "fraction_of_optimum": test["enumerable"]["fraction_of_optimum"],
            "enumerable_reward": test["enumerable"]["reward"], "enumerable_kl": test["enumerable"]["kl"],
            "strength": res["chosen"][res["strength"]]} | {k: costs[k] for k in COST_KEYS}
    return out


def differences(committed: dict, fresh: dict, atol: float = 1e-6, rtol: float = 1e-6, path: str = "") -> list[str]:
    """Where two comparison results differ beyond tolerance: the list is empty when ``fresh`` reproduces
    ``committed``. Timings (keys ending in ``_s``, ``seconds``) and lines of code (a property of the source as it is
    now, not of the run) are left out."""
    if isinstance(committed, dict) and isinstance(fresh, dict):
        out = [f"{path}{k}: only in one" for k in set(committed) ^ set(fresh)]
        for k in committed.keys() & fresh.keys():
            if not (k.endswith("_s") or k == "seconds" or k.startswith("lines_of_code")):
                out += differences(committed[k], fresh[k], atol, rtol, f"{path}{k}.")
        return out
    if isinstance(committed, (list, tuple)) and isinstance(fresh, (list, tuple)):     # JSON turns tuples into lists
        if len(committed) != len(fresh):
            return [f"{path[:-1]}: {len(committed)} items != {len(fresh)}"]
        return [d for i, (a, b) in enumerate(zip(committed, fresh)) for d in differences(a, b, atol, rtol,
                                                                                       f"{path}{i}.")]
    if isinstance(committed, float) and isinstance(fresh, (int, float)) and not isinstance(fresh, bool):
        same = math.isclose(committed, fresh, rel_tol=rtol, abs_tol=atol) or committed == fresh
        return [] if same else [f"{path[:-1]}: {committed!r} != {fresh!r}"]
    return [] if committed == fresh else [f"{path[:-1]}: {committed!r} != {fresh!r}"]


# ----------------------------------------------------------------------------------------------------------------
# the live slice: what lesson 05 reruns and checks against the committed one

LIVE_STRIDE = 16     # every 16th test prompt of the enumerable view (29 prompts)


def run_live(methods=METHODS, log=print) -> dict:
    """A few seconds of each method, at the short setting's strength and budget (2 iterations, 20 DPO steps of a
    seeded 1,280 pairs, Best-of-4), with no selection and no free-running measurement: each policy's point on every
    LIVE_STRIDE-th prompt of the test view (expected gold reward, KL, fraction of the optimum, mass on the
    candidates). ``make artifacts`` stores it beside the full comparison (``"live"``); lesson 05 reruns it and
    checks with :func:`differences` that it reproduces the stored one. One thread, seeded: deterministic on one
    machine. Returns {"methods": {method: {strength, point, seconds}}, "prompts", "seconds"}.
    """
    b = SETTINGS["short"]
    start = time.perf_counter()
    with one_thread():
        reference, reward_model = load_reference(), reward.load_reward_model()
        view = enumerable.load_view(PROTOCOL_SPLIT)
        view = view.subset(range(0, len(view.prompts), LIVE_STRIDE))
        frontier = exact_frontier(view.ref_probs, view.rewards)
        out = {"prompts": len(view.prompts), "methods": {}}
        for method in methods:
            t = time.perf_counter()
            strength = b.strengths(method)[-1]
            if method == "best_of_n":
                scores = view.scores(lambda p, r: reward.score_texts(reward_model, p, r))
                point = view_point(optimal.best_of_n_policy(view.ref_probs, scores, strength), view, frontier)
            else:
                policy = copy.deepcopy(reference)
                if method == "dpo":
                    train_dpo_run(policy, reference, _dpo_pairs(reward.load_preferences("train"), b), strength, b)
                else:
                    _train_online(method, policy, reference, reward_model, _online_config(method, strength, b))
                probs, mass = policy_on_view(policy.eval(), view)
                point = view_point(probs, view, frontier) | {"mass_on_candidates": float(mass.mean())}
            out["methods"][method] = {"strength": strength, "point": point, "seconds": time.perf_counter() - t}
            log(f"{method}[{strength}]: gold {point['reward']:+.3f}, KL {point['kl']:.3f} "
                f"({out['methods'][method]['seconds']:.0f} s)")
        out["seconds"] = time.perf_counter() - start
        return out


def build_comparison(path: Path = COMPARISON_PATH, settings=("short", "full", "live"), log=print) -> dict:
    """Run the comparison in each of ``settings`` (and :func:`run_live` for ``"live"``) and save it to ``path``
    (keeping settings already stored there that were not rerun). What ``make artifacts`` runs; minutes for the full
    setting."""
    path = Path(path)
    stored = json.loads(path.read_text()) if path.exists() else {}
    for name in settings:
        log(f"comparison, {name} setting")
        stored[name] = run_live(log=log) if name == "live" else run_comparison(name, log=log)
        save_results(stored, path)
    return stored


def load_comparison(setting: str | None = "full", path: Path = COMPARISON_PATH) -> dict:
    """The committed comparison: one setting's result (``"full"``, ``"short"`` or ``"live"``), or the whole file
    (None)."""
    stored = load_results(path, "comparison")
    if setting is None:
        return stored
    if setting not in stored:
        raise KeyError(f"{path} holds no {setting!r} run; it holds {sorted(stored)}")
    return stored[setting]
