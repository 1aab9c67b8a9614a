"""Direct preference optimisation and its family: the losses, one small pure function each, and a training loop.

DPO (Rafailov et al. 2023) skips the reward model: the KL-regularised optimum
pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x) (their eq. 4) means the reward is
r(x,y) = beta * log(pi(y|x)/pi_ref(y|x)) + beta * log Z(x), and Bradley-Terry on two responses to the same prompt
cancels Z. What is left is a classification loss on the *implicit reward* beta * log(pi/pi_ref) of the chosen and
the rejected response.

Every loss here takes **sequence log-probabilities summed over the response tokens** (the course's
:func:`helpers.model.sequence_logprobs`), except where a paper says otherwise (SimPO and ORPO take lengths or
per-token means, and say so). Every loss returns per-example values [B], not reduced: take ``.mean()`` for a batch.

The last section is *tabular* DPO on the world's enumerable view (one free logit per candidate response), where
the exact expected loss can be minimised and compared with the optimum of :mod:`helpers.optimal`. The expected loss
sums over every pair of candidates, N K^2 terms: run it on the view merged by equal reward
(:meth:`helpers.enumerable.View.by_reward`, ~16 groups per prompt instead of up to ~200 candidates), whose optimum is
the full view's.

Shapes: B = batch size (pairs, or unpaired examples for KTO), T = sequence length; N prompts and K candidates per
prompt in the tabular section.
Used in lesson 04.
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import world
from .early_stopping import EarlyStopping
from .model import LanguageModel, sequence_logprobs
from .pretrain import load_reference
from .progress import progress
from .tokenizer import Batch, Tokenizer, collate_preferences

METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(s != first for s in shapes.values()):
        raise ValueError(f"expected tensors of one shape [B], got {shapes}")
    if first[0] == 0:  # the mean of no losses is nan
        raise ValueError(f"expected at least one pair (B >= 1), got empty tensors {shapes}")


def _check_beta(beta: float) -> None:
    if not 0 < beta < math.inf:  # inf turns every loss into 0 or inf, nan into nan
        raise ValueError(f"beta must be a finite number > 0, got {beta}")


def _log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)), after checking the four shapes."""
    _check_same_shape(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                      ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    chosen_log_ratio = policy_chosen_logps - ref_chosen_logps
    rejected_log_ratio = policy_rejected_logps - ref_rejected_logps
    return chosen_log_ratio, rejected_log_ratio, chosen_log_ratio - rejected_log_ratio


# ----------------------------------------------------------------------------------------------------------------
# the losses

def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss: Bradley-Terry on implicit rewards.

        loss = -log sigma(beta * h),   h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]

    (Rafailov et al. 2023, eq. 7). beta multiplies the whole log-ratio difference h: it is the KL strength of the
    objective DPO solves, so a small beta lets the policy move far from the reference. The gradient with respect to
    h is -beta * sigma(-beta h) = -beta * sigma(r_hat(y_l) - r_hat(y_w)): pairs the model already orders right
    weigh little. At pi = pi_ref the loss is log 2 and that weight is beta / 2.

    Args:
        policy_chosen_logps: [B] log pi(y_w|x), **summed** over the response tokens (incl. <eos>).
        policy_rejected_logps: [B] log pi(y_l|x), summed likewise.
        ref_chosen_logps: [B] log pi_ref(y_w|x), summed; computed without gradient.
        ref_rejected_logps: [B] log pi_ref(y_l|x), summed; computed without gradient.
        beta: > 0.
    Returns:
        losses [B] (not reduced), chosen_rewards [B] = beta * (log pi(y_w) - log pi_ref(y_w)) and rejected_rewards
        [B] likewise: the implicit rewards, detached (for logging).
    Used in lesson 04.
    """
    _check_beta(beta)
    chosen, rejected, h = _log_ratio_difference(policy_chosen_logps, policy_rejected_logps,
                                                ref_chosen_logps, ref_rejected_logps)
    losses = -F.logsigmoid(beta * h)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The IPO loss: regress the log-ratio difference onto a fixed target instead of pushing it to infinity.

        loss = (h - 1 / (2 beta))^2,   h as in :func:`dpo_loss`

    (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences", eq. 17, with
    their tau written beta). beta sets the target margin 1/(2 beta) rather than scaling h: DPO's loss keeps falling
    as h grows, so on deterministic preferences it drives pi(y_l) to 0 whatever beta is; IPO stops at h* = 1/(2 beta).

    Args:
        the four log-probs [B], **summed** over response tokens, as in :func:`dpo_loss`; beta > 0.
    Returns:
        losses [B] (not reduced), chosen_rewards [B] and rejected_rewards [B] = beta * log-ratio, detached.
    Used in lesson 04.
    """
    _check_beta(beta)
    chosen, rejected, h = _log_ratio_difference(policy_chosen_logps, policy_rejected_logps,
                                                ref_chosen_logps, ref_rejected_logps)
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return losses, beta * chosen.detach(), beta * rejected.detach()


def cdpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
              beta: float, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conservative DPO: DPO with label smoothing, for labels flipped with probability eps.

        loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h),   h as in :func:`dpo_loss`

    (Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO"; the ``label_smoothing`` of TRL's
    DPO). beta scales h as in DPO. The loss is minimised at sigma(beta h*) = 1 - eps, i.e. beta h* = log((1 - eps)
    / eps): a finite margin, where plain DPO (eps = 0) has none.

    Args:
        the four log-probs [B], **summed** over response tokens, as in :func:`dpo_loss`; beta > 0.
        label_smoothing: eps in [0, 0.5), the assumed probability that a label is flipped.
    Returns:
        losses [B] (not reduced), chosen_rewards [B] and rejected_rewards [B] = beta * log-ratio, detached.
    Used in lesson 04.
    """
    _check_beta(beta)
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen, rejected, h = _log_ratio_difference(policy_chosen_logps, policy_rejected_logps,
                                                ref_chosen_logps, ref_rejected_logps)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def simpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               chosen_lengths: torch.Tensor, rejected_lengths: torch.Tensor,
               beta: float, gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO: no reference model; the reward is the length-normalised log-prob, with a target margin gamma.

        loss = -log sigma(beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma)

    (Meng et al. 2024, "SimPO"). beta scales the per-token *mean* log-prob; gamma is a margin in reward units.

    Args:
        policy_chosen_logps: [B] log pi(y_w|x), **summed** over the response tokens (the division happens here).
        policy_rejected_logps: [B] summed likewise.
        chosen_lengths: [B] number of response tokens summed over (incl. <eos>), > 0.
        rejected_lengths: [B] likewise.
        beta: > 0.  gamma: the target reward margin (>= 0 in the paper).
    Returns:
        losses [B] (not reduced), chosen_rewards [B] = beta * mean log pi(y_w), rejected_rewards [B] likewise,
        detached.
    Used in lesson 04.
    """
    _check_beta(beta)
    _check_same_shape(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                      chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths)
    if bool((chosen_lengths <= 0).any()) or bool((rejected_lengths <= 0).any()):
        raise ValueError("lengths must be > 0: every response has at least its <eos> token")
    chosen_rewards = beta * policy_chosen_logps / chosen_lengths
    rejected_rewards = beta * policy_rejected_logps / rejected_lengths
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor, beta: float,
             kl_estimate: float | torch.Tensor, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO: unpaired examples, each labelled desirable or undesirable, judged against a reference point z0.

        r = log pi(y|x) - log pi_ref(y|x)
        loss = lambda_D (1 - sigma(beta (r - z0)))   if y is desirable
        loss = lambda_U (1 - sigma(beta (z0 - r)))   if y is undesirable

    (Ethayarajh et al. 2024, "KTO": the loss lambda_y - v(x, y).) The reference point
    z0 = KL(pi(y'|x) || pi_ref(y'|x)) is the policy's current KL from the reference, estimated in the paper from
    *mismatched* pairs (a response to another prompt in the batch), clamped at 0 and **not** differentiated
    through: it makes a desirable example pay off only when its log-ratio beats what the policy gains on average.
    Pass it as ``kl_estimate`` (a float, or a tensor that is detached here). beta scales r - z0.

    Args:
        policy_logps: [B] log pi(y|x), **summed** over the response tokens.
        ref_logps: [B] log pi_ref(y|x), summed; computed without gradient.
        desirable: [B] bool, True for a desirable example.
        beta: > 0.  kl_estimate: z0 (>= 0 after clamping), one number for the batch.
        desirable_weight, undesirable_weight: lambda_D and lambda_U (> 0), to balance unequal class counts.
    Returns:
        losses [B] (not reduced) and rewards [B] = beta * (log pi - log pi_ref), detached.
    Used in lesson 04.
    """
    _check_beta(beta)
    _check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps, desirable=desirable)
    if desirable.dtype != torch.bool:
        raise ValueError(f"desirable must be a bool tensor, got {desirable.dtype}")
    if desirable_weight <= 0 or undesirable_weight <= 0:
        raise ValueError("desirable_weight and undesirable_weight must be > 0")
    z0 = torch.as_tensor(kl_estimate, dtype=policy_logps.dtype).detach().clamp(min=0)
    if z0.numel() != 1:
        raise ValueError("kl_estimate is one number for the batch")
    log_ratio = policy_logps - ref_logps
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - z0)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratio)))
    losses = torch.where(desirable, desirable_losses, undesirable_losses)
    return losses, beta * log_ratio.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012): expm1 near 0, log1p far below it."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(policy_chosen_mean_logps: torch.Tensor, policy_rejected_mean_logps: torch.Tensor,
              chosen_nll: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO: supervised fine-tuning plus an odds-ratio penalty, with no reference model.

        odds(y|x) = P(y|x) / (1 - P(y|x)),   P(y|x) = exp(mean log pi(y|x))  (per-token mean, not the sum)
        loss = NLL(y_w) + lam * -log sigma(log odds(y_w|x) - log odds(y_l|x))

    (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model", eq. 6: L_SFT + lam L_OR,
    L_OR = -log sigma(log odds ratio).) The log odds are computed as mean_logp - log(1 - exp(mean_logp)), the second
    term with a stable log1mexp, never as log(p / (1 - p)) on p itself. lam weighs the odds-ratio term (their lambda);
    there is no beta.

    Args:
        policy_chosen_mean_logps: [B] mean over the response tokens of log pi(y_w|x), < 0.
        policy_rejected_mean_logps: [B] likewise for y_l.
        chosen_nll: [B] the supervised loss on y_w (normally -policy_chosen_mean_logps).
        lam: >= 0.
    Returns:
        losses [B] (not reduced), chosen_rewards [B] = lam * mean log pi(y_w), rejected_rewards [B] likewise,
        detached (TRL's convention, for logging).
    Used in lesson 04.
    """
    _check_same_shape(policy_chosen_mean_logps=policy_chosen_mean_logps,
                      policy_rejected_mean_logps=policy_rejected_mean_logps, chosen_nll=chosen_nll)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if bool((policy_chosen_mean_logps >= 0).any()) or bool((policy_rejected_mean_logps >= 0).any()):
        raise ValueError("mean log-probs must be < 0 (a probability of 1 has infinite odds)")
    log_odds = ((policy_chosen_mean_logps - _log1mexp(policy_chosen_mean_logps))
                - (policy_rejected_mean_logps - _log1mexp(policy_rejected_mean_logps)))
    losses = chosen_nll - lam * F.logsigmoid(log_odds)
    return losses, lam * policy_chosen_mean_logps.detach(), lam * policy_rejected_mean_logps.detach()


# ----------------------------------------------------------------------------------------------------------------
# the training loop

@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.5            # KL strength; 0.1 over-optimises this tiny world within a few hundred steps
    lr: float = 3e-4             # AdamW; at 1e-4 the margins barely move in 20 steps, 3e-4 is still stable
    weight_decay: float = 0.0    # off: decay pulls weights towards 0, not towards the reference
    batch_size: int = 64         # pairs per step
    max_epochs: int = 2          # an upper bound: early stopping usually ends sooner
    max_steps: int | None = None  # a hard cap, for quick runs in notebooks and tests
    eval_every: int = 25         # steps between validation checks
    patience: int = 4            # stop after this many checks without a lower validation loss
    nll_weight: float = 0.0      # > 0 adds this times the chosen responses' per-token NLL (keeps outputs fluent)
    seed: int = 0


@dataclass
class DPOResult:
    policy: LanguageModel         # the kept weights (lowest validation loss, or highest select score), eval mode
    history: list[dict]           # one row per check: step, the METRICS on training batches since the last check
                                  # (running means), the same with an "eval_" prefix on the validation pairs, seconds
    best_step: int                # step of the kept weights (0 = the reference itself)


def _logps(model: LanguageModel, batch: Batch) -> torch.Tensor:
    """log pi(response | prompt), summed over response tokens: [B]."""
    logits = model(batch.input_ids, batch.attention_mask)                            # [B, T, V]
    return sequence_logprobs(logits, batch.input_ids, batch.response_mask)


@torch.no_grad()
def _reference_logps(reference: LanguageModel, pairs: list[world.PreferencePair], tokenizer: Tokenizer,
                     batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen reference's summed log-probs of every chosen and rejected response, computed once: each [N]."""
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        batch = collate_preferences(pairs[i:i + batch_size], tokenizer, reference.cfg.block_size)
        chosen.append(_logps(reference, batch.chosen))
        rejected.append(_logps(reference, batch.rejected))
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    assert not chosen.requires_grad and not rejected.requires_grad, "reference log-probs must carry no gradient"
    return chosen, rejected


def _pair_step(policy: LanguageModel, pairs: list[world.PreferencePair], ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, loss_fn: Callable, cfg: DPOConfig, tokenizer: Tokenizer):
    """Loss (a scalar with gradient) and the per-batch metrics for one batch of pairs."""
    batch = collate_preferences(pairs, tokenizer, policy.cfg.block_size)
    chosen_logps, rejected_logps = _logps(policy, batch.chosen), _logps(policy, batch.rejected)
    losses, chosen_rewards, rejected_rewards = loss_fn(chosen_logps, rejected_logps, ref_chosen, ref_rejected,
                                                       cfg.beta)
    loss = losses.mean()
    if cfg.nll_weight > 0:
        # the chosen responses' per-token NLL: keeps probability on "." and <eos>, which DPO alone can push down
        lengths = batch.chosen.response_mask.sum(-1).to(chosen_logps.dtype)
        loss = loss + cfg.nll_weight * (-chosen_logps / lengths).mean()
    metrics = {"loss": losses.detach().sum().item(),
               "rewards/chosen": chosen_rewards.sum().item(),
               "rewards/rejected": rejected_rewards.sum().item(),
               "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum().item(),
               "rewards/margins": (chosen_rewards - rejected_rewards).sum().item(),
               "logps/chosen": chosen_logps.detach().sum().item(),
               "logps/rejected": rejected_logps.detach().sum().item()}
    return loss, metrics, len(pairs)   # metrics are sums over the batch; divide by the count for means


def _evaluate(policy: LanguageModel, pairs, ref_chosen, ref_rejected, loss_fn, cfg, tokenizer,
              batch_size: int = 256) -> dict:
    totals, n = dict.fromkeys(METRICS, 0.0), 0
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            sl = slice(i, i + batch_size)
            _, metrics, k = _pair_step(policy, pairs[sl], ref_chosen[sl], ref_rejected[sl], loss_fn, cfg, tokenizer)
            for name in METRICS:
                totals[name] += metrics[name]
            n += k
    return {name: totals[name] / n for name in METRICS}


def train_dpo(train_pairs: list[world.PreferencePair], val_pairs: list[world.PreferencePair],
              cfg: DPOConfig = DPOConfig(), policy: LanguageModel | None = None,
              reference: LanguageModel | None = None, loss: Callable = dpo_loss,
              desc: str = "DPO", on_eval: Callable[[LanguageModel], dict] | None = None,
              select: Callable[[LanguageModel], float] | None = None) -> DPOResult:
    """Fine-tune a policy on preference pairs with a DPO-family loss, keeping the weights with the lowest
    validation loss (early stopping), or with the highest ``select`` score.

    The reference is frozen (no gradient, eval mode) and its log-probs are computed once, under ``torch.no_grad``.
    The policy starts as a copy of the reference and trains in eval mode, so dropout (if any) cannot make
    pi differ from pi_ref at step 0: the first loss is exactly log 2. Validation *loss* decides what is kept, not
    accuracy: with noisy labels accuracy plateaus early and moves in coarse steps, while the loss also sees how
    far the implicit rewards over-commit, which is what over-optimisation looks like in these numbers.
    (Neither sees degenerate generations directly; that is what the scorecard is for.)

    With ``select``, a score of the policy that a practitioner can compute (higher is better) decides instead: the
    kept weights are those with the highest score at a check (step 0, the reference itself, included), and training
    stops after ``patience`` checks without a higher one. The course's rule for every method (lessons 03-05) is
    ``select=lambda p: helpers.selection.validation_win_rate(p, reference).value``: the judged win rate against the
    reference on fresh validation samples. It is passed in, not imported, so that training code never imports
    evaluation code. The validation loss is logged either way.

    Args:
        train_pairs, val_pairs: PreferencePair rows; validation decides when to stop, never the test split.
        cfg: see :class:`DPOConfig`.
        policy: the starting policy (default: a deep copy of ``reference``); it is trained in place.
        reference: pi_ref (default: :func:`helpers.pretrain.load_reference`); frozen here.
        loss: any loss with :func:`dpo_loss`'s signature ``(pc, pr, rc, rr, beta) -> (losses, chosen_rewards,
            rejected_rewards)``: ``dpo_loss``, ``ipo_loss``, or ``functools.partial(cdpo_loss,
            label_smoothing=0.1)``.
        on_eval: called with the policy at step 0 and at every check; the dict it returns joins that history row.
            Use it to watch what the loss cannot show, e.g. the malformed rate of sampled responses.
        select: ``policy -> float``, the selection score (higher is better), computed at step 0 and at every check
            and logged as ``"select"``; None (the default) keeps the weights with the lowest validation loss.
    Returns:
        a :class:`DPOResult`.
    Used in lesson 04.
    """
    if not train_pairs or not val_pairs:
        raise ValueError("train_dpo needs non-empty training and validation pairs")
    _check_beta(cfg.beta)
    torch.manual_seed(cfg.seed)
    tokenizer = Tokenizer()
    reference = reference if reference is not None else load_reference()
    reference.eval()
    reference.requires_grad_(False)
    policy = policy if policy is not None else copy.deepcopy(reference)
    policy.requires_grad_(True)
    # eval mode while training: dropout would make pi differ from pi_ref for reasons that are not learning
    policy.eval()
    train_ref = _reference_logps(reference, train_pairs, tokenizer)
    val_ref = _reference_logps(reference, val_pairs, tokenizer)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    steps_per_epoch = max(1, len(train_pairs) // cfg.batch_size)
    total = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    start = time.perf_counter()
    first = _evaluate(policy, val_pairs, *val_ref, loss, cfg, tokenizer)
    # the stopper minimises: the validation loss, or minus the selection score
    scored = {"select": float(select(policy))} if select else {}
    stopper = EarlyStopping(policy, cfg.patience, loss=-scored["select"] if select else first["loss"], step=0)
    history = [{"step": 0, **dict.fromkeys(METRICS, float("nan")), **{f"eval_{k}": v for k, v in first.items()},
                **scored, "seconds": time.perf_counter() - start, **(on_eval(policy) if on_eval else {})}]
    running, seen = dict.fromkeys(METRICS, 0.0), 0
    order: list[int] = []
    for step in progress(range(1, total + 1), desc=desc):
        if len(order) < cfg.batch_size:
            order = list(range(len(train_pairs)))
            rng.shuffle(order)
        idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
        idx_t = torch.tensor(idx)
        loss_value, metrics, k = _pair_step(policy, [train_pairs[i] for i in idx], train_ref[0][idx_t],
                                            train_ref[1][idx_t], loss, cfg, tokenizer)
        opt.zero_grad(set_to_none=True)
        loss_value.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        for name in METRICS:
            running[name] += metrics[name]
        seen += k
        if step % cfg.eval_every == 0 or step == total:
            val = _evaluate(policy, val_pairs, *val_ref, loss, cfg, tokenizer)
            scored = {"select": float(select(policy))} if select else {}
            history.append({"step": step, **{name: running[name] / seen for name in METRICS},
                            **{f"eval_{name}": v for name, v in val.items()}, **scored,
                            "seconds": time.perf_counter() - start, **(on_eval(policy) if on_eval else {})})
            running, seen = dict.fromkeys(METRICS, 0.0), 0
            if stopper.update(policy, -scored["select"] if select else val["loss"], step):
                break
    stopper.restore(policy)
    policy.eval()
    return DPOResult(policy, history, stopper.best_step)


# ----------------------------------------------------------------------------------------------------------------
# tabular DPO on the enumerable view: a softmax over each prompt's candidates, where DPO's optimum is exact

def _masked_pairs(ref_probs: torch.Tensor) -> torch.Tensor:
    """[N, K, K] bool: the ordered pairs (i, j), i != j, of real candidates (reference probability > 0)."""
    real = ref_probs > 0
    eye = torch.eye(ref_probs.shape[-1], dtype=torch.bool)
    return real[:, :, None] & real[:, None, :] & ~eye


def tabular_log_ratios(logits: torch.Tensor, ref_probs: torch.Tensor) -> torch.Tensor:
    """log pi(y) - log pi_ref(y) for a tabular policy pi = softmax(logits): [N, K] -> [N, K] (0 on padding)."""
    real = ref_probs > 0
    log_pi = torch.log_softmax(logits.masked_fill(~real, -1e9), dim=-1)
    return torch.where(real, log_pi - torch.log(ref_probs.clamp_min(1e-30)), torch.zeros_like(logits))


def expected_dpo_loss(logits: torch.Tensor, ref_probs: torch.Tensor, rewards: torch.Tensor, tau: float,
                      beta: float) -> torch.Tensor:
    """The exact expected DPO loss of a tabular policy, over every pair of candidates of every prompt.

    A Bradley-Terry annotator with noise tau prefers y_i to y_j with probability p_ij = sigma((r_i - r_j) / tau),
    so the expected loss of the pair {i, j} is -p_ij log sigma(beta h_ij) - p_ji log sigma(beta h_ji), with h_ij
    the log-ratio difference of :func:`dpo_loss`. Summing over *ordered* pairs i != j gives exactly that. Its
    minimum is beta h_ij = (r_i - r_j) / tau for every pair, i.e. pi = pi_ref exp(r / (tau beta)) / Z: the
    KL-regularised optimum at beta_KL = tau * beta (:func:`helpers.optimal.optimal_policy`).

    Args:
        logits: [N, K] the tabular policy's logits (pi = softmax over real candidates).
        ref_probs: [N, K] pi_ref over the candidates, rows sum to 1, 0 on padding.
        rewards: [N, K] the gold reward of each candidate.
        tau: the annotator's noise temperature (> 0).  beta: DPO's beta (> 0).
    Returns:
        the loss, a scalar: the mean over pairs (uniform over every prompt's candidate pairs).
    Used in lesson 04.
    """
    _check_beta(beta)
    if not 0 < tau < math.inf:
        raise ValueError(f"tau must be a finite number > 0, got {tau}")
    log_ratio = tabular_log_ratios(logits, ref_probs)
    h = log_ratio[:, :, None] - log_ratio[:, None, :]                                   # [N, K, K]
    p = torch.sigmoid((rewards[:, :, None] - rewards[:, None, :]) / tau)               # [N, K, K]
    mask = _masked_pairs(ref_probs)
    terms = -p * F.logsigmoid(beta * h)
    # each unordered pair appears twice (as ij and ji), so the sum over ordered pairs / 2 is the sum over pairs
    return terms[mask].sum() / (mask.sum() / 2)


def sample_candidate_pairs(ref_probs: torch.Tensor, rewards: torch.Tensor, tau: float, pairs_per_prompt: int,
                           seed: int = 0) -> torch.Tensor:
    """Preference data on the enumerable view, as a labeller would produce it: for each prompt, draw two different
    candidates from pi_ref and let a Bradley-Terry annotator (noise tau) pick one.

    Returns:
        counts [N, K, K]: counts[n, i, j] = how often candidate i was chosen over candidate j for prompt n.
    Used in lesson 04.
    """
    gen = torch.Generator().manual_seed(seed)
    N, K = ref_probs.shape
    counts = torch.zeros(N, K, K)
    for _ in range(pairs_per_prompt):
        first = torch.multinomial(ref_probs, 1, generator=gen).squeeze(-1)              # [N]
        # the second draw excludes the first: a pair of identical responses carries no preference
        rest = ref_probs.scatter(-1, first[:, None], 0.0)
        second = torch.multinomial(rest + 1e-12 * (rest.sum(-1, keepdim=True) == 0), 1, generator=gen).squeeze(-1)
        rows = torch.arange(N)
        p_first = torch.sigmoid((rewards[rows, first] - rewards[rows, second]) / tau)
        first_wins = torch.rand(N, generator=gen) < p_first
        chosen = torch.where(first_wins, first, second)
        rejected = torch.where(first_wins, second, first)
        counts[rows, chosen, rejected] += 1
    return counts


def sampled_dpo_loss(logits: torch.Tensor, ref_probs: torch.Tensor, counts: torch.Tensor, beta: float,
                     loss: Callable = dpo_loss) -> torch.Tensor:
    """A DPO-family loss of a tabular policy on sampled pairs (``counts`` from :func:`sample_candidate_pairs`): the
    mean over pairs of ``loss(log pi(chosen), log pi(rejected), log pi_ref(chosen), log pi_ref(rejected), beta)``,
    any loss with :func:`dpo_loss`'s signature (``dpo_loss``, ``ipo_loss``, a ``partial`` of ``cdpo_loss``).

    Returns:
        the loss, a scalar (each pair weighted by how often it was drawn).
    Used in lesson 04.
    """
    _check_beta(beta)
    n, chosen, rejected = counts.nonzero(as_tuple=True)                                # one row per distinct pair
    log_pi = torch.log_softmax(logits.masked_fill(ref_probs == 0, -1e9), dim=-1)       # [N, K]
    log_ref = torch.log(ref_probs.clamp_min(1e-30))
    losses = loss(log_pi[n, chosen], log_pi[n, rejected], log_ref[n, chosen], log_ref[n, rejected], beta)[0]
    weights = counts[n, chosen, rejected]
    return (weights * losses).sum() / weights.sum()


def tabular_dpo(ref_probs: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], steps: int = 300,
                lr: float = 0.1) -> tuple[torch.Tensor, list[float]]:
    """Minimise a tabular loss ``loss_fn(logits)`` from pi = pi_ref with Adam (full batch): the policy's logits are
    one free number per candidate, so DPO's optimum is reachable exactly.

    Returns:
        the policy's probabilities [N, K] (0 on padding) and the loss at every step.
    Used in lesson 04.
    """
    logits = torch.log(ref_probs.clamp_min(1e-30)).clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn(logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        probs = torch.softmax(logits.masked_fill(ref_probs == 0, -1e9), dim=-1)
    return probs.masked_fill(ref_probs == 0, 0.0), losses
