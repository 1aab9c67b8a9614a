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

import time

import torch

from .. import enumerable, grpo
from ..evaluate import PROTOCOL_SPLIT


def enumerable_figures(ref_probs: torch.Tensor, rewards: torch.Tensor,
                       cfg: grpo.EnumerableGRPOConfig = grpo.EnumerableGRPOConfig()) -> dict:
    """``enumerable_gain_fraction`` after ``cfg.iterations``, the first iteration reaching 95 %, the KL, seconds."""
    start = time.perf_counter()
    result = grpo.enumerable_grpo(ref_probs, rewards, cfg)
    seconds = time.perf_counter() - start
    reached = next((h["iteration"] for h in result.history if h["gain_fraction"] >= 0.95), None)
    return {"enumerable_gain_fraction": result.history[-1]["gain_fraction"],
            "enumerable_iterations": cfg.iterations, "enumerable_iteration_95": reached,
            "enumerable_kl": result.history[-1]["kl"], "enumerable_s": seconds}


def bench_grpo() -> dict:
    """{"grpo": {...}, "rloo": {...}}: the enumerable gain fractions (and GRPO's variants under ``grpo.variants``)."""
    # every tensor here is a small table: one thread is fastest, and two fight over the cores when the machine is busy
    torch.set_num_threads(1)
    # the same view as ppo.enumerable_gain_fraction
    view = enumerable.load_view(PROTOCOL_SPLIT).by_reward()
    ref_probs, rewards = view.ref_probs, view.rewards
    default = grpo.EnumerableGRPOConfig()
    out = {"grpo": enumerable_figures(ref_probs, rewards, default),
           "rloo": enumerable_figures(ref_probs, rewards,
                                      grpo.EnumerableGRPOConfig(**{**default.__dict__, "advantage": "rloo"}))}
    # k3 in the loss diverges at the default step on small views: a constant 0.1, as measured stable
    variants = {"dr_grpo": {"scale_rewards": False}, "k3_in_loss": {"kl_in": "loss", "lr": 0.1, "lr_decay": False}}
    out["grpo"]["variants"] = {
        name: {k: v for k, v in enumerable_figures(
            ref_probs, rewards, grpo.EnumerableGRPOConfig(**{**default.__dict__, **change})).items()
            if k in ("enumerable_gain_fraction", "enumerable_kl")}
        for name, change in variants.items()}
    return out
