"""Lesson 02's checks: padded batches, preference batches (chosen and rejected paired row by row, with a response
mask), the score read at <eos>, the Bradley-Terry loss and its gradient, a reward-model training loop, length bias;
the conceptual questions on Bradley-Terry, pairs vs ratings and over-optimisation.
Tests: tests/test_checks_reward.py.
"""
from __future__ import annotations

from typing import Callable

import torch

from .base import (ATOL_PROBS, ATOL_VALUE, QUESTIONS, Question, RTOL_VALUE, _call, _close, _fail, _first_match,
                   _fmt, _inputs_unchanged, _tensor_result, _tiny_preference_setup, check_choice)

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


# ----------------------------------------------------------------------------------------------------------------
# exercise: a preference batch, chosen and rejected paired row by row, with attention and response masks

def _pair_cases(hidden: bool) -> list[tuple[str, list[list[int]], list[list[int]], list[list[int]], int]]:
    """(case, prompt_ids, chosen_ids, rejected_ids, pad_id): prompts ``<bos> ... <sep>`` (1 ... 2), responses
    ending in ``<eos>`` (3). The first case has pairs of different lengths in both orders, so that sorting a side
    by length breaks the pairing, and a prompt longer than the others."""
    cases = [("three pairs, pad_id 0", [[1, 5, 6, 2], [1, 7, 2], [1, 8, 9, 10, 2]],
              [[11, 3], [12, 13, 14, 3], [15, 16, 3]], [[17, 18, 19, 3], [20, 3], [21, 3]], 0),
             ("pad_id 9 (not 0), two pairs", [[1, 5, 2], [1, 6, 7, 8, 2]], [[11, 12, 3], [13, 3]],
              [[14, 3], [15, 16, 17, 3]], 9)]
    if hidden:
        gen = torch.Generator().manual_seed(7)
        for k in range(3):
            B = int(torch.randint(2, 6, (1,), generator=gen))
            body = lambda lo, hi: torch.randint(10, 50, (int(torch.randint(lo, hi, (1,), generator=gen)),),
                                                generator=gen).tolist()
            prompts = [[1] + body(1, 6) + [2] for _ in range(B)]
            cases.append((f"random {k}: {B} pairs, pad_id 0", prompts, [body(0, 7) + [3] for _ in range(B)],
                          [body(0, 7) + [3] for _ in range(B)], 0))
    return cases


def _side(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """The course's layout of one side: right-padded ids, attention mask, response mask (``<eos>`` included)."""
    from ...tokenizer import pad_sequences
    b = pad_sequences(prompts, responses, pad_id)
    return b.input_ids, b.attention_mask, b.response_mask


def _trim(side: tuple[torch.Tensor, ...], T: int, pad_id: int) -> tuple[torch.Tensor, ...] | None:
    """A side padded further than its own longest row, cut back to ``T`` columns (None if the extra columns are
    not padding): padding both sides to one common length is as good as the course's own-longest padding."""
    ids, attn, resp = side
    if ids.shape[1] < T:
        return None
    extra = (ids[:, T:] == pad_id).all() and (attn[:, T:] == 0).all() and (resp[:, T:] == 0).all()
    return (ids[:, :T], attn[:, :T], resp[:, :T]) if bool(extra) else None


def check_preference_batch(preference_batch: Callable, hidden: bool = False) -> None:
    """Check ``preference_batch(prompt_ids, chosen_ids, rejected_ids, pad_id) -> (chosen, rejected)``, each a tuple
    ``(input_ids, attention_mask, response_mask)`` of [B, T] integer tensors: row i of both sides is pair i (its
    prompt followed by that side's response), right-padded; ``response_mask`` is 1 on the response tokens and
    ``<eos>``, 0 on the prompt, ``<sep>`` and padding, exactly as ``helpers.tokenizer.collate_preferences``.
    Each side may be padded to its own longest row (as the course does) or both to one common length.

    Known mistakes it names: chosen and rejected swapped, rows reordered (the pairing broken, as sorting by length
    does), the prompt left out, a response mask that covers the prompt, starts at ``<sep>``, leaves out ``<eos>``,
    misses the first response token or covers padding, left padding, an inverted attention mask, padding with 0
    whatever ``pad_id`` says, float or bool tensors, changing the input lists.
    """
    name = "preference_batch"
    cases = _pair_cases(hidden)
    for case, prompts, chosen, rejected, pad_id in cases:
        passed = ([list(s) for s in prompts], [list(s) for s in chosen], [list(s) for s in rejected])
        out = _call(preference_batch, name, *passed, pad_id)
        if passed != (prompts, chosen, rejected):
            _fail(name, "changes the lists it is given: build new tensors instead", f"case: {case}")
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(
                isinstance(s, (tuple, list)) and len(s) == 3 and all(type(t) is torch.Tensor for t in s) for s in out)):
            got = (f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list))
                   else f"{type(out).__name__} {_fmt(out)}")
            _fail(name, f"returns {got}; expected two tuples, (input_ids, attention_mask, response_mask) for the "
                        f"chosen responses and the same for the rejected ones", f"case: {case}")
        want = {"chosen": _side(prompts, chosen, pad_id), "rejected": _side(prompts, rejected, pad_id)}
        got = {"chosen": tuple(out[0]), "rejected": tuple(out[1])}
        B = len(prompts)
        for which in ("chosen", "rejected"):
            g = got[which]
            if any(t.dim() != 2 or t.shape[0] != B for t in g) or len({tuple(t.shape) for t in g}) != 1:
                _fail(name, f"the {which} tensors have shapes {[list(t.shape) for t in g]}; expected three [B, T] "
                            f"tensors with B = {B} pairs (one row per pair, chosen and rejected in separate tensors)",
                      f"case: {case}")
            if any(t.dtype != torch.long for t in g):
                _fail(name, f"the {which} tensors have dtypes {[str(t.dtype) for t in g]}: token ids and masks are "
                            f"integers, use dtype=torch.long", f"case: {case}")
        trimmed = {w: _trim(got[w], want[w][0].shape[1], pad_id) for w in got}
        ok = {w: trimmed[w] is not None and all(torch.equal(a, b) for a, b in zip(trimmed[w], want[w])) for w in got}
        if all(ok.values()):
            continue
        swapped = {w: _trim(got[w], want[o][0].shape[1], pad_id) for w, o in (("chosen", "rejected"),
                                                                               ("rejected", "chosen"))}
        if all(swapped[w] is not None and all(torch.equal(a, b) for a, b in zip(swapped[w], want[o]))
               for w, o in (("chosen", "rejected"), ("rejected", "chosen"))):
            _fail(name, "chosen and rejected are swapped: return (chosen side, rejected side), in that order",
                  f"case: {case}")
        for which in ("chosen", "rejected"):
            if ok[which]:
                continue
            g, (w_ids, w_attn, w_resp) = got[which], want[which]
            ids, attn, resp = g
            T = w_ids.shape[1]
            rows = {tuple(r) for r in ids[:, :T].tolist()} if ids.shape[1] >= T else set()
            detail = (f"case: {case}, {which} side\nexpected ids {w_ids.tolist()} response_mask {w_resp.tolist()}\n"
                      f"got      ids {ids.tolist()} response_mask {resp.tolist()}")
            if ids.shape[1] >= T and not torch.equal(ids[:, :T], w_ids) and rows == {tuple(r) for r in w_ids.tolist()}:
                _fail(name, f"the {which} rows are in another order than the pairs: row i of chosen and row i of "
                            f"rejected must both come from pair i (same prompt). Sorting one side by length, or "
                            f"building the sides in different orders, breaks the pairing", detail)
            responses = chosen if which == "chosen" else rejected
            only = _side([[] for _ in prompts], responses, pad_id)
            if ids.shape == only[0].shape and torch.equal(ids, only[0]):
                _fail(name, "leaves the prompt out: each row is <bos> prompt <sep> response <eos>, since a reward "
                            "model scores a response for its prompt", detail)
            left = torch.stack([torch.cat([torch.full((T - int(n),), pad_id), r[:int(n)]])
                                for r, n in zip(w_ids, w_attn.sum(-1))]) if T else w_ids
            if ids.shape == w_ids.shape and torch.equal(ids, left) and not torch.equal(left, w_ids):
                _fail(name, "pads on the left: the course pads on the right, so that each row's last real token "
                            "sits at attention_mask.sum(-1) - 1", detail)
            if pad_id != 0 and ids.shape == w_ids.shape and torch.equal(ids, _side(prompts, responses, 0)[0]):
                _fail(name, f"pads with 0, but pad_id is {pad_id}: use the pad_id you are given", detail)
            if trimmed[which] is None:
                _fail(name, "the ids differ from each row's prompt and response, right-padded", detail)
            ids, attn, resp = trimmed[which]
            if not torch.equal(ids, w_ids):
                _fail(name, "the ids differ from each row's prompt followed by its response, right-padded", detail)
            if not torch.equal(attn, w_attn):
                if torch.equal(attn, 1 - w_attn):
                    _fail(name, "the attention mask is inverted: 1 marks a real token, 0 a padding position", detail)
                _fail(name, "the attention mask differs from 1 on every real token (prompt and response) and 0 on "
                            "padding", detail)
            prompt_len = torch.tensor([len(p) for p in prompts])
            cols = torch.arange(T)[None, :]
            start = prompt_len[:, None]
            end = w_attn.sum(-1, keepdim=True)          # one past the <eos>
            span = lambda a, b: ((cols >= a) & (cols < b)).long()
            variants = [
                ("the response mask covers the prompt too: it must be 0 on <bos>, the prompt and <sep>, so that "
                 "only the response's tokens count", w_attn),
                ("the response mask starts one token early, at <sep>: <sep> belongs to the prompt (the context), "
                 "the response starts after it", span(start - 1, end)),
                ("the response mask leaves out <eos>: it is 1 on every response token including <eos>, since "
                 "ending the response is part of what the model writes (and the score is read there)",
                 span(start, end - 1)),
                ("the response mask misses the first response token: it starts right after <sep>, at "
                 "len(prompt_ids)", span(start + 1, end)),
                ("the response mask covers padding: it ends at the row's <eos>, with 0 on the padding after it",
                 span(start, T)),
            ]
            for mistake, value in variants:
                if torch.equal(resp, value):
                    _fail(name, mistake, detail)
            _fail(name, "the response mask differs from 1 on the response tokens and <eos>, 0 elsewhere", detail)
    print(f"preference_batch passed {len(cases)} cases (exact match, pairs kept row by row)")


# ----------------------------------------------------------------------------------------------------------------
# exercise: train a reward model (a scalar head read at <eos>) with the Bradley-Terry loss

def _reward_loop_setup():
    """A tiny reward model (one block, 32 wide, a scalar head) and two batches of clean preference pairs
    (correct answer over insult), from the course's collate function."""
    from ...model import ScalarModel
    return _tiny_preference_setup(ScalarModel)


def _reference_reward_loop(model, batches, lr, epochs, read="eos", reduce="mean", sign=1.0):
    """The course's loop (Adam, one step per batch, mean Bradley-Terry loss of the scores at <eos>), and the
    variants the check compares against."""
    F = torch.nn.functional

    def score(b):
        values = model(b.input_ids, b.attention_mask)                              # [B, T]
        if read == "last column":
            return values[:, -1]
        if read == "mean":
            return (values * b.attention_mask).sum(-1) / b.attention_mask.sum(-1)
        return values.gather(1, (b.attention_mask.sum(-1) - 1)[:, None]).squeeze(1)

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        for batch in batches:
            per_pair = -F.logsigmoid(sign * (score(batch.chosen) - score(batch.rejected)))
            loss = per_pair.sum() if reduce == "sum" else per_pair.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def check_reward_model_training(train_reward_model_loop: Callable, hidden: bool = False) -> None:
    """Check ``train_reward_model_loop(model, batches, lr, epochs) -> list[float]`` on a tiny reward model: for
    each epoch and each batch, score the chosen and the rejected rows (``model(input_ids, attention_mask)`` gives
    [B, T] values; the score is the value at each row's last real token), take the mean Bradley-Terry loss over the
    pairs, and make one Adam step; return every step's loss. The first three losses must match the course's loop
    within 1e-4 (same model, data and optimiser), the model must have changed, and the loss must fall.

    Known mistakes it names: chosen and rejected swapped, the score read at the last column (padding) or averaged
    over tokens, the sum over pairs instead of the mean, a single epoch where several are asked for, no optimiser
    step (or no zero_grad, so gradients pile up), a loss that does not fall, losses returned as tensors.
    """
    import copy
    name = "train_reward_model_loop"
    settings = [(3e-3, 3)] + ([(1e-3, 2)] if hidden else [])
    for lr, epochs in settings:
        case = f"a tiny reward model, 2 batches of 8 pairs (correct answer over insult), lr {lr}, {epochs} epochs"
        model, batches = _reward_loop_setup()
        before = copy.deepcopy(model.state_dict())
        out = _call(train_reward_model_loop, name, model, batches, lr, epochs)
        if not isinstance(out, (list, tuple)) or not all(type(x) is float for x in out):
            _fail(name, "should return the list of per-step losses as Python floats (loss.item()), not tensors "
                        "that keep the whole graph alive", f"case: {case}: got {_fmt(out)}")
        losses = list(out)
        if len(losses) == len(batches) and epochs > 1:
            _fail(name, f"ran a single epoch: {len(losses)} steps for {epochs} epochs of {len(batches)} batches; "
                        f"loop over the epochs", f"case: {case}")
        if len(losses) != epochs * len(batches):
            _fail(name, f"returned {len(losses)} losses; expected one per step, {epochs} x {len(batches)}",
                  f"case: {case}")
        if all(torch.equal(v, before[k]) for k, v in model.state_dict().items()):
            _fail(name, "the model's parameters did not change: call optimizer.step() after loss.backward(), with "
                        "an optimiser built on model.parameters()", f"case: {case}")
        want = _reference_reward_loop(_reward_loop_setup()[0], batches, lr, epochs)
        if all(abs(a - b) <= 1e-4 for a, b in zip(losses[:3], want[:3])):
            if not losses[-1] < losses[0] - 0.05:
                _fail(name, "the loss does not fall: does the optimiser get the model's parameters?",
                      f"case: {case}: losses {_fmt(losses)}")
            continue
        variants = [
            ("chosen and rejected are swapped: the margin is score(chosen) - score(rejected), and the loss rises "
             "as the model learns", dict(sign=-1.0)),
            ("reads the score at the last column: for every row shorter than the longest that is padding; read "
             "it at attention_mask.sum(-1) - 1", dict(read="last column")),
            ("averages the values over the tokens: a reward model's score is the value at the last real token "
             "(<eos>), which has seen the whole response", dict(read="mean")),
            ("sums the per-pair losses: take the mean over the batch, so that the step size does not grow with "
             "the batch size", dict(reduce="sum")),
        ]
        for mistake, kw in variants:
            other = _reference_reward_loop(_reward_loop_setup()[0], batches, lr, epochs, **kw)
            if all(abs(a - b) <= 1e-4 for a, b in zip(losses[:3], other[:3])):
                _fail(name, mistake, f"case: {case}: first losses {_fmt(losses[:3])}")
        if abs(losses[0] - want[0]) <= 1e-4:
            _fail(name, "the first loss is right but the next ones are not: call optimizer.zero_grad() before "
                        "loss.backward() at every step (otherwise gradients pile up from step to step), and step "
                        "once per batch", f"case: {case}: expected {_fmt(want[:3])}, got {_fmt(losses[:3])}")
        _fail(name, "the first losses differ from the course's loop (Adam on model.parameters(), one step per batch, "
                    "loss = mean over the pairs of -log sigma(score(chosen) - score(rejected)), each score read at "
                    "the row's last real token)", f"case: {case}: expected {_fmt(want[:3])}, got {_fmt(losses[:3])}")
    print(f"train_reward_model_loop passed {len(settings)} case(s) (first losses within 1e-4 of the course's loop; "
          f"the loss falls)")


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
            "A": "the candidates come from pi_ref at every N; what changes is how hard the reward model's choice "
                 "pushes into the responses it over-rates",
            "B": "more samples can only help the reward model's choice by its own scores: the proxy score keeps "
                 "rising with N, as the plot shows; it is the gold reward that peaks and then falls",
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
    """Exercise: why the gold reward of Best-of-N with a weak reward model peaks and then falls as N grows, while the
    proxy score keeps rising (one letter)."""
    check_choice("over_optimisation", answer)
