"""PPO's pieces as small pure functions: masked statistics and whitening, the KL-penalised reward, GAE, the clipped
policy and value losses, the KL controllers, and PPO on the enumerable view. The loop that puts them together on the
language model is :mod:`helpers.rlhf`; GRPO reuses these pieces without importing that loop.

Generation as reinforcement learning: the state is the prompt plus the response so far, an action is the next
token, the episode ends at ``<eos>``. The reward of a whole response is the reward model's score, paid at the last
token, minus a per-token KL penalty that keeps the policy near the reference:

    r_t = -beta * (log pi(y_t | s_t) - log pi_ref(y_t | s_t))  +  [t = last] * score(x, y)

PPO (Schulman et al. 2017) then raises the log-probability of tokens with a positive advantage, a few epochs of
minibatches per batch of samples, with the probability ratio clipped so that one batch cannot move the policy far.

Everything per token is [B, L], aligned with the response tokens; ``mask`` [B, L] is 1 on real response tokens
(``<eos>`` included) and 0 on padding. Shapes: B = batch size (responses), L = response tokens, K = candidates per
prompt (enumerable view), N = prompts.
Used in lesson 03.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


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


@torch.no_grad()
def sample_candidates(theta: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor, idx: torch.Tensor,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One candidate for each prompt row ``idx`` [B] from the table policy softmax(theta) [N, K]: the candidate
    [B, 1], its log-prob under the table [B, 1] and under pi_ref [B, 1], and its reward [B]. Used in lessons 03, 05."""
    action = torch.multinomial(torch.softmax(theta[idx], -1), 1, generator=generator)   # [B, 1]
    logprobs = torch.log_softmax(theta[idx], -1).gather(1, action)
    return action, logprobs, ref_logp[idx].gather(1, action), rewards[idx].gather(1, action).squeeze(1)


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
    full-size steps (measured on the test split's view merged by reward: the gain then stalls near 0.83 instead of
    reaching 0.95).
    The optimum of the objective J(pi) = E_pi[r*] - beta KL(pi || pi_ref) is pi* proportional to
    pi_ref exp(r*/beta), so the result can be measured against it exactly
    (:func:`helpers.optimal.gain_fraction`).

    Args:
        ref_probs: [N, K] pi_ref over each prompt's candidates (0 on padding); the bench passes the view merged by
            equal reward (:meth:`helpers.enumerable.View.by_reward`), whose optimum is the full view's.
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
            action, old_logprobs, ref_logprobs, scores = sample_candidates(theta, ref_logp, rewards, idx, gen)
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
