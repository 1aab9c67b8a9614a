"""The RLHF loop: PPO on the language model against a reward model, built from :mod:`helpers.ppo`'s pieces.

Each iteration samples a batch of rollouts from the policy, scores them with the reward model (or any reward
function), turns the scores into per-token KL-penalised rewards, computes advantages with GAE, and runs a few epochs
of clipped policy and value updates. The implementation details are those of OpenAI's first RLHF code as Huang et
al. ("The N Implementation Details of RLHF with PPO", ICLR blog track 2024) reproduce them: per-token KL penalty
with the score at the end, reward and advantage whitening, clipped value loss, adaptive KL controller, a penalty for
a missing ``<eos>``, and the same sampling temperature when sampling and when scoring.

Layout of a batch of rollouts (the layout TRL uses): prompts left-padded to P columns, responses after them
right-padded to L columns, so every response starts at column P. Everything per token is then [B, L], aligned with
the response tokens; ``mask`` [B, L] is 1 on real response tokens (``<eos>`` included) and 0 on padding.

Shapes: B = batch size (responses), L = response tokens, P = prompt columns, V = vocabulary.
The validation figures the loop logs (``val/...``) come from the evaluation scorecard: they are what a run reports,
never what it trains on. Used in lesson 03.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import world
from .evaluate import score_samples  # validation figures only (val/...), never a training signal
from .model import LanguageModel, ScalarModel
from .ppo import (AdaptiveKLController, FixedKLController, clipped_policy_loss, clipped_value_loss, gae,
                  kl_penalised_rewards, whiten)
from .progress import progress
from .selection import SELECTION_SEED, SELECTION_TEMPERATURE, judged_win_rate
# response_logprobs lives with the rollout layout, so GRPO can use it too; lesson 03 calls it rlhf.response_logprobs
from .sampling import response_logprobs, rollout_layout, sample_responses, sequence_kl
from .tokenizer import Tokenizer, pad_sequences

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
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response cut off before <eos>; 0: off
    whiten_rewards: bool = True  # scale the per-token rewards to unit variance over the batch
    whiten_rewards_keep_mean: bool = True  # whiten(shift_mean=False), as TRL: r/std + mean*(1 - 1/std), the batch
                                 # mean kept by adding one constant to every token (with gamma = 1 a length term);
                                 # False: r/std alone, no constant
    whiten_advantages: bool = True  # (A - mean)/std over the batch; False: raw GAE advantages (common mistake 5)
    gamma: float = 1.0           # no discount: the score comes at the end of a short episode
    lam: float = 0.95            # GAE's lambda
    clip_range: float = 0.2      # PPO's epsilon for the ratio
    clip_range_value: float | None = 0.2  # the same for the value model's step; None: no value clipping
    max_grad_norm: float | None = 1.0  # gradient clipping, policy and value model each; None: no clipping
    eval_every: int = 3          # iterations between validation checks (win rate; gold and KL logged); 0: never
    eval_prompts: int = 256      # validation prompts per check (a fixed random subset: splits are sorted by category)
    keep_best: bool = True       # end with the weights of the validation check with the highest judged win rate
                                 # against the reference (helpers.selection: what a project without gold can do)
    seed: int = 0


@dataclass
class PPOResult:
    policy: LanguageModel         # the trained policy (the validation check with the best win rate if keep_best)
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
    input_ids, attention_mask, mask, P = rollout_layout(prompt_ids, responses, policy.cfg.pad_id)
    B, L = mask.shape
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
        constant = reward_whitening_constant(rewards, batch.mask)
        rewards = whiten(rewards, batch.mask, shift_mean=False)      # = rewards/std + constant, on every token
        if not cfg.whiten_rewards_keep_mean:
            rewards = rewards - constant * batch.mask                  # rewards/std alone
    advantages, returns = gae(rewards, batch.values, batch.mask, cfg.gamma, cfg.lam)
    batch.rewards, batch.kl, batch.returns = rewards, kl, returns
    batch.advantages = whiten(advantages, batch.mask) if cfg.whiten_advantages else advantages
    return batch


def reward_whitening_constant(rewards: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The constant c that ``whiten(rewards, mask, shift_mean=False)`` adds to every token on top of rewards/std:

        whiten(r, shift_mean=False) = (r - mean)/std + mean = r/std + c,   c = mean * (1 - 1/std)

    (std with the same eps as :func:`helpers.ppo.whiten`). With gamma = 1 a response of T tokens collects T * c in
    total: a term proportional to its length. Args: rewards, mask [B, L]. Returns: a scalar tensor.
    Used in lesson 03.
    """
    m = mask.to(rewards.dtype)
    n = m.sum()
    mean = (rewards * m).sum() / n
    std = torch.sqrt(((rewards - mean) ** 2 * m).sum() / (n - 1) + eps)
    return mean * (1.0 - 1.0 / std)


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
            # the norm before clipping is logged either way (an infinite max norm clips nothing)
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
            metrics["policy/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm))
            policy_opt.step()
            values = response_values(value_model, ids, attn, batch.context)
            # no value clipping: an infinite clip range leaves the loss the plain squared error
            value_clip = cfg.clip_range_value if cfg.clip_range_value is not None else float("inf")
            value_loss, value_metrics = clipped_value_loss(values, batch.values[mb, :L], batch.returns[mb, :L],
                                                           mask, value_clip)
            value_opt.zero_grad(set_to_none=True)
            value_loss.backward()
            torch.nn.utils.clip_grad_norm_(value_model.parameters(), max_norm)
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
                       seed: int = SELECTION_SEED, reference_samples=None) -> dict[str, float]:
    """One sample per prompt at temperature 1 from ``seed``: ``val/win_rate``, the judged win rate against the
    reference (:mod:`helpers.selection`, the number a checkpoint is chosen by), and, for the record only, the gold
    reward, sequence KL and failure rates. ``reference_samples``: the reference's samples of the same prompts from
    the same seed, if already drawn (they never change during a run). With the defaults ``val/win_rate`` equals
    :func:`helpers.selection.validation_win_rate` on ``prompts``."""
    samples = sample_responses(policy, prompts, SELECTION_TEMPERATURE, seed)
    if reference_samples is None:
        reference_samples = sample_responses(reference, prompts, SELECTION_TEMPERATURE, seed)
    card = score_samples(samples)
    out = {"val/win_rate": judged_win_rate(samples, reference_samples).value}
    out |= {f"val/{k}": v for k, v in card.figures().items()
            if k in ("gold_reward", "harmful_compliance", "false_answer", "fabrication", "insult", "eos_rate",
                     "malformed", "distinct_responses")}
    out["val/kl"] = sequence_kl(policy, reference, samples, SELECTION_TEMPERATURE)
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
        ``response/eos_rate``, ``policy/grad_norm`` (before clipping), ``beta``, ``seconds``, and ``val/*`` every
        ``cfg.eval_every`` iterations (``val/win_rate`` chooses the kept checkpoint; the others are for the record).
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
    reference_samples = (sample_responses(reference, val_prompts, SELECTION_TEMPERATURE, SELECTION_SEED)
                         if cfg.eval_every and val_prompts else None)
    start = time.perf_counter()

    def check(iteration: int, row: dict) -> None:
        # the selection rule of every method: judged win rate against the reference on validation, never gold
        row.update(validation_metrics(policy, reference, val_prompts, reference_samples=reference_samples))
        if row["val/win_rate"] > best["score"]:     # ties keep the earlier (closer to the reference) check
            best.update(iteration=iteration, score=row["val/win_rate"],
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
