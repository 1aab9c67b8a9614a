"""RLHF with PPO: the pieces as small pure functions, then the loop that puts them together.

Generation as reinforcement learning: the state is the prompt plus the response so far, an action is the next
token, the episode ends at ``<eos>``. The reward of a whole response is the reward model's score, paid at the last
token, minus a per-token KL penalty that keeps the policy near the reference:

    r_t = -beta * (log pi(y_t | s_t) - log pi_ref(y_t | s_t))  +  [t = last] * score(x, y)

PPO (Schulman et al. 2017) then raises the log-probability of tokens with a positive advantage, a few epochs of
minibatches per batch of samples, with the probability ratio clipped so that one batch cannot move the policy far.
The implementation details are those of OpenAI's first RLHF code as Huang et al. ("The N Implementation Details of
RLHF with PPO", ICLR blog track 2024) reproduce them: per-token KL penalty with the score at the end, reward and
advantage whitening, clipped value loss, adaptive KL controller, a penalty for a missing ``<eos>``, and the same
sampling temperature when sampling and when scoring.

Layout of a batch of rollouts (the layout TRL uses): prompts left-padded to P columns, responses after them
right-padded to L columns, so every response starts at column P. Everything per token is then [B, L], aligned with
the response tokens; ``mask`` [B, L] is 1 on real response tokens (``<eos>`` included) and 0 on padding.

Shapes: B = batch size (responses), L = response tokens, P = prompt columns, V = vocabulary, K = candidates per
prompt (enumerable view), N = prompts.
Used in lesson 03.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import world
from .evaluate import sample_responses, score_samples, sequence_kl
from .model import LanguageModel, ScalarModel
from .progress import progress
from .tokenizer import Tokenizer, pad_sequences


# ----------------------------------------------------------------------------------------------------------------
# masked statistics

def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (over all of them, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` to unit variance over the masked entries; centre it too unless ``shift_mean`` is False.

        whiten(x) = (x - mean) / sqrt(var + eps)          (shift_mean=True: mean 0, variance 1)
        whiten(x) = (x - mean) / sqrt(var + eps) + mean   (shift_mean=False: the mean is kept)

    Advantages are whitened with the mean removed (half the tokens pushed up, half down); rewards are whitened
    keeping their mean (Huang et al. 2024, "reward whitening"), so a batch that is better on average still says so.
    Mean and (unbiased) variance are over the masked entries of the whole batch, not per row.

    Args:
        x: [B, L].  mask: [B, L], 1 where ``x`` counts.
    Returns:
        [B, L], 0 where ``mask`` is 0.
    Used in lesson 03.
    """
    m = mask.to(x.dtype)
    n = m.sum()
    if n < 2:
        raise ValueError("whitening needs at least two masked entries")
    mean = masked_mean(x, m)
    var = ((x - mean) ** 2 * m).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


# ----------------------------------------------------------------------------------------------------------------
# the reward, the advantages

def kl_penalised_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor,
                         mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token reward of RLHF: a KL penalty on every token, and the score on the last one.

        r_t = -beta * (log pi(y_t|s_t) - log pi_ref(y_t|s_t))  +  [t = last real token] * score

    The penalty is the k1 estimate of KL(pi || pi_ref) (Ziegler et al. 2019, section 2.2; Huang et al. 2024):
    its sum over the response is log pi(y|x) - log pi_ref(y|x), whose mean over samples is the sequence KL.
    beta multiplies the log-ratio only, never the score.

    Args:
        logprobs: [B, L] log pi of each sampled token (at the sampling temperature), no gradient.
        ref_logprobs: [B, L] log pi_ref of the same tokens (same temperature).
        scores: [B] reward-model scores of the whole responses.
        mask: [B, L], 1 on response tokens; each row needs at least one.
        beta: the KL coefficient, >= 0.
    Returns:
        rewards [B, L] (0 on padding) and kl [B, L] = logprobs - ref_logprobs on response tokens (0 on padding).
    Used in lesson 03.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    m = mask.to(logprobs.dtype)
    if bool((m.sum(-1) == 0).any()):
        raise ValueError("every row needs at least one response token: where else would the score go?")
    kl = (logprobs - ref_logprobs) * m
    rewards = -beta * kl
    # the last real token of each row: the position of the last 1 in the mask
    last = (m * torch.arange(1, m.shape[1] + 1, dtype=m.dtype)).argmax(-1)         # [B]
    rewards = rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation: advantages and the value targets (returns).

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last token is 0: the episode has ended)
        A_t = sum_l (gamma * lam)^l * delta_{t+l} = delta_t + gamma * lam * A_{t+1}
        returns_t = A_t + V_t

    (Schulman et al. 2016, eq. 16.) lam = 1 gives the discounted return minus V_t (unbiased, noisy); lam = 0 gives
    the one-step TD error delta_t (low variance, biased by V's errors). The sum runs backwards over each row's
    masked tokens only, so padding after a response never leaks in.

    Args:
        rewards: [B, L] per-token rewards (see :func:`kl_penalised_rewards`).
        values: [B, L] V(s_t), the value of the state before token t, no gradient.
        mask: [B, L], 1 on response tokens (one contiguous run per row).
        gamma: discount in [0, 1] (RLHF uses 1: a response is short and its score comes at the end).
        lam: GAE's lambda in [0, 1].
    Returns:
        advantages [B, L] and returns [B, L], both 0 on padding.
    Used in lesson 03.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must all be [B, L]")
    m = mask.to(rewards.dtype)
    B, L = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(B, dtype=rewards.dtype)
    next_advantage = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(L)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        # on padding, pass "nothing follows" back to the last real token
        advantages[:, t] = advantage * m[:, t]
        next_value = values[:, t] * m[:, t]
        next_advantage = advantages[:, t]
    returns = (advantages + values) * m
    return advantages, returns


# ----------------------------------------------------------------------------------------------------------------
# the two losses

def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, as a loss to minimise (the negative of the objective).

        ratio_t = pi(y_t|s_t) / pi_old(y_t|s_t) = exp(logprobs - old_logprobs)
        loss = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))

    (Schulman et al. 2017, eq. 7, negated.) The max of the two (the min of the objectives) makes clipping one-sided:
    once the ratio has moved past 1 + eps for a good token (A > 0), or below 1 - eps for a bad one (A < 0), that
    token's gradient is 0; a move in the *wrong* direction is never clipped, so it is always corrected.
    Reduction: the **mean over all response tokens of the batch** (each token weighs the same, long responses
    weigh more), as TRL does.

    Args:
        logprobs: [B, L] log pi of the sampled tokens under the policy being trained (with gradient).
        old_logprobs: [B, L] the same under the policy that sampled them (no gradient).
        advantages: [B, L] (normally whitened).
        mask: [B, L], 1 on response tokens.
        clip_range: eps > 0 (0.2 in the paper).
    Returns:
        the loss (a scalar) and metrics: ``policy/clipfrac`` (share of tokens whose gradient the clip removed),
        ``policy/approxkl`` (0.5 * mean (log ratio)^2, an estimate of KL(pi_old || pi)), ``policy/ratio``.
    Used in lesson 03.
    """
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        metrics = {"policy/clipfrac": float(masked_mean((clipped > unclipped).to(ratio.dtype), mask)),
                   "policy/approxkl": float(0.5 * masked_mean(log_ratio ** 2, mask)),
                   "policy/ratio": float(masked_mean(ratio, mask))}
    return loss, metrics


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip_range_value: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The value function's loss, with its step clipped around the values it had when sampling.

        V_clip = V_old + clip(V - V_old, -eps_v, eps_v)
        loss = 0.5 * mean_t max((V - R_t)^2, (V_clip - R_t)^2)

    (PPO2 in OpenAI baselines; Huang et al. 2024, "value function clipping".) Reduction: mean over response tokens.

    Args:
        values: [B, L] V(s_t) now (with gradient).  old_values: [B, L] at sampling time.
        returns: [B, L] targets from :func:`gae`.  mask: [B, L].
        clip_range_value: eps_v > 0, in reward units (after whitening).
    Returns:
        the loss (a scalar) and metrics ``value/clipfrac``, ``value/error`` (mean squared error, unclipped).
    Used in lesson 03.
    """
    if clip_range_value <= 0:
        raise ValueError(f"clip_range_value must be > 0, got {clip_range_value}")
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        metrics = {"value/clipfrac": float(masked_mean((clipped_error > unclipped_error).to(values.dtype), mask)),
                   "value/error": float(masked_mean(unclipped_error, mask))}
    return loss, metrics


# ----------------------------------------------------------------------------------------------------------------
# the KL coefficient

class FixedKLController:
    """beta stays what it is."""

    def __init__(self, beta: float):
        self.beta = beta

    def update(self, kl: float) -> float:
        return self.beta


class AdaptiveKLController:
    """Steers beta so that the measured KL approaches a target (Ziegler et al. 2019, section 2.2):

        e = clip((KL - KL_target) / KL_target, -0.2, 0.2)
        beta <- beta * (1 + k_beta * e)

    KL above the target raises beta (a stronger pull back to pi_ref), below it lowers beta. Each update changes
    beta by at most a factor 1 +- 0.2 k_beta. Ziegler et al. use k_beta = 0.1 over thousands of updates; a run of
    tens of iterations needs a larger k_beta to matter.
    """

    def __init__(self, beta: float, target: float, k_beta: float = 0.1):
        if beta <= 0 or target <= 0 or k_beta <= 0:
            raise ValueError("beta, target and k_beta must be > 0")
        self.beta, self.target, self.k_beta = beta, target, k_beta

    def update(self, kl: float) -> float:
        """Move beta after an iteration whose mean sequence KL was ``kl``; returns the new beta."""
        error = min(max((kl - self.target) / self.target, -0.2), 0.2)
        self.beta *= 1.0 + self.k_beta * error
        return self.beta


# ----------------------------------------------------------------------------------------------------------------
# the enumerable setting: PPO on a softmax over each prompt's candidates

@dataclass(frozen=True)
class EnumerablePPOConfig:
    beta: float = 1.0            # KL strength of the objective (DESIGN.md: beta = 1 for the enumerable figures)
    iterations: int = 300        # the budget
    batch_size: int = 256        # sampled (prompt, candidate) pairs per iteration
    epochs: int = 2              # passes over each batch (4 reaches the same gain, twice as slowly)
    minibatch_size: int = 64
    clip_range: float = 0.2      # PPO's epsilon
    lr: float = 0.5              # SGD step per sample on the table of logits; 1.0 plateaus near 85 % of the gain
    value_lr: float = 0.5        # SGD step per sample on the table of values: V(x) moves halfway to the return
    whiten_advantages: bool = False  # off here: see enumerable_ppo
    clip_range_value: float = 10.0  # rewards are in gold units here: clip only wild steps
    seed: int = 0


@dataclass
class EnumerablePPOResult:
    probs: torch.Tensor           # [N, K] the trained policy over each prompt's candidates
    history: list[dict]           # per iteration: gain_fraction, objective, kl, reward, clipfrac


def enumerable_ppo(ref_probs: torch.Tensor, rewards: torch.Tensor,
                   cfg: EnumerablePPOConfig = EnumerablePPOConfig()) -> EnumerablePPOResult:
    """PPO from sampled batches on the enumerable view, with the LM loop's own pieces.

    The policy is a table of logits theta [N, K] (pi(.|x) = softmax(theta_x)), starting at log pi_ref, and the value
    function a table V [N]. Each iteration samples ``batch_size`` prompts and one candidate each from the current
    policy; a response is one action, so every per-token tensor has L = 1: :func:`kl_penalised_rewards` gives
    r = r*(x, y) - beta (log pi(y|x) - log pi_ref(y|x)), :func:`gae` with gamma = lam = 1 gives A = r - V(x), and
    :func:`clipped_policy_loss` / :func:`clipped_value_loss` train for ``epochs`` passes. The advantages are *not*
    whitened here by default: at the optimum r - beta log(pi/pi_ref) = beta log Z(x) for every candidate, so the
    advantages shrink to the value table's errors, and dividing by their spread would blow that noise up into
    full-size steps (measured on the test split's view: the gain then stalls near 0.83 instead of 0.99).
    The optimum of the objective J(pi) = E_pi[r*] - beta KL(pi || pi_ref) is pi* proportional to
    pi_ref exp(r*/beta), so the result can be measured against it exactly
    (:func:`helpers.optimal.gain_fraction`).

    Args:
        ref_probs: [N, K] pi_ref over each prompt's candidates (0 on padding).
        rewards: [N, K] r*(x, y).
        cfg: see :class:`EnumerablePPOConfig`.
    Returns:
        an :class:`EnumerablePPOResult`.
    Used in lesson 03.
    """
    from .optimal import gain_fraction, kl_divergence, objective
    gen = torch.Generator().manual_seed(cfg.seed)
    valid = ref_probs > 0
    ref_logp = torch.log(ref_probs.clamp_min(1e-30))
    theta = ref_logp.masked_fill(~valid, -1e9).clone().requires_grad_(True)   # [N, K]
    value_table = torch.zeros(ref_probs.shape[0], requires_grad=True)       # [N]
    # plain SGD with the minibatch-mean losses scaled back to sums, so that lr is the step one sample gives its
    # prompt's logits, whatever the minibatch size; Adam's momentum would keep moving prompts that were not sampled
    policy_opt = torch.optim.SGD([theta], lr=cfg.lr)
    value_opt = torch.optim.SGD([value_table], lr=cfg.value_lr)
    N = ref_probs.shape[0]
    history = []
    for it in range(cfg.iterations):
        with torch.no_grad():
            # sample a batch: B prompts, one candidate each from the current policy
            idx = torch.randint(N, (cfg.batch_size,), generator=gen)                       # [B]
            probs = torch.softmax(theta[idx], -1)                                          # [B, K]
            action = torch.multinomial(probs, 1, generator=gen)                           # [B, 1]
            old_logprobs = torch.log_softmax(theta[idx], -1).gather(1, action)            # [B, 1]
            ref_logprobs = ref_logp[idx].gather(1, action)
            scores = rewards[idx].gather(1, action).squeeze(1)                             # [B]
            mask = torch.ones_like(old_logprobs)
            old_values = value_table[idx][:, None]                                        # [B, 1]
            step_rewards, _ = kl_penalised_rewards(old_logprobs, ref_logprobs, scores, mask, cfg.beta)
            advantages, returns = gae(step_rewards, old_values, mask, gamma=1.0, lam=1.0)
            if cfg.whiten_advantages:
                advantages = whiten(advantages, mask)
        clipfracs = []
        for _ in range(cfg.epochs):
            order = torch.randperm(cfg.batch_size, generator=gen)
            for start in range(0, cfg.batch_size, cfg.minibatch_size):
                mb = order[start:start + cfg.minibatch_size]
                logprobs = torch.log_softmax(theta[idx[mb]], -1).gather(1, action[mb])
                loss, metrics = clipped_policy_loss(logprobs, old_logprobs[mb], advantages[mb], mask[mb],
                                                    cfg.clip_range)
                policy_opt.zero_grad(set_to_none=True)
                (loss * len(mb)).backward()
                policy_opt.step()
                clipfracs.append(metrics["policy/clipfrac"])
                value_loss, _ = clipped_value_loss(value_table[idx[mb]][:, None], old_values[mb], returns[mb],
                                                   mask[mb], cfg.clip_range_value)
                value_opt.zero_grad(set_to_none=True)
                (value_loss * len(mb)).backward()
                value_opt.step()
        with torch.no_grad():
            pi = torch.softmax(theta, -1)
            history.append({"iteration": it + 1,
                            "gain_fraction": gain_fraction(pi, ref_probs, rewards, cfg.beta),
                            "objective": float(objective(pi, ref_probs, rewards, cfg.beta).mean()),
                            "kl": float(kl_divergence(pi, ref_probs).mean()),
                            "reward": float((pi * rewards).sum(-1).mean()),
                            "policy/clipfrac": sum(clipfracs) / len(clipfracs)})
    return EnumerablePPOResult(torch.softmax(theta.detach(), -1), history)


# ----------------------------------------------------------------------------------------------------------------
# the RLHF loop on the language model

RewardFunction = Callable[[list, list], torch.Tensor]   # (prompts, response texts) -> scores [B]


def gold_reward_function(prompts: list[world.Prompt], texts: list[str]) -> torch.Tensor:
    """The gold reward as a reward function, for an oracle run: scores [B]."""
    return torch.tensor([world.gold_reward(p, t) for p, t in zip(prompts, texts)])


@dataclass(frozen=True)
class PPOConfig:
    iterations: int = 15         # batches of rollouts; most of the gain comes in the first 10 (measured)
    batch_size: int = 256        # rollouts (prompt, response) per iteration
    minibatch_size: int = 64     # rollouts per gradient step
    epochs: int = 4              # passes over each batch: PPO's reuse of samples, kept safe by the clip
    lr: float = 3e-4             # Adam, policy; 1e-4 needed twice the iterations for the same gold reward
    value_lr: float = 1e-3       # Adam, value model: its fresh head has further to go
    beta: float = 0.1            # KL coefficient (initial value when kl_target is set); in score units: the
                                 # course reward model's scores spread about twice as wide as the gold reward's
    kl_target: float | None = None  # a sequence KL in nats: use the adaptive controller; None: beta stays fixed
    k_beta: float = 0.1          # the adaptive controller's gain (Ziegler et al. 2019 use 0.1)
    temperature: float = 1.0     # sampling temperature, used again when scoring log-probs (must be the same)
    max_new_tokens: int = 40     # the world's longest response is 36 words plus <eos>
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response cut off before <eos>
    whiten_rewards: bool = True  # scale the per-token rewards to unit variance, keeping their mean
    gamma: float = 1.0           # no discount: the score comes at the end of a short episode
    lam: float = 0.95            # GAE's lambda
    clip_range: float = 0.2      # PPO's epsilon for the ratio
    clip_range_value: float = 0.2  # the same for the value model's step
    max_grad_norm: float = 1.0   # gradient clipping, policy and value model each
    eval_every: int = 3          # iterations between validation checks (gold reward, KL); 0: never
    eval_prompts: int = 256      # validation prompts per check (a fixed random subset: splits are sorted by category)
    keep_best: bool = True       # end with the weights of the best validation check (by gold reward)
    seed: int = 0


@dataclass
class PPOResult:
    policy: LanguageModel         # the trained policy (the best validation check's weights if keep_best), eval mode
    value_model: ScalarModel      # the value model at the end
    history: list[dict]           # one row per iteration: the metrics below, "val/*" on validation-check rows
    best_iteration: int           # iteration of the kept weights (0 = the reference itself)


@dataclass
class Rollouts:
    """A batch of sampled responses and everything PPO computes about them; per-token tensors are [B, L]."""
    prompts: list[world.Prompt]
    texts: list[str]              # decoded responses (" ..." appended when cut off, so the parser calls them malformed)
    ended: torch.Tensor           # [B] bool: did the response end with <eos>?
    input_ids: torch.Tensor       # [B, P + L] prompts left-padded to P columns, then responses right-padded
    attention_mask: torch.Tensor  # [B, P + L]
    context: int                  # P: the column where every response starts
    mask: torch.Tensor            # [B, L] 1 on response tokens (incl. <eos>)
    logprobs: torch.Tensor        # [B, L] log pi_old at the sampling temperature
    ref_logprobs: torch.Tensor    # [B, L] log pi_ref, same temperature
    values: torch.Tensor          # [B, L] V(s_t) at sampling time
    entropy: torch.Tensor         # [B, L] entropy of pi_old's next-token distribution
    scores: torch.Tensor          # [B] reward-model scores (before the missing-EOS penalty)
    rewards: torch.Tensor | None = None     # [B, L] after KL penalty, EOS penalty and whitening
    kl: torch.Tensor | None = None          # [B, L] log pi_old - log pi_ref
    advantages: torch.Tensor | None = None  # [B, L] whitened
    returns: torch.Tensor | None = None     # [B, L] value targets


def response_logprobs(model: LanguageModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, context: int,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log-probs of the response tokens and the next-token logits that gave them, at ``temperature``.

    Args:
        input_ids, attention_mask: [B, P + L] in the rollout layout (responses start at column ``context`` = P).
    Returns:
        logprobs [B, L] and logits [B, L, V] (already divided by the temperature).
    """
    # position t predicts token t + 1, so the logits for response tokens start one column before them
    logits = model(input_ids, attention_mask)[:, context - 1:-1] / temperature   # [B, L, V]
    logprobs = torch.log_softmax(logits, -1).gather(2, input_ids[:, context:, None]).squeeze(2)
    return logprobs, logits


def response_values(value_model: ScalarModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    context: int) -> torch.Tensor:
    """V(s_t) for each response token t [B, L]: the value model's output at the position before the token."""
    return value_model(input_ids, attention_mask)[:, context - 1:-1]


def _score(reward_model, prompts: list[world.Prompt], prompt_ids, response_ids, texts) -> torch.Tensor:
    """Scores [B] from a model with ``.score`` (right-padded rows, read at the last token) or a reward function."""
    if hasattr(reward_model, "score"):
        batch = pad_sequences(prompt_ids, response_ids, reward_model.cfg.pad_id)
        return reward_model.score(batch.input_ids, batch.attention_mask).float()
    return torch.as_tensor(reward_model(prompts, texts), dtype=torch.float32)


@torch.no_grad()
def rollout(policy: LanguageModel, reference: LanguageModel, value_model: ScalarModel, reward_model,
            prompts: list[world.Prompt], cfg: PPOConfig, generator: torch.Generator,
            tokenizer: Tokenizer) -> Rollouts:
    """Sample one response per prompt at ``cfg.temperature`` and compute log-probs, values, entropy and scores."""
    prompt_ids = [tokenizer.encode_prompt(p.text) for p in prompts]
    gen = policy.generate(prompt_ids, cfg.max_new_tokens, temperature=cfg.temperature, generator=generator)
    responses = gen.responses
    ended = torch.tensor([len(r) > 0 and r[-1] == tokenizer.eos_id for r in responses])
    texts = [tokenizer.decode(r) + ("" if e else " ...") for r, e in zip(responses, ended.tolist())]
    P, L, B = max(len(p) for p in prompt_ids), max(len(r) for r in responses), len(prompts)
    pad = policy.cfg.pad_id
    input_ids = torch.full((B, P + L), pad, dtype=torch.long)
    attention_mask = torch.zeros((B, P + L), dtype=torch.long)
    mask = torch.zeros((B, L))
    for i, (p, r) in enumerate(zip(prompt_ids, responses)):
        input_ids[i, P - len(p):P + len(r)] = torch.tensor(p + r)
        attention_mask[i, P - len(p):P + len(r)] = 1
        mask[i, :len(r)] = 1
    logprobs, logits = response_logprobs(policy, input_ids, attention_mask, P, cfg.temperature)
    # the sampler's log-probs must be the ones we train on: a temperature missing here would show at once
    sampled = torch.zeros((B, L))
    for i, lp in enumerate(gen.logprobs):
        sampled[i, :len(lp)] = torch.tensor(lp)
    gap = float(((logprobs - sampled).abs() * mask).max())
    if gap > 1e-3:
        raise RuntimeError(f"log-probs recomputed for training differ from the sampler's by {gap:.2g}: sampling and "
                           f"scoring must use the same temperature and the same model")
    ref_logprobs, _ = response_logprobs(reference, input_ids, attention_mask, P, cfg.temperature)
    values = response_values(value_model, input_ids, attention_mask, P)
    logp_all = torch.log_softmax(logits, -1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)                                  # [B, L]
    scores = _score(reward_model, prompts, prompt_ids, responses, texts)
    return Rollouts(list(prompts), texts, ended, input_ids, attention_mask, P, mask * 1.0,
                    logprobs * mask, ref_logprobs * mask, values * mask, entropy * mask, scores)


def compute_advantages(batch: Rollouts, beta: float, cfg: PPOConfig) -> Rollouts:
    """Fill in rewards (KL penalty, score at the last token, missing-EOS penalty, whitening), advantages, returns."""
    scores = batch.scores - cfg.missing_eos_penalty * (~batch.ended).float()
    rewards, kl = kl_penalised_rewards(batch.logprobs, batch.ref_logprobs, scores, batch.mask, beta)
    if cfg.whiten_rewards:
        rewards = whiten(rewards, batch.mask, shift_mean=False)
    advantages, returns = gae(rewards, batch.values, batch.mask, cfg.gamma, cfg.lam)
    batch.rewards, batch.kl, batch.returns = rewards, kl, returns
    batch.advantages = whiten(advantages, batch.mask)
    return batch


def ppo_update(policy: LanguageModel, value_model: ScalarModel, batch: Rollouts, policy_opt, value_opt,
               cfg: PPOConfig, generator: torch.Generator) -> dict[str, float]:
    """``cfg.epochs`` passes of minibatches over one batch of rollouts; returns the mean of the step metrics."""
    totals: dict[str, float] = {}
    steps = 0
    B = batch.input_ids.shape[0]
    for epoch in range(cfg.epochs):
        order = torch.randperm(B, generator=generator)
        for start in range(0, B, cfg.minibatch_size):
            mb = order[start:start + cfg.minibatch_size]
            ids, attn, mask = batch.input_ids[mb], batch.attention_mask[mb], batch.mask[mb]
            # trim the response columns this minibatch does not use
            L = int(mask.sum(-1).max())
            ids, attn, mask = ids[:, :batch.context + L], attn[:, :batch.context + L], mask[:, :L]
            logprobs, _ = response_logprobs(policy, ids, attn, batch.context, cfg.temperature)
            if epoch == 0 and start == 0:
                # before any step the policy is pi_old: a ratio != 1 means dropout is on or scoring differs
                gap = float(((logprobs.detach() - batch.logprobs[mb, :L]).abs() * mask).max())
                assert gap < 1e-4, (f"the probability ratio is not 1 on the first minibatch (log-ratio up to "
                                    f"{gap:.2g}): is the policy in train mode with dropout on?")
            loss, metrics = clipped_policy_loss(logprobs, batch.logprobs[mb, :L], batch.advantages[mb, :L], mask,
                                                cfg.clip_range)
            policy_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            policy_opt.step()
            values = response_values(value_model, ids, attn, batch.context)
            value_loss, value_metrics = clipped_value_loss(values, batch.values[mb, :L], batch.returns[mb, :L],
                                                           mask, cfg.clip_range_value)
            value_opt.zero_grad(set_to_none=True)
            value_loss.backward()
            torch.nn.utils.clip_grad_norm_(value_model.parameters(), cfg.max_grad_norm)
            value_opt.step()
            for name, v in {**metrics, **value_metrics, "loss/policy": loss.item(),
                            "loss/value": value_loss.item()}.items():
                totals[name] = totals.get(name, 0.0) + v
            steps += 1
    return {name: v / steps for name, v in totals.items()}


def make_value_model(reference: LanguageModel) -> ScalarModel:
    """The value model: a copy of the reference's transformer with a fresh scalar head, zero at the start.

    A separate model (TRL's choice), not a second head on the policy: the value loss cannot then pull the policy's
    features around, and each gets its own learning rate; it costs one more forward and backward per minibatch,
    which this tiny model can afford. A zero head starts every V(s) at 0 (Huang et al. 2024 initialise the value
    head to zero too), so the first advantages are the whitened rewards-to-go.
    """
    value_model = ScalarModel.from_language_model(reference)
    torch.nn.init.zeros_(value_model.head.weight)
    torch.nn.init.zeros_(value_model.head.bias)
    return value_model


@torch.no_grad()
def validation_metrics(policy: LanguageModel, reference: LanguageModel, prompts: list[world.Prompt],
                       seed: int = 0) -> dict[str, float]:
    """Gold reward, sequence KL and failure rates of one sample per prompt at temperature 1 (evaluation protocol)."""
    samples = sample_responses(policy, prompts, 1.0, seed)
    card = score_samples(samples)
    out = {f"val/{k}": v for k, v in card.figures().items()
           if k in ("gold_reward", "harmful_compliance", "false_answer", "fabrication", "insult", "eos_rate",
                    "distinct_responses")}
    out["val/kl"] = sequence_kl(policy, reference, samples, 1.0)
    return out


def train_ppo(policy: LanguageModel | None, reference: LanguageModel, reward_model,
              prompts_train: list[world.Prompt], prompts_val: list[world.Prompt],
              cfg: PPOConfig = PPOConfig(), callback: Callable[[dict], None] | None = None,
              desc: str = "PPO") -> PPOResult:
    """RLHF with PPO: sample, score, compute advantages, update; ``cfg.iterations`` times.

    Each iteration: ``cfg.batch_size`` training prompts (shuffled, without repeats until all are used) get one
    response each from the policy at ``cfg.temperature``; the reward model scores them; per-token rewards are
    -beta * (log pi - log pi_ref) with the score (less the missing-EOS penalty) at the last token, whitened
    keeping their mean; the value model gives V(s_t); GAE gives advantages (whitened) and returns; then
    ``cfg.epochs`` passes of minibatches of the clipped policy loss and the clipped value loss, each model with its
    own Adam and gradient clipping. The policy runs in eval mode throughout (dropout off): the ratio on the first
    minibatch of every iteration is asserted to be 1.

    Args:
        policy: the policy to train in place (default None: a deep copy of ``reference``).
        reference: pi_ref, frozen.
        reward_model: anything with ``.score(input_ids, attention_mask) -> [B]`` and ``.cfg`` (a reward model), or a
            function ``(prompts, texts) -> [B]`` such as :func:`gold_reward_function` (an oracle).
        prompts_train: prompts to sample from.  prompts_val: for the validation checks (never the test split).
        cfg: see :class:`PPOConfig`.
        callback: called with each history row as it is made (a live plot in a notebook).
    Returns:
        a :class:`PPOResult`. History rows hold ``objective/kl`` (mean sequence KL of the batch, k1),
        ``objective/entropy`` (mean summed token entropy), ``objective/scores``, ``objective/rlhf_reward``
        (score - beta * KL), ``objective/gold`` (gold reward of the batch's responses), ``policy/clipfrac``,
        ``policy/approxkl``, ``loss/policy``, ``loss/value``, ``value/clipfrac``, ``response/length`` (tokens),
        ``response/eos_rate``, ``beta``, ``seconds``, and ``val/*`` every ``cfg.eval_every`` iterations.
    Used in lesson 03.
    """
    if not prompts_train:
        raise ValueError("train_ppo needs training prompts")
    torch.manual_seed(cfg.seed)
    tokenizer = Tokenizer()
    reference.eval().requires_grad_(False)
    if hasattr(reward_model, "score"):
        reward_model.eval().requires_grad_(False)
    policy = policy if policy is not None else copy.deepcopy(reference)
    # eval mode while training: dropout would make pi differ from pi_old before any update
    policy.eval().requires_grad_(True)
    value_model = make_value_model(reference).eval()
    policy_opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    value_opt = torch.optim.Adam(value_model.parameters(), lr=cfg.value_lr)
    controller = (AdaptiveKLController(cfg.beta, cfg.kl_target, cfg.k_beta) if cfg.kl_target is not None
                  else FixedKLController(cfg.beta))
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    val_prompts = list(prompts_val)
    val_prompts = random.Random(cfg.seed).sample(val_prompts, min(cfg.eval_prompts, len(val_prompts)))
    history: list[dict] = []
    best = {"iteration": 0, "score": float("-inf"), "state": None}
    start = time.perf_counter()

    def check(iteration: int, row: dict) -> None:
        row.update(validation_metrics(policy, reference, val_prompts, seed=cfg.seed))
        if row["val/gold_reward"] > best["score"]:
            best.update(iteration=iteration, score=row["val/gold_reward"],
                        state=copy.deepcopy(policy.state_dict()))

    if cfg.eval_every and val_prompts:
        row = {"iteration": 0, "seconds": 0.0}
        check(0, row)
        history.append(row)
        if callback:
            callback(row)
    order: list[int] = []
    for iteration in progress(range(1, cfg.iterations + 1), desc=desc):
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(prompts_train)), len(prompts_train))
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        beta = controller.beta
        batch = rollout(policy, reference, value_model, reward_model, [prompts_train[i] for i in idx], cfg,
                        generator, tokenizer)
        batch = compute_advantages(batch, beta, cfg)
        step_metrics = ppo_update(policy, value_model, batch, policy_opt, value_opt, cfg, generator)
        batch_kl = float(batch.kl.sum(-1).mean())
        controller.update(batch_kl)
        lengths = batch.mask.sum(-1)
        gold = [world.gold_reward(p, t) for p, t in zip(batch.prompts, batch.texts)]
        row = {"iteration": iteration,
               "objective/kl": batch_kl,
               "objective/entropy": float(batch.entropy.sum(-1).mean()),
               "objective/scores": float(batch.scores.mean()),
               "objective/rlhf_reward": float((batch.scores - beta * batch.kl.sum(-1)).mean()),
               "objective/gold": sum(gold) / len(gold),
               **step_metrics,
               "response/length": float(lengths.mean()),
               "response/eos_rate": float(batch.ended.float().mean()),
               "beta": beta,
               "seconds": time.perf_counter() - start}
        if cfg.eval_every and val_prompts and (iteration % cfg.eval_every == 0 or iteration == cfg.iterations):
            check(iteration, row)
        history.append(row)
        if callback:
            callback(row)
    best_iteration = cfg.iterations
    if cfg.keep_best and best["state"] is not None:
        policy.load_state_dict(best["state"])
        best_iteration = best["iteration"]
    policy.eval()
    return PPOResult(policy, value_model, history, best_iteration)
