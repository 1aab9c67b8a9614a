"""Lesson 03's checks on the RLHF loop: response log-probs for PPO (temperature, dropout), reading a reward-hacking
history, and the conceptual questions on RLHF, the KL coefficient and the clip range. The checks of PPO's pure pieces
are in :mod:`.ppo`. Tests: tests/test_checks_ppo.py.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import QUESTIONS, Question, _call, _close, _fail, _first, _first_match, _fmt, _tensor_result, check_choice

# ----------------------------------------------------------------------------------------------------------------
# response log-probs: temperature and dropout

def _logprob_setup(seed: int, dropout: float = 0.3):
    """A tiny model with dropout, in train mode (as it comes out of training code), and a rollout-layout batch."""
    import dataclasses

    from ...checkpoint import default_config
    from ...model import LanguageModel
    torch.manual_seed(seed)
    model = LanguageModel(dataclasses.replace(default_config(), n_layer=1, n_embd=32, n_head=2, dropout=dropout))
    gen = torch.Generator().manual_seed(seed)
    P, L, B = 4, 5, 3
    ids = torch.randint(4, model.cfg.vocab_size, (B, P + L), generator=gen)
    attn = torch.ones(B, P + L, dtype=torch.long)
    attn[0, :1] = 0            # left-padded prompt
    attn[2, P + 3:] = 0        # right-padded response
    ids = ids.masked_fill(attn == 0, model.cfg.pad_id)
    return model.train(), ids, attn, P


def _logprobs64(model, ids, attn, P, temperature, shift=True):
    was = model.training
    model.eval()
    with torch.no_grad():
        logits = model(ids, attn).double()
    model.train(was)
    logits = (logits[:, P - 1:-1] if shift else logits[:, P:]) / temperature
    return torch.log_softmax(logits, -1).gather(2, ids[:, P:, None]).squeeze(2)


def check_response_logprobs(logprobs_fn: Callable, hidden: bool = False) -> None:
    """Check ``response_logprobs(model, input_ids, attention_mask, context, temperature) -> [B, L]``: the log-prob
    of each response token (columns ``context`` onwards) under ``model`` with its logits divided by
    ``temperature``, computed with dropout off, so that the PPO ratio is exactly 1 before the first update. The
    model arrives in train mode with dropout 0.3. Within 1e-4 on real tokens (padding is not compared).

    Known mistakes it names: dropout left on (two calls differ: the ratio is not 1 at the start), the temperature
    missing when scoring (or multiplied), no shift to the next token, raw logits instead of log-softmax.
    """
    name = "response_logprobs"
    settings = [(0.7, 40), (1.5, 41)] + ([(0.5, 42)] if hidden else [])
    for temperature, seed in settings:
        model, ids, attn, P = _logprob_setup(seed)
        case = f"a tiny model with dropout 0.3 in train mode, prompts of {P} columns, temperature {temperature}"
        out = _first(_call(logprobs_fn, name, model, ids.clone(), attn.clone(), P, temperature), name,
                     "the log-probs", case)
        got = _tensor_result(out, name, torch.Size([ids.shape[0], ids.shape[1] - P]), case)
        again = _first(_call(logprobs_fn, name, model.train(), ids.clone(), attn.clone(), P, temperature), name,
                       "the log-probs", case)
        real = attn[:, P:].bool()
        want = _logprobs64(model, ids, attn, P, temperature)
        if not torch.allclose(got[real], again.detach().double()[real], atol=1e-6):
            _fail(name, "dropout is left on: two calls on the same batch give different log-probs, so the PPO ratio "
                        "pi / pi_old is not 1 at the start. Call model.eval() (train_ppo keeps the policy in eval "
                        "mode throughout)", f"case: {case}")
        if _close(got[real], want[real], 1e-4):
            continue
        raw = _logprobs64(model, ids, attn, P, 1.0)
        with torch.no_grad():
            logits = model.eval()(ids, attn).double()[:, P - 1:-1] / temperature
        variants = [
            ("the temperature is missing when scoring: the sampler divided the logits by it, so the log-probs "
             "you train on must too (otherwise the ratio is not 1 and the KL is wrong)", raw[real]),
            ("multiplies the logits by the temperature: divide them by it",
             _logprobs64(model, ids, attn, P, 1.0 / temperature)[real]),
            ("does not shift: the logits at column t predict the token at column t + 1, so response tokens start "
             "at logits[:, context - 1]", _logprobs64(model, ids, attn, P, temperature, shift=False)[real]),
            ("uses the raw logits: take log_softmax over the vocabulary",
             logits.gather(2, ids[:, P:, None]).squeeze(2)[real]),
        ]
        mistake = _first_match(got[real], variants, 1e-4)
        _fail(name, mistake or "the log-probs differ from log_softmax(logits / temperature) at the response tokens",
              f"case: {case}: expected {_fmt(want[real])}, got {_fmt(got[real])}")
    print(f"response_logprobs passed {len(settings)} cases (tolerance 1e-4)")


# ----------------------------------------------------------------------------------------------------------------
# reading a reward-hacking history

def _history(gold: list[float], proxy: list[float], kl: list[float], with_eval_row: bool = True) -> list[dict]:
    rows = [{"iteration": 0, "val/gold_reward": -0.4, "val/kl": 0.0}] if with_eval_row else []
    for i, (g, p, k) in enumerate(zip(gold, proxy, kl), start=1):
        rows.append({"iteration": i, "objective/gold": g, "objective/scores": p, "objective/kl": k})
    return rows


def check_gold_peak(gold_peak: Callable, hidden: bool = False) -> None:
    """Check ``gold_peak(history) -> (iteration, kl)``: among the rows of a :func:`helpers.rlhf.train_ppo` history
    that hold ``objective/gold`` (rows of validation checks alone do not), the iteration where the gold reward of
    the batch is highest, and the batch KL (``objective/kl``) of that row. Exact for the iteration, 1e-9 for KL.

    Known mistakes it names: the proxy's (reward model's) peak instead of gold's, the last iteration, the position
    in the list instead of the iteration number, the KL of another row, the lowest gold instead of the highest.
    """
    name = "gold_peak"
    cases = [("proxy peaks at iteration 5, gold at iteration 4",
              _history([-0.3, 0.0, 0.3, 0.45, 0.2, -0.1], [-0.5, 0.1, 0.6, 0.9, 1.4, 1.2],
                       [0.0, 0.4, 1.1, 1.9, 3.2, 4.8])),
             ("gold peaks at iteration 2, the lowest gold is the first",
              _history([-0.6, 0.5, 0.1, -0.2, 0.0], [0.0, 0.3, 0.5, 0.7, 0.9], [0.0, 0.8, 1.6, 2.5, 2.9]))]
    if hidden:
        cases.append(("no evaluation row, gold peaks at iteration 3",
                      _history([0.1, 0.2, 0.4, 0.3], [0.0, 0.5, 0.6, 0.8], [0.1, 0.5, 1.5, 2.0], False)))
    for case, history in cases:
        out = _call(gold_peak, name, [dict(r) for r in history])
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            _fail(name, f"returns {out!r}; expected a tuple (iteration, kl)", f"case: {case}")
        iteration, kl = out
        rows = [r for r in history if "objective/gold" in r]
        best = max(rows, key=lambda r: r["objective/gold"])
        if iteration == best["iteration"] and isinstance(kl, (int, float)) and abs(kl - best["objective/kl"]) < 1e-9:
            continue
        if iteration == best["iteration"]:
            _fail(name, "the iteration is right but the KL is not the one of that row (objective/kl)",
                  f"case: {case}: expected {best['objective/kl']}, got {kl!r}")
        by_proxy = max(rows, key=lambda r: r["objective/scores"])
        worst = min(rows, key=lambda r: r["objective/gold"])
        if iteration == by_proxy["iteration"] and by_proxy is not best:
            _fail(name, "finds the peak of the proxy (objective/scores, the reward model's score): over-optimisation "
                        "is where the *gold* reward peaks while the proxy keeps rising", f"case: {case}")
        if iteration == worst["iteration"]:
            _fail(name, "finds the lowest gold reward: use max, not min", f"case: {case}")
        if iteration == history.index(best) or iteration == rows.index(best):
            _fail(name, "returns the position in the list, not the row's 'iteration'", f"case: {case}")
        if iteration == rows[-1]["iteration"]:
            _fail(name, "returns the last iteration: find the row where objective/gold is highest",
                  f"case: {case}")
        _fail(name, "wrong iteration", f"case: {case}: expected {best['iteration']}, got {iteration!r}")
    print(f"gold_peak passed {len(cases)} cases (exact)")


# ----------------------------------------------------------------------------------------------------------------
# conceptual questions (keys distinct from lesson 01's beta_too_low / beta_too_high)

QUESTIONS.update({
    "ppo_models_trained": Question(
        "which of RLHF's four models PPO trains",
        answer="B",
        why_not=({
            "A": "the reference must stay frozen: it is what the KL penalty measures the policy against; a reference "
                 "that moves with the policy makes the penalty 0 and removes the anchor",
            "C": "the reward model stays frozen during PPO: a reward model trained on the policy's own samples with "
                 "no new labels would learn nothing true, and the policy could push it wherever it liked",
            "D": "the value model is trained too: it must predict the returns of the current policy, which change "
                 "as the policy does",
        },),
    ),
    "ppo_kl_coefficient_low": Question(
        "the KL coefficient too low in a PPO run",
        answer="C",
        why_not=({
            "A": "a larger clip range lets each update move further: it adds to the drift instead of stopping it",
            "B": "more iterations follow the proxy further: the gold reward is already falling",
            "D": "a reward model cannot tell you it is wrong: its score is the very curve that keeps rising",
        },),
    ),
    "ppo_kl_coefficient_high": Question(
        "the KL coefficient too high in a PPO run",
        answer="A",
        why_not=({
            "B": "the clip limits one update; here every update is small because the penalty pays the policy to "
                 "stay at the reference, and a smaller clip would slow it further",
            "C": "the reward model is not the problem: its score would rise if the policy were allowed to move",
            "D": "a value model error makes advantages noisy, but it does not pin the KL near 0 while the score "
                 "stays flat",
        },),
    ),
    "ppo_clip_range": Question(
        "reading runs with two clip ranges",
        answer="D",
        why_not=({
            "A": "the clip fraction of the large-clip run is 0 because nothing is ever clipped, not because the "
                 "policy stayed close: its approx-KL per update is many times the other run's",
            "B": "both runs share everything but the clip range, the learning rate included",
            "C": "its gold reward is higher after three batches of the gold reward itself, but not everything is "
                 "better: its approx-KL per update grows batch after batch, far past the healthy range, and nothing "
                 "bounds the next step; the clip is what keeps each batch's move small",
        },),
    ),
})


def check_ppo_models_trained(answer) -> None:
    """Exercise: which models PPO updates (one letter)."""
    check_choice("ppo_models_trained", answer)


def check_ppo_kl_coefficient_low(answer) -> None:
    """Exercise: diagnosing a KL coefficient that is too low from a run's curves (one letter)."""
    check_choice("ppo_kl_coefficient_low", answer)


def check_ppo_kl_coefficient_high(answer) -> None:
    """Exercise: diagnosing a KL coefficient that is too high from a run's curves (one letter)."""
    check_choice("ppo_kl_coefficient_high", answer)


def check_ppo_clip_range(answer) -> None:
    """Exercise: diagnosing a clip range that is too large from two short runs (one letter)."""
    check_choice("ppo_clip_range", answer)
