"""``make bench`` section for GRPO and RLOO (lesson 05): ``grpo.*`` and ``rloo.*``.

The enumerable setting, as ``ppo.enumerable_gain_fraction``: the test split's enumerable view merged by equal reward
(:meth:`helpers.enumerable.View.by_reward`: the same optimum, one logit per group) at beta = 1, the policy a
table of logits trained from sampled groups (32 prompts x 8 candidates per iteration, PPO's 256 samples) for 300
iterations with :func:`helpers.grpo.enumerable_grpo`'s defaults: the KL in the reward, so that the objective trained is
the J(pi) the optimum beta log Z maximises. Beside it, the same budget with Dr. GRPO's advantages (no std) and with
GRPO's k3 term in the loss, whose fixed point is the optimum of a different objective (KL(pi_ref || pi)): reported,
not targeted.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .. import enumerable, grpo
from ..comparison import load_comparison, summary
from ..evaluate import PROTOCOL_SPLIT, scorecard
from ..pretrain import load_reference
from .ppo import failure_cuts, table_figures


def enumerable_figures(ref_probs: torch.Tensor, rewards: torch.Tensor,
                       cfg: grpo.EnumerableGRPOConfig = grpo.EnumerableGRPOConfig()) -> dict:
    """:func:`.ppo.table_figures` of :func:`helpers.grpo.enumerable_grpo` with ``cfg``."""
    return table_figures(lambda: grpo.enumerable_grpo(ref_probs, rewards, cfg), cfg.iterations)


def bench_grpo() -> dict:
    """{"grpo": {...}, "rloo": {...}}: the enumerable gain fractions (and GRPO's variants under ``grpo.variants``),
    and gap_closed, cut and worse_than_reference (as ``ppo.*``) of each method's chosen run in the committed
    comparison."""
    # every tensor here is a small table: one thread is fastest, and two fight over the cores when the machine is busy
    torch.set_num_threads(1)
    # the same view as ppo.enumerable_gain_fraction
    view = enumerable.load_view(PROTOCOL_SPLIT).by_reward()
    ref_probs, rewards = view.ref_probs, view.rewards
    default = grpo.EnumerableGRPOConfig()
    out = {"grpo": enumerable_figures(ref_probs, rewards, default),
           "rloo": enumerable_figures(ref_probs, rewards, replace(default, advantage="rloo"))}
    # k3 in the loss diverges at the default step on small views: a constant 0.1, as measured stable
    variants = {"dr_grpo": {"scale_rewards": False}, "k3_in_loss": {"kl_in": "loss", "lr": 0.1, "lr_decay": False}}
    out["grpo"]["variants"] = {
        name: {k: v for k, v in enumerable_figures(ref_probs, rewards, replace(default, **change)).items()
               if k in ("enumerable_gain_fraction", "enumerable_kl")}
        for name, change in variants.items()}
    # the language-model figures: GRPO's and RLOO's chosen runs in lesson 05's controlled comparison (test split)
    full = load_comparison("full")
    figures, ref_figures = summary(full), scorecard(load_reference()).figures()
    for method in ("grpo", "rloo"):
        rates = full["methods"][method]["test"]["rates"]
        out[method] |= {k: figures[method][k] for k in ("gap_closed", "gold_reward", "kl", "strength")}
        out[method] |= failure_cuts(rates, ref_figures)
    return out
