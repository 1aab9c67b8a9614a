"""The exact optimum of the KL-regularised objective, on the world's enumerable view.

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

import torch

from . import world
from .model import LanguageModel, sequence_logprobs
from .tokenizer import Tokenizer, encode_pairs


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


@torch.no_grad()
def enumerable_view(model: LanguageModel, prompts: list[world.Prompt],
                    reward=world.gold_reward) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """The model's probabilities renormalised over each prompt's candidates, and their rewards.

    Returns:
        probs [N, K] (rows sum to 1; 0 on padding when a prompt has fewer than K candidates),
        rewards [N, K] (0 on padding), and the candidate texts per prompt.
    """
    if not prompts:
        raise ValueError("enumerable_view needs at least one prompt")
    texts = [list(world.candidates(p).values()) for p in prompts]
    K = max(len(t) for t in texts)
    flat_prompts = [p.text for p, ts in zip(prompts, texts) for _ in ts]
    flat_texts = [t for ts in texts for t in ts]
    batch = encode_pairs(Tokenizer(), flat_prompts, flat_texts, model.cfg.block_size)
    logps = sequence_logprobs(model(batch.input_ids, batch.attention_mask), batch.input_ids, batch.response_mask)
    logits = torch.full((len(prompts), K), float("-inf"))
    rewards = torch.zeros((len(prompts), K))
    i = 0
    for n, (p, ts) in enumerate(zip(prompts, texts)):
        for k, t in enumerate(ts):
            logits[n, k] = logps[i]
            rewards[n, k] = reward(p, t)
            i += 1
    return torch.softmax(logits, dim=-1), rewards, texts
