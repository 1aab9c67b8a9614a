"""Lesson 02's checks: preference batches with masks, the score read at <eos>, the Bradley-Terry loss and its
gradient, length bias; the conceptual questions on Bradley-Terry, pairs vs ratings and over-optimisation.
Tests: tests/test_checks_reward.py.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import (ATOL_PROBS, ATOL_VALUE, QUESTIONS, Question, RTOL_VALUE, _call, _close, _fail, _first_match,
                   _fmt, _inputs_unchanged, _tensor_result, check_choice)

# ----------------------------------------------------------------------------------------------------------------
# lesson 02: preference batches, the score at <eos>, the Bradley-Terry loss and its gradient, length bias

def _ragged_cases(hidden: bool) -> list[tuple[str, list[list[int]], int]]:
    cases = [("three sequences of lengths 3, 5, 2, pad_id 0", [[1, 5, 3], [1, 6, 7, 8, 3], [1, 3]], 0),
             ("pad_id 9 (not 0), lengths 2, 4", [[1, 3], [1, 4, 4, 3]], 9),
             ("all the same length: no padding at all", [[1, 2, 3], [4, 5, 6]], 0)]
    if hidden:
        gen = torch.Generator().manual_seed(2)
        for k in range(3):
            lengths = torch.randint(1, 9, (5,), generator=gen).tolist()
            seqs = [torch.randint(1, 50, (n,), generator=gen).tolist() for n in lengths]
            cases.append((f"random {k}: lengths {lengths}, pad_id 0", seqs, 0))
    return cases


def _right_pad(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        where = slice(T - len(s), T) if left else slice(0, len(s))
        ids[i, where] = torch.tensor(s, dtype=torch.long)
        mask[i, where] = 1
    return ids, mask


def check_pad_batch(pad_batch: Callable, hidden: bool = False) -> None:
    """Check ``pad_batch(sequences, pad_id) -> (input_ids, attention_mask)``: right padding to the longest sequence,
    both [B, T] integer tensors, the mask 1 on real tokens and 0 on padding.

    Known mistakes it names: left padding, an inverted mask, padding with 0 whatever ``pad_id`` says, padding to
    a fixed length, float or bool tensors where integers belong, changing the input lists.
    """
    name = "pad_batch"
    cases = _ragged_cases(hidden)
    for case, seqs, pad_id in cases:
        passed = [list(s) for s in seqs]
        out = _call(pad_batch, name, passed, pad_id)
        if passed != seqs:
            _fail(name, "changes the lists it is given: build new tensors instead", f"case: {case}")
        if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(type(t) is torch.Tensor for t in out):
            _fail(name, f"returns {type(out).__name__}; expected a tuple of two tensors (input_ids, attention_mask)",
                  f"case: {case}")
        ids, mask = out
        want_ids, want_mask = _right_pad(seqs, pad_id)
        if ids.shape != want_ids.shape or mask.shape != want_mask.shape:
            _fail(name, f"returns shapes {list(ids.shape)} and {list(mask.shape)}, expected {list(want_ids.shape)} for "
                        f"both: B sequences, padded to the longest one (not to a fixed length)", f"case: {case}")
        if ids.dtype != torch.long or mask.dtype not in (torch.long, torch.int64):
            _fail(name, f"returns dtypes {ids.dtype} and {mask.dtype}; token ids and the mask are integers: use "
                        f"dtype=torch.long", f"case: {case}")
        if torch.equal(ids, want_ids) and torch.equal(mask, want_mask):
            continue
        left_ids, left_mask = _right_pad(seqs, pad_id, left=True)
        if torch.equal(ids, left_ids) and not torch.equal(ids, want_ids):
            _fail(name, "pads on the left: the course pads on the right, so that a row's last real token sits at "
                        "attention_mask.sum() - 1", f"case: {case}")
        if torch.equal(ids, want_ids) and torch.equal(mask, 1 - want_mask):
            _fail(name, "the mask is inverted: 1 marks a real token, 0 a padding position", f"case: {case}")
        if pad_id != 0 and torch.equal(ids, _right_pad(seqs, 0)[0]):
            _fail(name, f"pads with 0, but pad_id is {pad_id}: use the pad_id you are given", f"case: {case}")
        _fail(name, "the ids or the mask differ from right padding",
              f"case: {case}\nexpected ids {want_ids.tolist()} mask {want_mask.tolist()}\n"
              f"got      ids {ids.tolist()} mask {mask.tolist()}")
    print(f"pad_batch passed {len(cases)} cases (exact match)")


def check_score_at_last_token(score_at_last_token: Callable, hidden: bool = False) -> None:
    """Check ``score_at_last_token(values, attention_mask) -> [B]``: each row's value at its last real token
    (the ``<eos>`` of a right-padded row), exactly.

    Known mistakes it names: reading the last position (padding for every shorter row), one past the last real
    token, the first token, the mean over real tokens.
    """
    name = "score_at_last_token"
    gen = torch.Generator().manual_seed(3)
    # (lengths, T): the first case pads to a fixed length, so every row ends in padding and an index one past the
    # last real token is still inside the row (it reads a padding value instead of crashing)
    lengths = [([4, 6, 2], 8), ([4, 7, 2], 7), ([5, 5], 5), ([1, 6, 3, 6], 6)] + ([([3, 8, 8, 1, 5], 8)] if hidden
                                                                                else [])
    for lens, T in lengths:
        values = torch.randn(len(lens), T, generator=gen)
        mask = torch.tensor([[1] * n + [0] * (T - n) for n in lens])
        case = f"rows of lengths {lens} (right padded to {T}{': every row ends in padding' if T > max(lens) else ''})"
        args = (values.clone(), mask.clone())
        got = _tensor_result(_call(score_at_last_token, name, *args), name, torch.Size([len(lens)]), case)
        _inputs_unchanged(name, (values, mask), args, case)
        last = mask.sum(-1) - 1
        want = values.gather(1, last[:, None]).squeeze(1).double()
        if _close(got, want, 1e-6):
            continue
        beyond = values.gather(1, (last + 1).clamp(max=T - 1)[:, None]).squeeze(1).double()
        variants = [
            ("reads the last position, values[:, -1]: for every row shorter than the longest that is a padding "
             "token; read at attention_mask.sum(-1) - 1", values[:, -1].double()),
            ("reads one position past the last real token (a padding token): the index is attention_mask.sum(-1) "
             "- 1", beyond),
            ("reads the first token (<bos>): the score belongs at the last real token, which has seen the whole "
             "response", values[:, 0].double()),
            ("averages over the real tokens: a reward model reads one position, the last real token",
             ((values * mask).sum(-1) / mask.sum(-1)).double()),
        ]
        mistake = _first_match(got, variants, 1e-6)
        _fail(name, mistake or "the values differ from the value at each row's last real token",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"score_at_last_token passed {len(lengths)} cases (tolerance 1e-6)")


def _margin_cases(hidden: bool) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    cases = [("ordinary rewards", torch.tensor([1.0, 0.2, -0.5, 2.0]), torch.tensor([0.0, 0.4, -1.5, 2.0])),
             ("a confident wrong prediction: margin -200", torch.tensor([-100.0, 3.0]), torch.tensor([100.0, 1.0])),
             ("a confident right prediction: margin +200", torch.tensor([100.0]), torch.tensor([-100.0])),
             ("margins -200 and -800: beyond where even float64's exp(-m) overflows (m below about -709)",
              torch.tensor([-100.0, -400.0]), torch.tensor([100.0, 400.0]))]
    if hidden:
        gen = torch.Generator().manual_seed(4)
        cases.append(("random rewards", 3 * torch.randn(16, generator=gen), 3 * torch.randn(16, generator=gen)))
    return cases


def _capped_log(got: torch.Tensor, m: torch.Tensor) -> torch.Tensor | None:
    """-log(sigmoid(m) + eps), or -log(sigmoid(m).clamp(min=eps)), with the eps the learner's value at the most
    negative margin implies; None when no margin is negative enough to show it."""
    k = int(torch.argmin(m))
    if float(m[k]) > -30 or not bool(torch.isfinite(got[k])) or not 0 < float(got[k]) < 40:
        return None
    eps = float(torch.exp(-got[k]) - torch.sigmoid(m[k]))
    if not 0 < eps < 1e-2:
        return None
    return -torch.log(torch.sigmoid(m) + eps)


def check_bradley_terry_loss(bradley_terry_loss: Callable, hidden: bool = False) -> None:
    """Check ``bradley_terry_loss(chosen_rewards, rejected_rewards) -> [B]``: the per-pair loss
    -log sigma(r_chosen - r_rejected), finite for any margin, within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|;
    and a loss that can train: its gradient with respect to both rewards (autograd through the learner's function)
    must match autograd of the reference loss, which is the closed form sigma(m) - 1 for the chosen reward and
    1 - sigma(m) for the rejected one, within ``ATOL_PROBS``.

    Known mistakes it names: chosen and rejected swapped, log(sigmoid(m)) or log(1 + exp(-m)) (infinite once
    exp(-m) overflows: m below about -88 in float32), the same computed in float64 (which only moves the overflow
    to about -709), an epsilon or clamp inside the log (capped at -log(eps)), a missing minus sign, sigmoid
    without the log, a mean over pairs instead of per-pair losses, a loss with no gradient (detached, or computed
    in plain Python) or the wrong gradient.
    """
    name = "bradley_terry_loss"
    F = torch.nn.functional
    cases = _margin_cases(hidden)
    for case, chosen, rejected in cases:
        args = (chosen.clone().requires_grad_(True), rejected.clone().requires_grad_(True))
        out = _call(bradley_terry_loss, name, *args)
        if type(out) is torch.Tensor and out.dim() == 0 and len(chosen) > 1:
            _fail(name, "returns one number: return the loss of every pair ([B]); the training loop takes the mean",
                  f"case: {case}")
        got = _tensor_result(out, name, chosen.shape, case)
        _inputs_unchanged(name, (chosen, rejected), args, case)
        m = (chosen - rejected).double()
        want = -F.logsigmoid(m)
        if not _close(got, want, ATOL_VALUE, RTOL_VALUE):
            if not bool(torch.isfinite(got).all()) and bool(torch.isfinite(want).all()):
                overflow64 = -torch.log(torch.sigmoid(m))  # float64: inf only below about -709
                if _close(got, overflow64, ATOL_VALUE, RTOL_VALUE):
                    _fail(name, "gives inf for a margin of -800 although it was right at -200: computing "
                                "log(sigmoid(m)) or log(1 + exp(-m)) in float64 only moves the overflow, from "
                                "m ≈ -88 (float32) to m ≈ -709 (float64). Use torch.nn.functional.logsigmoid(m) (or "
                                "softplus(-m)), which is exact for every margin in any dtype",
                          f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
                _fail(name, "gives inf or nan for a large negative margin: exp(-m) overflows once m is below about "
                            "-88 in float32, so log(1 + exp(-m)) is log(inf), and sigmoid(m) = 1 / (1 + exp(-m)) "
                            "rounds to 0, so log(sigmoid(m)) is log(0). Use torch.nn.functional.logsigmoid(m) (or "
                            "softplus(-m)), which never forms exp(-m) for a negative m",
                      f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
            capped = _capped_log(got, m)
            variants = [
                ("chosen and rejected are swapped: the loss must be small when r_chosen > r_rejected",
                 -F.logsigmoid(-m)),
                ("the minus sign is missing: the loss is -log sigma(margin), which is >= 0",
                 F.logsigmoid(m)),
                ("takes sigmoid without the log: the loss is the negative log-likelihood -log sigma(margin)",
                 -torch.sigmoid(m)),
                ("takes 1 - sigmoid(margin): the loss is the negative log-likelihood -log sigma(margin)",
                 1 - torch.sigmoid(m)),
            ] + ([("adds an epsilon inside the log (or clamps sigmoid(m) from below): -log(sigmoid(m) + eps) stops "
                   "at -log(eps) (18.4 for eps = 1e-8), so the pairs the model gets most wrong have a capped loss "
                   "and a gradient near 0: they teach it nothing. Use torch.nn.functional.logsigmoid(m), which is "
                   "finite without any epsilon", capped)] if capped is not None else [])
            mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE, want)
            _fail(name, mistake or "the losses differ from -log sigma(r_chosen - r_rejected)",
                  f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
        # a loss that can train: gradient with respect to both rewards, as autograd of the reference gives it
        if not out.requires_grad:
            _fail(name, "the loss carries no gradient, so a reward model trained with it would never learn: it was "
                        "cut off from autograd (.detach(), torch.no_grad(), or plain Python: .item(), .tolist(), "
                        "math.log, torch.tensor(...) of numbers). Compute it with torch operations on the input "
                        "tensors", f"case: {case}")
        grads = torch.autograd.grad(out.sum(), args, allow_unused=True)
        got_grad = [torch.zeros_like(m) if g is None else g.detach().double() for g in grads]
        reference = (chosen.double().requires_grad_(True), rejected.double().requires_grad_(True))
        want_grad = torch.autograd.grad(-F.logsigmoid(reference[0] - reference[1]).sum(), reference)
        m64 = (reference[0] - reference[1]).detach()
        closed = (torch.sigmoid(m64) - 1, 1 - torch.sigmoid(m64))
        if not all(_close(a, b, 1e-12) for a, b in zip(want_grad, closed)):  # cannot happen
            raise RuntimeError("bradley_terry_loss: the closed-form gradient and autograd disagree")
        for which, g, w in zip(("chosen", "rejected"), got_grad, want_grad):
            if not _close(g, w, ATOL_PROBS, 1e-4):
                _fail(name, f"the value is right but the gradient with respect to the {which} rewards is not: "
                            f"autograd of -logsigmoid(m) gives {'sigma(m) - 1' if which == 'chosen' else '1 - sigma(m)'}"
                            f". A loss whose value is patched (a detached correction, .data) trains the wrong way",
                      f"case: {case}: expected {_fmt(w)}, got {_fmt(g)}")
    print(f"bradley_terry_loss passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE}·|expected|; its "
          f"gradient matches autograd's within {ATOL_PROBS})")


def check_bradley_terry_gradient(gradient: Callable, hidden: bool = False) -> None:
    """Check ``gradient(margins) -> [B]``: d/dm of -log sigma(m), which is sigma(m) - 1, within ``ATOL_PROBS``:
    compared with the closed form and with autograd's derivative of the reference loss (the two agree).

    Known mistakes it names: the sign flipped (1 - sigma(m)), the -1 forgotten (sigma(m)), -sigma(m),
    the loss itself instead of its derivative.
    """
    name = "bradley_terry_gradient"
    margins = [torch.tensor([0.0, 1.0, -1.0, 3.0]), torch.tensor([-50.0, 50.0, 0.5])]
    if hidden:
        margins.append(4 * torch.randn(12, generator=torch.Generator().manual_seed(5)))
    for m in margins:
        case = f"margins {_fmt(m)}"
        arg = m.clone()
        got = _tensor_result(_call(gradient, name, arg), name, m.shape, case)
        _inputs_unchanged(name, (m,), (arg,), case)
        s = torch.sigmoid(m.double())
        want = s - 1
        leaf = m.double().requires_grad_(True)
        (autograd,) = torch.autograd.grad(-torch.nn.functional.logsigmoid(leaf).sum(), leaf)
        if not _close(autograd, want, 1e-12):  # cannot happen: the closed form is autograd's derivative
            raise RuntimeError("bradley_terry_gradient's closed form and autograd disagree")
        if _close(got, want, ATOL_PROBS) and _close(got, autograd, ATOL_PROBS):
            continue
        variants = [("the sign is flipped: the loss falls as the margin grows, so its derivative is negative",
                     1 - s),
                    ("the -1 is missing: d/dm [-log sigma(m)] = -(1 - sigma(m)) = sigma(m) - 1", s),
                    ("-sigma(m) is the derivative of -log sigma(-m), not of -log sigma(m): expected sigma(m) - 1", -s),
                    ("returns the loss -log sigma(m), not its derivative", -torch.nn.functional.logsigmoid(m.double()))]
        mistake = _first_match(got, variants, ATOL_PROBS)
        _fail(name, mistake or "differs from sigma(m) - 1 (and from autograd's derivative of -logsigmoid(m))",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"bradley_terry_gradient passed {len(margins)} cases (tolerance {ATOL_PROBS}; the closed form and "
          f"autograd agree)")


def check_length_slope(length_slope: Callable, hidden: bool = False) -> None:
    """Check ``length_slope(scores, lengths) -> float``: the least-squares slope of scores on lengths,
    cov(lengths, scores) / var(lengths), within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: the correlation coefficient, a slope through the origin (no centring), the slope of
    lengths on scores, a tensor instead of a number.
    """
    name = "length_slope"
    gen = torch.Generator().manual_seed(6)
    cases = [("scores = 0.05 * words + 1 exactly", torch.tensor([5.0, 8, 12, 20, 30]), None),
             ("noisy scores, positive slope", torch.tensor([6.0, 9, 11, 14, 22, 25, 31]), None),
             ("no relation: constant scores", torch.tensor([4.0, 10, 16]), None)]
    if hidden:
        cases.append(("random", torch.randint(4, 37, (40,), generator=gen).float(), None))
    for k, (case, lengths, _) in enumerate(cases):
        if k == 0:
            scores = 0.05 * lengths + 1
        elif k == 2:
            scores = torch.full_like(lengths, 0.3)
        else:
            scores = 0.03 * lengths - 0.5 + 0.2 * torch.randn(len(lengths), generator=gen)
        args = (scores.clone(), lengths.clone())
        out = _call(length_slope, name, *args)
        _inputs_unchanged(name, (scores, lengths), args, case)
        if isinstance(out, torch.Tensor):
            if out.numel() != 1:
                _fail(name, f"returns a tensor of shape {list(out.shape)}; expected one number", f"case: {case}")
            out = out.item()
        try:
            got = float(out)
        except (TypeError, ValueError):
            _fail(name, f"returns {_fmt(out)}; expected a number", f"case: {case}")
        x, y = lengths.double(), scores.double()
        xc, yc = x - x.mean(), y - y.mean()
        want = float((xc * yc).sum() / (xc * xc).sum())
        tol = ATOL_VALUE + RTOL_VALUE * abs(want)
        if abs(got - want) <= tol:
            continue
        variants = [("looks like the correlation coefficient: the slope is cov / var(lengths), in score per word",
                     float((xc * yc).sum() / ((xc * xc).sum() * (yc * yc).sum()).sqrt()) if float((yc * yc).sum()) > 0
                     else float("nan")),
                    ("looks like a line through the origin: subtract the means first (centre both variables)",
                     float((x * y).sum() / (x * x).sum())),
                    ("looks like the slope of lengths on scores: regress scores on lengths, cov / var(lengths)",
                     float((xc * yc).sum() / (yc * yc).sum()) if float((yc * yc).sum()) > 0 else float("nan"))]
        for mistake, value in variants:
            if abs(got - value) <= tol:
                _fail(name, mistake, f"case: {case}: expected {want:.6g}, got {got:.6g}")
        _fail(name, "differs from the least-squares slope cov(lengths, scores) / var(lengths)",
              f"case: {case}: expected {want:.6g}, got {got:.6g}")
    print(f"length_slope passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE}·|expected|)")


QUESTIONS.update({
    "scores_shift": Question(
        "what a reward model's score means",
        answer="C",
        why_not=({
            "A": "Bradley-Terry sees only differences r(a) - r(b): adding 5 to every score changes no probability, "
                 "no loss and no gradient, so the model has no reason to be calibrated to zero",
            "B": "a negative score does not mean 'bad': adding a constant to every score gives the same model, so "
                 "the sign of one score carries no information",
            "D": "the loss is unchanged by the shift, so training cannot undo it or be harmed by it",
        },),
    ),
    "pairs_vs_ratings": Question(
        "pairs versus ratings",
        answer="B",
        why_not=({
            "A": "a pair is not cheaper to store or to collect than a rating; the gain is in consistency",
            "C": "a comparison carries at most one bit; a 1-10 rating carries more, but the bits are noisier: each "
                 "person uses the scale differently",
            "D": "ratings can train a reward model too (by regression); pairs are preferred because people agree "
                 "more on comparisons, not because the maths requires them",
        },),
    ),
    "overfitting_curves": Question(
        "reading training and validation curves",
        answer="B",
        why_not=({
            "A": "a falling training loss says only that the model fits the training pairs better; the validation "
                 "loss, which rises, is what measures pairs it has not seen",
            "C": "the training loss falls fast, so the steps are not too small; the model fits noise, which a larger "
                 "learning rate would only make worse",
            "D": "both splits come from the same annotator and the same kind of prompts; a validation loss that falls "
                 "and then rises is the signature of overfitting, not of bad labels",
        },),
    ),
    "over_optimisation": Question(
        "over-optimising a reward model",
        answer="D",
        why_not=({
            "A": "the samples come from the same policy at every N; what changes is how hard the reward model's "
                 "choice pushes into the responses it over-rates",
            "B": "more samples can only help the reward model's choice by its own scores: the proxy reward rises, as "
                 "the plot shows; it is the gold reward that falls",
            "C": "Best-of-N trains nothing; the reward model and the policy are the same at every N",
        },),
    ),
})


def check_scores_shift(answer) -> None:
    """Exercise: what adding a constant to every reward score changes (one letter)."""
    check_choice("scores_shift", answer)


def check_pairs_vs_ratings(answer) -> None:
    """Exercise: why preferences are collected as pairs (one letter)."""
    check_choice("pairs_vs_ratings", answer)


def check_overfitting_curves(answer) -> None:
    """Exercise: what the training and validation curves show (one letter)."""
    check_choice("overfitting_curves", answer)


def check_over_optimisation(answer) -> None:
    """Exercise: why gold reward falls as Best-of-N grows with a biased reward model (one letter)."""
    check_choice("over_optimisation", answer)
