"""Lesson 03's checks on PPO's pure pieces: GAE, advantage normalisation, the clipped policy loss and the
KL-penalised per-token reward. The checks on the loop and the lesson's questions are in :mod:`.rlhf`.
Tests: tests/test_checks_ppo.py.

Per-token tensors are [B, L] in the rollout layout of :mod:`helpers.rlhf`: one row per response, right padded, with
``mask`` 1 on response tokens (``<eos>`` included). Every case puts garbage on the padding, so an answer that lets
padding leak in shows it.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import (ATOL_VALUE, RTOL_VALUE, _call, _close, _fail, _first, _first_match, _fmt, _inputs_unchanged,
                   _tensor_result)

GARBAGE = 7.0  # what padding holds in the checks' inputs: it must never reach a result


def _rows(lengths: list[int], seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two random [B, L] tensors and the prefix mask of ``lengths``; GARBAGE (and 3 GARBAGE) on padding."""
    gen = torch.Generator().manual_seed(seed)
    B, L = len(lengths), max(lengths)
    mask = torch.zeros(B, L)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    a = (scale * torch.randn(B, L, generator=gen)).masked_fill(mask == 0, GARBAGE)
    b = (scale * torch.randn(B, L, generator=gen)).masked_fill(mask == 0, 3 * GARBAGE)
    return a, b, mask


# ----------------------------------------------------------------------------------------------------------------
# GAE

def _gae64(rewards, values, mask, gamma, lam, *, use_mask=True, keep_padding=False, recursion=None,
           bootstrap_padding=False, lam_in_delta=False):
    """Reference GAE in float64 by the backward recursion (and the variants the check names); ``recursion``
    replaces gamma * lam as the weight of A_{t+1}; ``bootstrap_padding`` reads V_{t+1} unmasked (from a padding
    position after the last real token) while still masking the advantages; ``lam_in_delta`` puts lambda on V_{t+1}
    inside delta too."""
    r, v, m = rewards.double(), values.double(), mask.double()
    if not use_mask:
        m = torch.ones_like(m)
    B, L = r.shape
    adv = torch.zeros_like(r)
    next_v, next_a = torch.zeros(B, dtype=r.dtype), torch.zeros(B, dtype=r.dtype)
    for t in reversed(range(L)):
        delta = r[:, t] + gamma * (lam if lam_in_delta else 1.0) * next_v - v[:, t]
        weight = gamma * lam if recursion is None else recursion
        adv[:, t] = (delta + weight * next_a) * m[:, t]
        next_v, next_a = v[:, t] * (1.0 if bootstrap_padding else m[:, t]), adv[:, t]
    if keep_padding or not use_mask:
        return adv * mask.double(), (adv + v) * mask.double()
    return adv, (adv + v) * m


def check_gae(gae: Callable, hidden: bool = False) -> None:
    """Check ``gae(rewards, values, mask, gamma, lam) -> (advantages, returns)``, each [B, L], 0 on padding:
    delta_t = r_t + gamma V_{t+1} - V_t (V after the last real token is 0), A_t = delta_t + gamma lam A_{t+1},
    returns = A + V. Within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: padding leaking in (advantages carried through the padding), V_{t+1} taken from a
    padding position while the advantages are masked, lambda applied to V_{t+1} inside delta, lambda ignored, gamma missing from the recursion, the one-step TD error only, a forward instead of a backward sum,
    returns without V, advantages or returns not zero on padding.
    """
    name = "gae"
    cases = [([5, 3, 1, 4], 1.0, 0.95, 0), ([4, 2, 4], 0.9, 0.8, 1), ([3, 6], 0.99, 0.0, 2)]
    if hidden:
        cases.append(([7, 1, 5, 2, 6], 0.95, 0.5, 3))
    for lengths, gamma, lam, seed in cases:
        rewards, values, mask = _rows(lengths, seed)
        case = f"responses of {lengths} tokens, gamma {gamma}, lambda {lam} (padding holds {GARBAGE})"
        args = (rewards.clone(), values.clone(), mask.clone())
        out = _call(gae, name, *args, gamma, lam)
        _inputs_unchanged(name, (rewards, values, mask), args, case)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            _fail(name, f"returns {type(out).__name__}; expected a tuple (advantages, returns)", f"case: {case}")
        want_a, want_r = _gae64(rewards, values, mask, gamma, lam)
        got_a = _tensor_result(out[0], name, rewards.shape, case)
        got_r = _tensor_result(out[1], name, rewards.shape, case)
        m = mask.double()
        if not _close(got_a, want_a, ATOL_VALUE, RTOL_VALUE):
            if _close(got_a * m, want_a, ATOL_VALUE, RTOL_VALUE):
                _fail(name, "the advantages are not 0 on padding: multiply by the mask", f"case: {case}")
            reversed_sum = torch.zeros_like(want_a)
            td = (rewards.double() + gamma * torch.cat([values.double()[:, 1:] * m[:, 1:],
                                                        torch.zeros(len(lengths), 1, dtype=torch.float64)], 1)
                  - values.double()) * m
            for t in range(rewards.shape[1]):
                reversed_sum[:, t] = (td[:, t] + (gamma * lam * reversed_sum[:, t - 1] if t else 0)) * m[:, t]
            variants = [
                ("padding leaks in: the value after a response's last token must be 0 (the episode has ended), "
                 "not V of the padding position; use the mask when you carry V_{t+1} and A_{t+1} backwards",
                 _gae64(rewards, values, mask, gamma, lam, use_mask=False)[0]),
                ("takes V_{t+1} from a padding position: the advantages are masked, but the last real token's "
                 "delta still adds gamma * V of the padding after it. The episode ends at <eos>, so V_{t+1} there is "
                 "0: multiply the next value by the mask too",
                 _gae64(rewards, values, mask, gamma, lam, bootstrap_padding=True)[0]),
                ("applies lambda to V_{t+1} inside delta: delta_t = r_t + gamma V_{t+1} - V_t has no lambda; lambda "
                 "weighs only A_{t+1} in the recursion A_t = delta_t + gamma lambda A_{t+1}",
                 _gae64(rewards, values, mask, gamma, lam, lam_in_delta=True)[0] if lam != 1.0 else None),
                ("ignores lambda: that is lambda = 1 (discounted return minus V)",
                 _gae64(rewards, values, mask, gamma, 1.0)[0]),
                ("gamma is missing from the recursion: A_t = delta_t + gamma * lambda * A_{t+1}",
                 _gae64(rewards, values, mask, gamma, lam, recursion=lam)[0] if gamma != 1.0 else None),
                ("returns the one-step TD errors delta_t: that is lambda = 0; sum them backwards with weight "
                 "(gamma lambda)^l", td),
                ("sums forwards in time: A_t collects the TD errors *after* t, so loop t = L-1 down to 0",
                 reversed_sum),
            ]
            mistake = _first_match(got_a, [(k, v) for k, v in variants if v is not None], ATOL_VALUE, RTOL_VALUE)
            _fail(name, mistake or "the advantages differ from GAE's backward recursion",
                  f"case: {case}: expected {_fmt(want_a)}, got {_fmt(got_a)}")
        if not _close(got_r, want_r, ATOL_VALUE, RTOL_VALUE):
            if _close(got_r, want_a, ATOL_VALUE, RTOL_VALUE):
                _fail(name, "the returns equal the advantages: returns = advantages + values (the value model's "
                            "target)", f"case: {case}")
            if _close(got_r * m, want_r, ATOL_VALUE, RTOL_VALUE):
                _fail(name, "the returns are not 0 on padding: multiply by the mask", f"case: {case}")
            _fail(name, "the returns differ from advantages + values",
                  f"case: {case}: expected {_fmt(want_r)}, got {_fmt(got_r)}")
    print(f"gae passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |expected|)")


# ----------------------------------------------------------------------------------------------------------------
# advantage normalisation

def _whiten64(x, mask, unbiased=True, per_row=False, centre=True, scale=True, use_mask=True, zero_padding=True):
    x, m = x.double(), mask.double()
    if not use_mask:
        m = torch.ones_like(m)
    dims = dict(dim=-1, keepdim=True) if per_row else {}
    n = m.sum(**dims)
    mean = (x * m).sum(**dims) / n
    var = ((x - mean) ** 2 * m).sum(**dims) / (n - 1 if unbiased else n)
    out = x
    if centre:
        out = out - mean
    if scale:
        out = out / torch.sqrt(var + 1e-8)
    return out * mask.double() if zero_padding else out


def check_normalise_advantages(normalise: Callable, hidden: bool = False) -> None:
    """Check ``normalise_advantages(advantages, mask) -> [B, L]``: subtract the mean and divide by the standard
    deviation, both over the real tokens of the *whole batch*, and 0 on padding. The standard deviation may be the
    unbiased (n - 1) or the plain (n) one; a small eps under the root is fine. Within 1e-4 + 1e-5 * |expected|.

    Known mistakes it names: advantages not normalised at all, padding counted in the mean and spread, the mean
    not removed, not divided by the spread, normalised per response instead of per batch, padding not zeroed.
    """
    name = "normalise_advantages"
    cases = [([5, 3, 1, 4], 3.0, 10), ([6, 2, 5], 0.5, 11)] + ([([2, 7, 7, 3, 1], 4.0, 12)] if hidden else [])
    for lengths, scale, seed in cases:
        adv, _, mask = _rows(lengths, seed, scale)
        adv = (adv + 2.0 * mask)  # a mean far from 0, and a spread far from 1
        case = f"advantages of {lengths} real tokens per row, spread about {scale} (padding holds {GARBAGE})"
        args = (adv.clone(), mask.clone())
        got = _tensor_result(_call(normalise, name, *args), name, adv.shape, case)
        _inputs_unchanged(name, (adv, mask), args, case)
        if any(_close(got, _whiten64(adv, mask, unbiased=u), 1e-4, 1e-5) for u in (True, False)):
            continue
        variants = [("returns the advantages unchanged: advantages not normalised. Divide by their spread (and "
                     "remove the mean), so that the step size does not depend on the reward's scale", adv * mask)]
        for u in (True, False):
            variants += [
                ("counts the padding in the mean and spread: use only the entries where mask is 1",
                 _whiten64(adv, mask, u, use_mask=False)),
                ("does not remove the mean: half the tokens should be pushed up and half down",
                 _whiten64(adv, mask, u, centre=False)),
                ("does not divide by the standard deviation: the scale of the advantages then sets the step size",
                 _whiten64(adv, mask, u, scale=False)),
                ("normalises each response on its own: use the mean and spread of the whole batch (a one-token "
                 "response has no spread, and a response that is better than the rest must stay better)",
                 _whiten64(adv, mask, u, per_row=True)),
            ]
            variants.append(("does not zero the padding: multiply the result by the mask",
                             _whiten64(adv, mask, u, zero_padding=False)))
        mistake = _first_match(got, variants, 1e-4, 1e-5, want=_whiten64(adv, mask))
        _fail(name, mistake or "the values differ from (A - mean) / std over the batch's real tokens",
              f"case: {case}: expected {_fmt(_whiten64(adv, mask))}, got {_fmt(got)}")
    print(f"normalise_advantages passed {len(cases)} cases (tolerance 1e-4 + 1e-5 * |expected|)")


# ----------------------------------------------------------------------------------------------------------------
# the clipped policy loss

def _ppo_case(seed: int, eps: float):
    """Log-probs whose ratios fall below, inside and above [1 - eps, 1 + eps], advantages of both signs."""
    gen = torch.Generator().manual_seed(seed)
    ratios = torch.tensor([[0.5, 0.85, 1.0, 1.1, 1.6], [0.6, 1.05, 1.5, 0.95, 1.3], [1.4, 0.7, 2.0, 1.0, 0.9]])
    old = -3 * torch.rand(3, 5, generator=gen) - 0.1
    logprobs = old + torch.log(ratios)
    adv = torch.tensor([[1.0, -1.0, 0.5, -2.0, 1.5], [-1.5, 2.0, -0.7, 1.0, -1.0], [-1.0, 1.2, 0.8, -0.4, 2.0]])
    mask = torch.tensor([[1.0] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    logprobs = logprobs.masked_fill(mask == 0, -GARBAGE)
    old = old.masked_fill(mask == 0, -2 * GARBAGE)
    adv = adv.masked_fill(mask == 0, GARBAGE) + 0.01 * torch.randn(3, 5, generator=gen)
    return logprobs, old, adv, mask


def _ppo_loss64(lp, old, adv, mask, eps, kind="right"):
    """Value of the loss (float64) for the right formula and the variants the check names."""
    lp, old, adv, m = lp.double(), old.double(), adv.double(), mask.double()
    ratio = torch.exp(lp - old)
    unclipped, clipped = -adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)
    if kind == "padding":
        return torch.maximum(unclipped, clipped).mean()
    per = {"right": torch.maximum(unclipped, clipped), "swapped": torch.minimum(unclipped, clipped),
           "no_clip": unclipped, "clip_only": clipped,
           "clip_loss": -torch.minimum(adv * ratio, (adv * ratio).clamp(1 - eps, 1 + eps)),
           "sign": -torch.maximum(unclipped, clipped),
           "no_exp": torch.maximum(-adv * (lp - old), -adv * (lp - old).clamp(1 - eps, 1 + eps)),
           "per_sequence": torch.maximum(unclipped, clipped)}[kind]
    if kind == "per_sequence":
        return ((per * m).sum(-1) / m.sum(-1)).mean()
    return (per * m).sum() / m.sum()


def check_clipped_policy_loss(loss_fn: Callable, hidden: bool = False) -> None:
    """Check ``clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range) -> loss`` (a scalar; a
    tuple whose first element is the loss is accepted): the mean over real tokens of
    max(-A r, -A clip(r, 1 - eps, 1 + eps)) with r = exp(logprobs - old_logprobs). The value must match within
    ``ATOL_VALUE``, and so must its gradient with respect to ``logprobs``: -A r / n inside the clip range or when
    the ratio moved the wrong way, 0 where the clip holds.

    Known mistakes it names: min and max swapped, clipping the loss (or the product) instead of the ratio, no
    clipping, clipped on both sides (no max), the sign flipped, the log-ratio used as the ratio, padding counted,
    a per-sequence mean instead of the mean over the batch's tokens, and a right value with the wrong gradient
    outside the clip range.
    """
    name = "clipped_policy_loss"
    settings = [(0.2, 20), (0.3, 21)] + ([(0.1, 22)] if hidden else [])
    for eps, seed in settings:
        lp, old, adv, mask = _ppo_case(seed, eps)
        case = f"ratios {_fmt(torch.exp(lp - old)[mask.bool()])}, clip range {eps}, padded rows"
        lp_in = lp.clone().requires_grad_(True)
        args = (lp_in, old.clone(), adv.clone(), mask.clone())
        out = _first(_call(loss_fn, name, *args, eps), name, "the loss", case)
        if type(out) is not torch.Tensor or out.dim() != 0:
            _fail(name, "should return the loss as a scalar tensor (the mean over real tokens)", f"case: {case}")
        want = _ppo_loss64(lp, old, adv, mask, eps)
        if not _close(out.detach().double(), want, ATOL_VALUE, RTOL_VALUE):
            variants = [
                ("min and max are swapped: the loss takes the max of -A r and -A clip(r) (the min of the "
                 "objectives), the pessimistic choice; with the min the clip never stops anything",
                 _ppo_loss64(lp, old, adv, mask, eps, "swapped")),
                ("clips the loss (A r) instead of the ratio: clip r to [1 - eps, 1 + eps], then multiply by A",
                 _ppo_loss64(lp, old, adv, mask, eps, "clip_loss")),
                ("does not clip at all: that is the plain policy-gradient surrogate -A r",
                 _ppo_loss64(lp, old, adv, mask, eps, "no_clip")),
                ("uses only the clipped term: without the max, a ratio that moved the wrong way is clipped too and "
                 "never corrected", _ppo_loss64(lp, old, adv, mask, eps, "clip_only")),
                ("has the sign flipped: the loss is the negative of the objective (minimise -A r)",
                 _ppo_loss64(lp, old, adv, mask, eps, "sign")),
                ("uses the log-ratio as the ratio: r = exp(logprobs - old_logprobs)",
                 _ppo_loss64(lp, old, adv, mask, eps, "no_exp")),
                ("counts the padding: average over the entries where mask is 1",
                 _ppo_loss64(lp, old, adv, mask, eps, "padding")),
                ("takes a per-sequence mean (each response's tokens averaged, then the responses): a token of a "
                 "short response then weighs more than one of a long response. The course averages over every real "
                 "token of the batch at once: (loss * mask).sum() / mask.sum()",
                 _ppo_loss64(lp, old, adv, mask, eps, "per_sequence")),
            ]
            got = out.detach().double().reshape(1)
            mistake = _first_match(got, [(k, v.reshape(1)) for k, v in variants], ATOL_VALUE, RTOL_VALUE)
            _fail(name, mistake or "the loss differs from the mean of max(-A r, -A clip(r, 1-eps, 1+eps))",
                  f"case: {case}: expected {_fmt(want)}, got {_fmt(out)}")
        if not out.requires_grad:
            _fail(name, "the loss carries no gradient: compute it from logprobs without .detach() or torch.no_grad()",
                  f"case: {case}")
        (grad,) = torch.autograd.grad(out, lp_in)
        ratio = torch.exp(lp - old).double()
        a, m = adv.double(), mask.double()
        held = ((a > 0) & (ratio > 1 + eps)) | ((a < 0) & (ratio < 1 - eps))
        want_grad = torch.where(held, torch.zeros_like(a), -a * ratio) * m / m.sum()
        if not _close(grad.double(), want_grad, 1e-5, 1e-4):
            wrong = ((grad.double() - want_grad).abs() > 1e-5) & mask.bool()
            where = "outside" if bool((wrong & ((ratio > 1 + eps) | (ratio < 1 - eps))).any()) else "inside"
            _fail(name, f"the value is right but the gradient is wrong {where} the clip range: a token whose ratio "
                        f"moved past the clip in the direction its advantage favours gets 0 gradient, every other "
                        f"token -A r / n (clip the ratio with torch.clamp and take torch.maximum; do not detach or "
                        f"replace values by hand)",
                  f"case: {case}: expected gradient {_fmt(want_grad)}, got {_fmt(grad)}")
    print(f"clipped_policy_loss passed {len(settings)} cases, value and gradient (tolerance {ATOL_VALUE})")


# ----------------------------------------------------------------------------------------------------------------
# the KL-penalised per-token reward

def _rewards64(lp, ref, scores, mask, beta, kind="right"):
    lp, ref, s, m = lp.double(), ref.double(), scores.double(), mask.double()
    B, L = m.shape
    last = (m * torch.arange(1, L + 1, dtype=m.dtype)).argmax(-1)
    kl = (lp - ref) * m
    sign = -1.0 if kind != "kl_sign" else 1.0
    out = sign * (1.0 if kind != "no_beta" else 1.0 / beta) * beta * kl
    if kind == "kl_padding":
        out = -beta * (lp - ref)
    if kind == "beta_on_score":
        s = beta * s
    if kind == "last_column":
        out[:, -1] += s
    elif kind == "every_token":
        out = out + s[:, None] * m
    elif kind == "first_token":
        out[:, 0] += s
    else:
        out[torch.arange(B), last] += s
    return out


def check_kl_penalised_rewards(rewards_fn: Callable, hidden: bool = False) -> None:
    """Check ``kl_penalised_rewards(logprobs, ref_logprobs, scores, mask, beta) -> rewards [B, L]`` (a tuple whose
    first element is the rewards is accepted): r_t = -beta (logprobs_t - ref_logprobs_t) on every real token, plus
    the score on the last real token (the ``<eos>``), 0 on padding. Within ``ATOL_VALUE`` + ``RTOL_VALUE`` *
    |expected|.

    Known mistakes it names: the KL sign flipped, the score read into the last column (padding) instead of the
    ``<eos>``, the score on every token or on the first, beta applied to the score, beta missing, a KL penalty
    on padding.
    """
    name = "kl_penalised_rewards"
    cases = [([5, 3, 1, 4], 0.1, 30), ([2, 6, 6], 0.5, 31)] + ([([4, 1, 7, 3], 0.05, 32)] if hidden else [])
    for lengths, beta, seed in cases:
        lp, ref, mask = _rows(lengths, seed)
        lp, ref = -lp.abs() - 0.1, -ref.abs() - 0.1          # log-probs are negative (padding: -GARBAGE - 0.1)
        scores = 2 * torch.randn(len(lengths), generator=torch.Generator().manual_seed(seed)) + 1
        case = f"responses of {lengths} tokens (the last one is <eos>), beta {beta}, scores {_fmt(scores)}"
        args = (lp.clone(), ref.clone(), scores.clone(), mask.clone())
        out = _first(_call(rewards_fn, name, *args, beta), name, "the rewards", case)
        _inputs_unchanged(name, (lp, ref, scores, mask), args, case)
        got = _tensor_result(out, name, lp.shape, case)
        want = _rewards64(lp, ref, scores, mask, beta)
        if _close(got, want, ATOL_VALUE, RTOL_VALUE):
            continue
        variants = [
            ("the KL sign is flipped: the penalty is -beta * (log pi - log pi_ref), so tokens the policy likes more "
             "than the reference does cost reward", _rewards64(lp, ref, scores, mask, beta, "kl_sign")),
            ("the score is read at the wrong token: it goes on each response's last *real* token (its <eos>), not "
             "into the last column, which is padding for shorter responses",
             _rewards64(lp, ref, scores, mask, beta, "last_column")),
            ("adds the score to every token: it is paid once, at the end of the episode",
             _rewards64(lp, ref, scores, mask, beta, "every_token")),
            ("puts the score on the first token: it is paid at the end of the episode (the <eos>)",
             _rewards64(lp, ref, scores, mask, beta, "first_token")),
            ("multiplies the score by beta: beta weighs the KL penalty only",
             _rewards64(lp, ref, scores, mask, beta, "beta_on_score")),
            ("beta is missing from the KL penalty", _rewards64(lp, ref, scores, mask, beta, "no_beta")),
            ("puts a KL penalty on padding: multiply the log-ratio by the mask",
             _rewards64(lp, ref, scores, mask, beta, "kl_padding")),
        ]
        mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE)
        _fail(name, mistake or "the rewards differ from -beta * KL per token plus the score at <eos>",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"kl_penalised_rewards passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |expected|)")
