"""GRPO and RLOO: policy gradients with a group baseline, and no value model.

PPO (lesson 03) needs a value model to say how good a state is, so that a response's reward can be compared with what
was expected. GRPO and RLOO sample a *group* of G responses to the same prompt and let the group be the comparison:

    GRPO (Shao et al. 2024, DeepSeekMath, section 4.1):     A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G)
    RLOO (Ahmadian et al. 2024, "Back to Basics"):          A_i = r_i - 1/(G - 1) * sum_{j != i} r_j

Every token of response i gets its response's advantage A_i, and PPO's clipped ratio loss
(:func:`helpers.ppo.clipped_policy_loss`, reused, not rewritten) turns the advantages into a gradient. RLOO's baseline
leaves the sample out, so it is independent of the sample and the gradient unbiased; it equals G / (G - 1) times
r_i - mean(r). GRPO divides by the group's standard deviation, which weighs prompts whose groups barely differ
(nearly all right or all wrong) as much as the others. Liu et al. 2025 ("Understanding R1-Zero-Like Training", Dr.
GRPO) show that this division, and GRPO's averaging over each response's own tokens (a wrong answer's gradient
shrinks as it grows longer), bias training; Dr. GRPO drops both.

The pull towards pi_ref comes in one of two places:
- in the loss, as GRPO does: beta times the k3 estimate of the KL on each sampled token (Schulman 2020, "Approximating
  KL divergence"), k3 = pi_ref/pi - log(pi_ref/pi) - 1 >= 0, zero exactly where pi = pi_ref;
- in the reward, as RLHF does (:func:`helpers.ppo.kl_penalised_rewards`): r_i - beta * log(pi(y_i)/pi_ref(y_i)) before
  the group comparison. This is the objective E[r] - beta KL(pi || pi_ref) the course measures against the optimum.
  The k3 term in the loss is not: differentiated on the policy's own samples its expected gradient is that of
  KL(pi_ref || pi), the other direction (the enumerable view shows the difference).

The loop samples G responses for each of P prompts per iteration; a reward function ``(prompts, texts) -> [B]`` (the
gold reward, a verifiable reward from :mod:`helpers.verifiable`) or a reward model scores them. Shapes: P = prompts
per batch, G = group size, B = P * G responses, L = response tokens, N = prompts and K = candidates on the
enumerable view.
Used in lesson 05.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import world
from .model import LanguageModel
from .ppo import clipped_policy_loss, kl_penalised_rewards, masked_mean, sample_candidates
from .progress import progress
from .sampling import Samples, response_logprobs, rollout_layout, sample_responses

# ----------------------------------------------------------------------------------------------------------------
# advantages from a group


def grpo_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages: each reward against its group's mean, in units of the group's spread.

        A_i = (r_i - mean_j r_j) / (std_j r_j + eps)      (scale=True: GRPO, Shao et al. 2024, section 4.1.2)
        A_i =  r_i - mean_j r_j                            (scale=False: Dr. GRPO, Liu et al. 2025)

    std is the unbiased (n - 1) standard deviation of the group, as TRL computes it; eps = 1e-4 as TRL. A group whose
    rewards are all equal gets advantages of exactly 0 (the zero-std guard): it carries no signal, and dividing its
    rounding error by eps would invent one.

    Args:
        rewards: [P, G] one row per prompt, one column per sampled response.
        scale: divide by the group's std (GRPO) or not (Dr. GRPO).
        eps: added to the std.
    Returns:
        advantages [P, G]; each row sums to 0.
    Used in lesson 05.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [P, G] with a group of G >= 2, got {tuple(rewards.shape)}")
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale:
        centred = centred / (rewards.std(1, keepdim=True) + eps)
    flat = rewards.amax(1, keepdim=True) == rewards.amin(1, keepdim=True)               # [P, 1]
    return centred.masked_fill(flat, 0.0)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO's leave-one-out advantages: each reward against the mean of the *other* G - 1 in its group.

        A_i = r_i - 1/(G - 1) * sum_{j != i} r_j  =  G/(G - 1) * (r_i - mean_j r_j)

    (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback
    in LLMs", the RLOO estimator, after Kool et al. 2019.) The baseline does not contain r_i, so it does not depend
    on the sample it judges: the policy gradient stays unbiased.

    Args:
        rewards: [P, G], G >= 2.
    Returns:
        advantages [P, G]; each row sums to 0.
    Used in lesson 05.
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [P, G] with a group of G >= 2, got {tuple(rewards.shape)}")
    G = rewards.shape[1]
    others = (rewards.sum(1, keepdim=True) - rewards) / (G - 1)
    return rewards - others


ADVANTAGES = {"grpo": grpo_advantages, "rloo": rloo_advantages}


# ----------------------------------------------------------------------------------------------------------------
# the loss

def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """GRPO's per-token KL estimate (Shao et al. 2024, section 4.1; Schulman 2020's k3), elementwise.

        k3 = pi_ref/pi - log(pi_ref/pi) - 1 = exp(ref - logp) - (ref - logp) - 1

    >= 0 always (e^x >= 1 + x), 0 exactly where logp = ref. Its gradient with respect to logp is
    1 - exp(ref - logp) = 1 - pi_ref/pi. On samples from pi its mean is KL(pi || pi_ref), but its expected gradient
    is that of KL(pi_ref || pi) (see the module's docstring).

    Args:
        logprobs: [...] log pi of sampled tokens (with gradient).  ref_logprobs: [...] log pi_ref of the same.
    Returns:
        [...] the estimate per token.
    Used in lesson 05.
    """
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, clip_range: float = 0.2, beta: float = 0.0,
              max_tokens: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's loss: PPO's clipped surrogate with one advantage per response, plus beta times the k3 KL.

        GRPO (max_tokens=None):  loss = 1/B sum_i 1/|y_i| sum_t [clip_t(i) + beta * k3_t(i)]
        Dr. GRPO (max_tokens=C): loss = 1/(B C) sum_i sum_t [clip_t(i) + beta * k3_t(i)]

    with clip_t(i) = max(-A_i ratio_t, -A_i clip(ratio_t, 1 - eps, 1 + eps)) from
    :func:`helpers.ppo.clipped_policy_loss`. That function averages over tokens with ``mask`` as the weights, so
    weights 1/|y_i| make its token mean GRPO's mean of per-response means (each response weighs the same, whatever
    its length); Dr. GRPO weighs every token the same and divides the sum by a constant C (the generation budget), so
    that no response's length changes the weight of its tokens. Reduction: as above, over the batch.

    Args:
        logprobs: [B, L] log pi of the sampled tokens (with gradient).
        old_logprobs: [B, L] the same under the policy that sampled them.  ref_logprobs: [B, L] under pi_ref.
        advantages: [B] one per response (e.g. :func:`grpo_advantages` flattened).
        mask: [B, L], 1 on response tokens; every row needs one.
        clip_range: PPO's epsilon.  beta: weight of the k3 term (0: no KL in the loss).
        max_tokens: None for GRPO's per-response mean; the constant C for Dr. GRPO.
    Returns:
        the loss (a scalar) and metrics ``clip_ratio`` (the share of tokens whose gradient the clip removed, averaged
        with the same weights), ``kl`` (the k3 term's value, same reduction) and ``policy/approxkl``.
    Used in lesson 05.
    """
    m = mask.to(logprobs.dtype)
    lengths = m.sum(-1, keepdim=True)                                                   # [B, 1]
    if bool((lengths == 0).any()):
        raise ValueError("every response needs at least one token")
    weights = m / lengths if max_tokens is None else m                                  # [B, L]
    # Dr. GRPO: the token mean clipped_policy_loss returns, times (tokens / (B C)), is the sum divided by B C
    rescale = 1.0 if max_tokens is None else float(m.sum()) / (m.shape[0] * max_tokens)
    A = advantages[:, None].expand_as(logprobs)                                         # [B] -> [B, L]
    policy_loss, metrics = clipped_policy_loss(logprobs, old_logprobs, A, weights, clip_range)
    kl = masked_mean(k3_kl(logprobs, ref_logprobs), weights) * rescale
    loss = policy_loss * rescale + beta * kl
    return loss, {"clip_ratio": metrics["policy/clipfrac"], "kl": float(kl.detach()),
                  "policy/approxkl": metrics["policy/approxkl"]}


# ----------------------------------------------------------------------------------------------------------------
# the loop on the language model

@dataclass(frozen=True)
class GRPOConfig:
    iterations: int = 25         # batches of groups: with the verifiable reward on the answerable training prompts,
                                 # false answers there fell 0.31 -> 0.13 in 25 (about 20 s on one thread)
    prompts_per_batch: int = 32  # P prompts per iteration
    group_size: int = 8          # G responses per prompt: B = P * G = 256 rollouts, PPO's batch
    minibatch_size: int = 64     # responses per gradient step: 4 steps per batch, so later steps see ratio != 1
    epochs: int = 1              # passes over each batch (TRL's num_iterations, the paper's mu)
    lr: float = 1e-4             # Adam
    advantage: str = "grpo"      # "grpo" (std-normalised) or "rloo" (leave-one-out)
    scale_rewards: bool = True   # GRPO's division by the group std; False for Dr. GRPO
    length_normalise: bool = True  # GRPO's mean over each response's tokens; False for Dr. GRPO (sum / max_new_tokens)
    kl_in: str = "loss"          # "loss": beta * k3 in the loss (GRPO); "reward": -beta * log(pi/pi_ref) in the reward
    beta: float = 0.04           # the KL weight (TRL's former default for GRPO)
    clip_range: float = 0.2      # PPO's epsilon
    temperature: float = 1.0     # sampling temperature, and the temperature of every log-prob
    max_new_tokens: int = 40     # the world's longest response is 36 words plus <eos>
    max_grad_norm: float = 1.0   # gradient clipping
    seed: int = 0


@dataclass
class GRPOResult:
    policy: LanguageModel        # the trained policy, in eval mode
    history: list[dict]          # one row per iteration (see train_grpo)


def _scores(reward, samples: Samples) -> torch.Tensor:
    """[B] scores from a reward function ``(prompts, texts) -> [B]`` or a reward model (anything with ``.score``)."""
    if hasattr(reward, "score"):
        from .reward import score_samples
        return score_samples(reward, samples).float()
    return torch.as_tensor(reward(samples.prompts, samples.texts), dtype=torch.float32)


def group_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                  group_size: int, cfg: GRPOConfig) -> torch.Tensor:
    """The rewards the group compares, [P, G]: the scores, less beta * log(pi/pi_ref) when the KL is in the reward."""
    if cfg.kl_in == "reward":
        per_token, _ = kl_penalised_rewards(logprobs, ref_logprobs, scores, mask, cfg.beta)
        scores = per_token.sum(-1)
    elif cfg.kl_in != "loss":
        raise ValueError(f"kl_in must be 'loss' or 'reward', got {cfg.kl_in!r}")
    return scores.view(-1, group_size)


def advantages_of(rewards: torch.Tensor, cfg: GRPOConfig) -> torch.Tensor:
    """[P, G] -> [P, G] with the configured estimator."""
    if cfg.advantage == "grpo":
        return grpo_advantages(rewards, scale=cfg.scale_rewards)
    if cfg.advantage == "rloo":
        return rloo_advantages(rewards)
    raise ValueError(f"advantage must be 'grpo' or 'rloo', got {cfg.advantage!r}")


def train_grpo(policy: LanguageModel | None, reference: LanguageModel, reward,
               prompts_train: list[world.Prompt], cfg: GRPOConfig = GRPOConfig(),
               callback: Callable[[dict], None] | None = None, desc: str = "GRPO") -> GRPOResult:
    """GRPO (or RLOO) on the language model: sample groups, score, compare within each group, update.

    Each iteration: ``cfg.prompts_per_batch`` training prompts (shuffled, no repeats until all are used) get
    ``cfg.group_size`` responses each at ``cfg.temperature``; ``reward`` scores them; the advantages compare each
    response with its group (:func:`grpo_advantages` or :func:`rloo_advantages`); then ``cfg.epochs`` passes of
    minibatches of :func:`grpo_loss`, with Adam and gradient clipping. No value model. The policy stays in eval mode
    (dropout off), so that the ratio is 1 on the first minibatch.

    Args:
        policy: the policy to train in place (None: a deep copy of ``reference``; pass one to evaluate it from the
            callback).
        reference: pi_ref, frozen.
        reward: a function ``(prompts, texts) -> [B]`` (:data:`helpers.verifiable.verifiable_reward`, a gold reward
            function) or a reward model (anything with ``.score(input_ids, attention_mask)``).
        prompts_train: the prompts to practise on.
        cfg: see :class:`GRPOConfig`.
        callback: called with each history row as it is made; it may add keys to the row (validation figures).
    Returns:
        a :class:`GRPOResult`. History rows hold what TRL's GRPOTrainer logs: ``reward`` (mean score), ``reward_std``
        (mean within-group std of the scores), ``frac_reward_zero_std`` (share of groups whose scores are all equal:
        no signal), ``kl`` (mean per-token k3 of the batch), ``entropy`` (mean per-token entropy), ``clip_ratio``,
        ``loss``, ``completions/mean_length`` (tokens), ``completions/clipped_ratio`` (share cut off at
        ``max_new_tokens``); and ``kl/sequence`` (mean log pi(y)/pi_ref(y), the sequence KL the course compares),
        ``gold`` (the batch's mean gold reward), ``iteration``, ``seconds``.
    Used in lesson 05.
    """
    if not prompts_train:
        raise ValueError("train_grpo needs training prompts")
    if cfg.group_size < 2:
        raise ValueError("a group needs at least two responses")
    torch.manual_seed(cfg.seed)
    reference.eval().requires_grad_(False)
    if hasattr(reward, "score"):
        reward.eval().requires_grad_(False)
    policy = policy if policy is not None else copy.deepcopy(reference)
    policy.eval().requires_grad_(True)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    max_tokens = None if cfg.length_normalise else cfg.max_new_tokens
    history: list[dict] = []
    order: list[int] = []
    start = time.perf_counter()
    for iteration in progress(range(1, cfg.iterations + 1), desc=desc):
        if len(order) < cfg.prompts_per_batch:
            order += rng.sample(range(len(prompts_train)), len(prompts_train))
        idx, order = order[:cfg.prompts_per_batch], order[cfg.prompts_per_batch:]
        # G copies of each prompt, next to each other: row-major [P, G] after a view
        group = [prompts_train[i] for i in idx for _ in range(cfg.group_size)]
        samples = sample_responses(policy, group, cfg.temperature, seed=cfg.seed * 100_003 + iteration,
                                   max_new_tokens=cfg.max_new_tokens)
        input_ids, attention_mask, mask, context = rollout_layout(samples.prompt_ids, samples.response_ids,
                                                                  policy.cfg.pad_id)
        with torch.no_grad():
            old_logprobs, logits = response_logprobs(policy, input_ids, attention_mask, context, cfg.temperature)
            ref_logprobs, _ = response_logprobs(reference, input_ids, attention_mask, context, cfg.temperature)
            old_logprobs, ref_logprobs = old_logprobs * mask, ref_logprobs * mask
            logp_all = torch.log_softmax(logits, -1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)                               # [B, L]
            scores = _scores(reward, samples)                                            # [B]
            rewards = group_rewards(scores, old_logprobs, ref_logprobs, mask, cfg.group_size, cfg)   # [P, G]
            advantages = advantages_of(rewards, cfg).reshape(-1)                         # [B]
        beta_in_loss = cfg.beta if cfg.kl_in == "loss" else 0.0
        steps: list[dict] = []
        B = len(group)
        for _ in range(cfg.epochs):
            perm = torch.randperm(B, generator=generator)
            for s in range(0, B, cfg.minibatch_size):
                mb = perm[s:s + cfg.minibatch_size]
                L = int(mask[mb].sum(-1).max())                    # trim the response columns it does not use
                logprobs, _ = response_logprobs(policy, input_ids[mb, :context + L], attention_mask[mb, :context + L],
                                                context, cfg.temperature)
                loss, metrics = grpo_loss(logprobs, old_logprobs[mb, :L], ref_logprobs[mb, :L], advantages[mb],
                                          mask[mb, :L], cfg.clip_range, beta_in_loss, max_tokens)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                steps.append({**metrics, "loss": loss.item()})
        groups = scores.view(-1, cfg.group_size)
        gold = [world.gold_reward(p, t) for p, t in zip(samples.prompts, samples.texts)]
        row = {"iteration": iteration,
               "reward": float(scores.mean()),
               "reward_std": float(groups.std(1).mean()),
               "frac_reward_zero_std": float((groups.amax(1) == groups.amin(1)).float().mean()),
               "kl": float(masked_mean(k3_kl(old_logprobs, ref_logprobs), mask)),
               "kl/sequence": float((old_logprobs - ref_logprobs).sum(-1).mean()),
               "entropy": float(masked_mean(entropy, mask)),
               "clip_ratio": sum(s["clip_ratio"] for s in steps) / len(steps),
               "loss": sum(s["loss"] for s in steps) / len(steps),
               "completions/mean_length": float(mask.sum(-1).mean()),
               "completions/clipped_ratio": 1.0 - sum(samples.ended) / B,
               "gold": sum(gold) / len(gold),
               "seconds": time.perf_counter() - start}
        if callback:
            callback(row)
        history.append(row)
    policy.eval()
    return GRPOResult(policy, history)


# ----------------------------------------------------------------------------------------------------------------
# the enumerable setting: GRPO on a softmax over each prompt's candidates

@dataclass(frozen=True)
class EnumerableGRPOConfig:
    beta: float = 1.0            # KL strength of the objective (DESIGN.md: beta = 1 for the enumerable figures)
    iterations: int = 300        # PPO's budget on the view
    prompts_per_batch: int = 32  # P prompts per iteration
    group_size: int = 8          # G candidates sampled per prompt: 256 samples per iteration, as PPO's batch
    epochs: int = 2              # passes over each batch
    minibatch_size: int = 64
    clip_range: float = 0.2      # PPO's epsilon
    lr: float = 0.3              # SGD step per sample on the table of logits, decayed to 0: GRPO's advantages are
                                 # unit-scale however close a group is to flat, so a constant step leaves it jittering
                                 # around pi* (0.5, PPO's, stalls near 0.8 of the gain; 0.1 constant near 0.94);
                                 # k3 in the loss can diverge above 0.1 (its gradient 1 - pi_ref/pi is unbounded)
    lr_decay: bool = True        # decay lr linearly to 0 over the run (the Hugging Face Trainer's default, so TRL's)
    advantage: str = "grpo"      # "grpo" or "rloo"
    scale_rewards: bool = True   # GRPO's division by the group std (False: Dr. GRPO)
    kl_in: str = "reward"        # "reward": the objective J measured against the optimum; "loss": GRPO's k3 term
    seed: int = 0


@dataclass
class EnumerableGRPOResult:
    probs: torch.Tensor           # [N, K] the trained policy over each prompt's candidates
    history: list[dict]           # per iteration: gain_fraction, objective, kl, reward, clip_ratio,
                                  # frac_reward_zero_std


def enumerable_grpo(ref_probs: torch.Tensor, rewards: torch.Tensor,
                    cfg: EnumerableGRPOConfig = EnumerableGRPOConfig()) -> EnumerableGRPOResult:
    """GRPO (or RLOO) from sampled groups on the enumerable view, with the LM loop's own pieces.

    The policy is a table of logits theta [N, K] (pi(.|x) = softmax(theta_x)), starting at log pi_ref; there is no
    value table. Each iteration samples ``prompts_per_batch`` prompts and ``group_size`` candidates for each from the
    current policy; a response is one action, so every per-token tensor has L = 1 (length normalisation does not
    arise). The group rewards (:func:`group_rewards`: r*, less beta log(pi/pi_ref) when the KL is in the reward), the
    advantages (:func:`grpo_advantages` / :func:`rloo_advantages`) and :func:`grpo_loss` are those of the LM loop;
    plain SGD with the minibatch-mean loss scaled back to a sum, as :func:`helpers.ppo.enumerable_ppo` does.

    With the KL in the reward, pi* = pi_ref exp(r*/beta) / Z is a fixed point: there every candidate's shaped reward
    is beta log Z(x), every group is flat and every advantage 0. With GRPO's k3 term in the loss the expected
    gradient of that term is pi - pi_ref (that of KL(pi_ref || pi)), so with RLOO's or Dr. GRPO's advantages the
    fixed point is the optimum of E[r*] - beta KL(pi_ref || pi) instead, short of pi* (with GRPO's the same, at a
    beta scaled by each group's reward std).

    Args:
        ref_probs: [N, K] pi_ref over each prompt's candidates (0 on padding).
        rewards: [N, K] r*(x, y).
        cfg: see :class:`EnumerableGRPOConfig`.
    Returns:
        an :class:`EnumerableGRPOResult`; ``gain_fraction`` is :func:`helpers.optimal.gain_fraction` at ``cfg.beta``.
    Used in lesson 05.
    """
    from .optimal import gain_fraction, kl_divergence, objective
    if ref_probs.shape != rewards.shape:
        raise ValueError(f"ref_probs {tuple(ref_probs.shape)} and rewards {tuple(rewards.shape)} must match")
    loop_cfg = GRPOConfig(advantage=cfg.advantage, scale_rewards=cfg.scale_rewards, kl_in=cfg.kl_in, beta=cfg.beta)
    gen = torch.Generator().manual_seed(cfg.seed)
    valid = ref_probs > 0
    ref_logp = torch.log(ref_probs.clamp_min(1e-30))
    theta = ref_logp.masked_fill(~valid, -1e9).clone().requires_grad_(True)           # [N, K]
    opt = torch.optim.SGD([theta], lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: 1.0 - it / cfg.iterations if cfg.lr_decay else 1.0)
    N, P, G = ref_probs.shape[0], cfg.prompts_per_batch, cfg.group_size
    beta_in_loss = cfg.beta if cfg.kl_in == "loss" else 0.0
    history = []
    for it in range(cfg.iterations):
        with torch.no_grad():
            idx = torch.randint(N, (P,), generator=gen).repeat_interleave(G)            # [B], G per prompt
            action, old_logprobs, ref_logprobs, scores = sample_candidates(theta, ref_logp, rewards, idx, gen)
            mask = torch.ones_like(old_logprobs)                                         # [B, 1]: L = 1
            group = group_rewards(scores, old_logprobs, ref_logprobs, mask, G, loop_cfg)   # [P, G]
            advantages = advantages_of(group, loop_cfg).reshape(-1)                      # [B]
        clip_ratios = []
        for _ in range(cfg.epochs):
            order = torch.randperm(P * G, generator=gen)
            for start in range(0, P * G, cfg.minibatch_size):
                mb = order[start:start + cfg.minibatch_size]
                logprobs = torch.log_softmax(theta[idx[mb]], -1).gather(1, action[mb])
                loss, metrics = grpo_loss(logprobs, old_logprobs[mb], ref_logprobs[mb], advantages[mb], mask[mb],
                                          cfg.clip_range, beta_in_loss)
                opt.zero_grad(set_to_none=True)
                (loss * len(mb)).backward()
                opt.step()
                clip_ratios.append(metrics["clip_ratio"])
        schedule.step()
        if not bool(torch.isfinite(theta[valid]).all()):
            raise RuntimeError(f"the table of logits diverged at iteration {it + 1}: lr {cfg.lr} is too large (the k3 "
                               f"term's gradient 1 - pi_ref/pi grows without bound as pi falls below pi_ref)")
        with torch.no_grad():
            pi = torch.softmax(theta, -1)
            flat = scores.view(P, G)
            history.append({"iteration": it + 1,
                            "gain_fraction": gain_fraction(pi, ref_probs, rewards, cfg.beta),
                            "objective": float(objective(pi, ref_probs, rewards, cfg.beta).mean()),
                            "kl": float(kl_divergence(pi, ref_probs).mean()),
                            "reward": float((pi * rewards).sum(-1).mean()),
                            "clip_ratio": sum(clip_ratios) / len(clip_ratios),
                            "frac_reward_zero_std": float((flat.amax(1) == flat.amin(1)).float().mean())})
    return EnumerableGRPOResult(torch.softmax(theta.detach(), -1), history)
