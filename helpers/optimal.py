"""The exact optimum of the KL-regularised objective, and the exact Best-of-N policy, on the enumerable view
(:mod:`helpers.enumerable`).

For one prompt with candidate responses y_1..y_K, reference probabilities pi_ref(y_k) and rewards r(y_k),

    J(pi) = E_{y~pi}[r(y)] - beta * KL(pi || pi_ref)

is maximised by pi*(y) = pi_ref(y) exp(r(y)/beta) / Z with Z = sum_y pi_ref(y) exp(r(y)/beta), and its maximum is
J(pi*) = beta * log Z (DPO paper, Rafailov et al. 2023, eq. 4; the same result appears in earlier KL-control work).
More generally J(pi) = beta * log Z - beta * KL(pi || pi*), which the tests verify.

Tensors have shape [..., K]: any leading dimensions (e.g. N prompts), K candidates. A candidate with reference
probability 0 (padding, when prompts have different numbers of candidates) gets probability 0 everywhere.
Used in lessons 01, 03, 04, 05.
"""
from __future__ import annotations

import math

import torch


def _check(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> None:
    if ref_probs.shape != rewards.shape:
        raise ValueError(f"ref_probs {tuple(ref_probs.shape)} and rewards {tuple(rewards.shape)} must match")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if bool((ref_probs < 0).any()):
        raise ValueError("ref_probs must be non-negative")
    if not torch.allclose(ref_probs.sum(-1), torch.ones(()).to(ref_probs), atol=1e-5):
        raise ValueError("ref_probs must sum to 1 over the last dimension")


def _log(p: torch.Tensor) -> torch.Tensor:
    """log p with log 0 = -inf, safe inside p * log p terms (they are masked where p = 0)."""
    return torch.log(p.clamp_min(1e-300)).masked_fill(p == 0, float("-inf"))


def optimal_policy(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """pi*(y) proportional to pi_ref(y) * exp(r(y) / beta), over the last dimension. [..., K] -> [..., K]"""
    _check(ref_probs, rewards, beta)
    return torch.softmax(_log(ref_probs) + rewards / beta, dim=-1)


def optimal_objective(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """beta * log Z = max over pi of E_pi[r] - beta * KL(pi || pi_ref). [..., K] -> [...]"""
    _check(ref_probs, rewards, beta)
    return beta * torch.logsumexp(_log(ref_probs) + rewards / beta, dim=-1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum p log(p / q) over the last dimension, with 0 log 0 = 0. [..., K] -> [...]"""
    terms = p * (_log(p) - _log(q))
    return torch.where(p > 0, terms, torch.zeros_like(terms)).sum(-1)


def objective(policy_probs: torch.Tensor, ref_probs: torch.Tensor, rewards: torch.Tensor,
              beta: float) -> torch.Tensor:
    """J(pi) = E_pi[r] - beta * KL(pi || pi_ref). [..., K] -> [...]"""
    _check(ref_probs, rewards, beta)
    expected = torch.where(policy_probs > 0, policy_probs * rewards, torch.zeros_like(rewards)).sum(-1)
    return expected - beta * kl_divergence(policy_probs, ref_probs)


def frontier(ref_probs: torch.Tensor, rewards: torch.Tensor, betas) -> list[dict]:
    """The exact reward-KL frontier: for each beta, the optimal policy's mean reward and mean KL over prompts."""
    out = []
    for beta in betas:
        pi = optimal_policy(ref_probs, rewards, beta)
        out.append({"beta": float(beta), "reward": float((pi * rewards).sum(-1).mean()),
                    "kl": float(kl_divergence(pi, ref_probs).mean()),
                    "objective": float(optimal_objective(ref_probs, rewards, beta).mean())})
    return out


def gain_fraction(policy_probs: torch.Tensor, ref_probs: torch.Tensor, rewards: torch.Tensor,
                  beta: float) -> float:
    """(J(pi) - J(pi_ref)) / (beta log Z - J(pi_ref)), averaged over prompts first: 1 means optimal."""
    j = objective(policy_probs, ref_probs, rewards, beta).mean()
    j_ref = objective(ref_probs, ref_probs, rewards, beta).mean()
    j_star = optimal_objective(ref_probs, rewards, beta).mean()
    return float((j - j_ref) / (j_star - j_ref))


def best_of_n_policy(ref_probs: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """The exact Best-of-N policy: draw n responses from pi_ref, keep the one with the highest score (ties broken
    uniformly at random among the tied draws). [..., K] -> [..., K]

    With F(s) = pi_ref(score <= s) and F_(s) = pi_ref(score < s), the best draw's score is s with probability
    F(s)^n - F_(s)^n, and among the candidates scoring s each is as likely as its share of pi_ref there:

        pi_n(y) = pi_ref(y) * (F(s_y)^n - F_(s_y)^n) / (F(s_y) - F_(s_y))

    (Stiennon et al. 2020, appendix; Beirami et al. 2024 for ties). Select with one scoring function (the course
    reward model, as practised) and evaluate with another (the gold reward). Used in lesson 05.
    """
    if ref_probs.shape != scores.shape:
        raise ValueError(f"ref_probs {tuple(ref_probs.shape)} and scores {tuple(scores.shape)} must match")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    real = ref_probs > 0
    # [..., K, K]: entry [y, j] compares candidate j's score with candidate y's
    at_most = (scores[..., None, :] <= scores[..., :, None]) & real[..., None, :]
    below = (scores[..., None, :] < scores[..., :, None]) & real[..., None, :]
    upto = (at_most * ref_probs[..., None, :]).sum(-1)                               # F(s_y)
    under = (below * ref_probs[..., None, :]).sum(-1)                                # F_(s_y)
    level = (upto - under).clamp_min(1e-30)                                          # pi_ref(score = s_y)
    probs = ref_probs * (upto.pow(n) - under.pow(n)) / level
    return torch.where(real, probs, torch.zeros_like(probs))


def best_of_n_kl_bound(n: int) -> float:
    """KL(Best-of-n || pi_ref) <= log n - (n - 1) / n, with equality when no two candidates tie."""
    return math.log(n) - (n - 1) / n
