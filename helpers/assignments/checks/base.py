"""The checks' shared machinery: calling a learner's function, naming the mistake a wrong result matches,
tolerances, and multiple-choice questions (:class:`Question`, :data:`QUESTIONS`, :func:`check_choice`).

Each lesson's module registers its questions in :data:`QUESTIONS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

ATOL_PROBS = 1e-5
ATOL_VALUE = 1e-4
RTOL_VALUE = 1e-5
ATOL_RATE = 1e-5
Z95 = 1.96  # the 97.5 % normal quantile, as helpers.evaluate uses it; the exact 1.95996... also passes (ATOL_RATE)

NOT_IMPLEMENTED_HELP = "write your code in place of the `raise NotImplementedError` line, run that cell, then this check"


# ----------------------------------------------------------------------------------------------------------------
# shared machinery

def _call(fn: Callable, name: str, *args):
    """Call the learner's function; a stub that still raises NotImplementedError becomes a clear failure."""
    if not callable(fn):
        raise AssertionError(f"{name}: expected a function, got {type(fn).__name__} {fn!r}")
    try:
        return fn(*args)
    except NotImplementedError as e:
        what = str(e).strip() or f"{name} is not implemented yet"
        raise AssertionError(f"{what}: {NOT_IMPLEMENTED_HELP}") from None


def _fail(name: str, mistake: str, detail: str = "") -> None:
    raise AssertionError(f"{name}: {mistake}" + (f"\n{detail}" if detail else ""))


def _fmt(x) -> str:
    """A tensor or number, short enough for a message."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64)
        if x.numel() > 8:
            x = x.flatten()[:8]
            return "[" + ", ".join(f"{v:.4g}" for v in x.tolist()) + ", ...]"
        return str([round(v, 5) for v in x.flatten().tolist()]) if x.dim() else f"{float(x):.6g}"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_fmt(v) for v in x) + ")"
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x)


def _tensor_result(out, name: str, shape: torch.Size, case: str) -> torch.Tensor:
    """The learner's output as float64, after checking that it is a plain tensor of the right shape."""
    if type(out) is not torch.Tensor:  # exactly a tensor: a subclass could override comparisons
        _fail(name, f"returns a {type(out).__name__}, expected a torch.Tensor", f"case: {case}")
    if out.shape != shape:
        hint = (" (one value per prompt: do not average or sum over prompts)" if out.dim() < len(shape)
                else " (the same shape as the inputs' leading dimensions)")
        _fail(name, f"returns shape {list(out.shape)}, expected {list(shape)}{hint}", f"case: {case}")
    return out.detach().to(torch.float64)


def _close(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0) -> bool:
    return bool(torch.allclose(got, want.to(torch.float64), atol=atol, rtol=rtol, equal_nan=True))


def _first_match(got: torch.Tensor, variants: list[tuple[str, torch.Tensor]], atol: float,
                 rtol: float = 0.0, want: torch.Tensor | None = None) -> str | None:
    """The first known mistake whose result equals the learner's. With ``want``, a result that has nan or inf in
    places is also compared where it is finite, so that a nan from one padded row does not hide a wrong formula
    that shows on the other rows."""
    for mistake, value in variants:
        if value.shape == got.shape and _close(got, value, atol, rtol):
            return mistake
    finite = torch.isfinite(got)
    if want is not None and bool(finite.any()) and not bool(finite.all()) \
            and not _close(got[finite], want[finite], atol, rtol):
        for mistake, value in variants:
            if value.shape == got.shape and _close(got[finite], value[finite], atol, rtol):
                return mistake
    return None


def _inputs_unchanged(name: str, originals: tuple, passed: tuple, case: str) -> None:
    for i, (a, b) in enumerate(zip(originals, passed)):
        if isinstance(a, torch.Tensor) and not torch.equal(a, b):
            _fail(name, f"changes its input (argument {i + 1}) in place: compute a new tensor instead, later cells "
                        f"still need the inputs", f"case: {case}")


@dataclass
class _Case:
    name: str
    args: tuple  # tensors (float32) and beta, in the function's argument order


def _random_case(gen: torch.Generator, shape: tuple, beta: float, pad: int, name: str,
                 with_policy: bool = False) -> _Case:
    """Random reference probabilities (with ``pad`` padded candidates at the end of every row) and rewards,
    preceded by a random policy (0 on the padding too) when ``with_policy``."""
    K = shape[-1]
    logits = torch.randn(shape, generator=gen, dtype=torch.float64)
    mask = torch.ones(shape, dtype=torch.bool)
    if pad:
        mask[..., K - pad:] = False
    ref = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
    rewards = (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1) * 2
    rewards = torch.where(mask, rewards, torch.full_like(rewards, 1.5))  # padding's reward must not matter
    args = [ref.float(), rewards.float(), beta]
    if with_policy:
        pol = torch.softmax(torch.randn(shape, generator=gen, dtype=torch.float64).masked_fill(~mask, float("-inf")), -1)
        args = [pol.float()] + args
    return _Case(name, tuple(args))


# ----------------------------------------------------------------------------------------------------------------
# conceptual questions: multiple choice, graded by letter, each wrong letter explained

@dataclass(frozen=True)
class Question:
    """A multiple-choice question: one letter per part (most have one part), and why each wrong letter is wrong."""
    title: str
    answer: str                          # the right letter of each part, in order, e.g. "B" or "BA"
    why_not: tuple[dict[str, str], ...]  # per part: wrong letter -> what is wrong with it
    parts: tuple[str, ...] = ("",)       # names of the parts, for messages when there are several
    letters: str = "ABCD"



QUESTIONS: dict[str, Question] = {}  # filled by each lesson's module


def _letters(answer, question: Question) -> str:
    if isinstance(answer, (tuple, list)) and all(type(a) is str for a in answer):
        answer = "".join(answer)
    if type(answer) is not str:
        raise AssertionError(f"{question.title}: answer with a string of letters such as 'B' "
                             f"(got {type(answer).__name__} {answer!r})")
    return "".join(c for c in answer.upper() if c.isalpha())


def check_choice(key: str, answer) -> None:
    """Check a multiple-choice answer: ``answer`` is a function returning letters (or the letters themselves).

    A question with several parts takes one letter per part, in order (e.g. "BA").
    """
    question = QUESTIONS[key]
    if callable(answer):
        answer = _call(answer, question.title)
    given = _letters(answer, question)
    n = len(question.answer)
    if len(given) != n or any(c not in question.letters for c in given):
        what = "one letter" if n == 1 else f"{n} letters, one per part ({', then '.join(question.parts)})"
        raise AssertionError(f"{question.title}: expected {what} from {', '.join(question.letters)}; "
                             f"got {answer!r}")
    wrong = [(i, c) for i, c in enumerate(given) if c != question.answer[i]]
    if wrong:
        reasons = []
        for i, c in wrong:
            part = f" for {question.parts[i]}" if n > 1 else ""
            reasons.append(f"{c}{part} is not the best answer: {question.why_not[i][c]}")
        raise AssertionError(f"{question.title}: " + "\n".join(reasons))
    print(f"{question.title}: correct")


def _first(out, name: str, what: str, case: str):
    """The learner may return the helper's tuple (tensor, extras): keep the first element."""
    if isinstance(out, (tuple, list)):
        if not out:
            _fail(name, f"returns an empty {type(out).__name__}; expected {what}", f"case: {case}")
        return out[0]
    return out
