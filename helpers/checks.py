"""Checks for the exercise notebooks: run a learner's answer on several cases against the course's reference and,
when it is wrong, say which known mistake the result matches.

Every check passes silently but for one printed line, or raises ``AssertionError`` whose first line names the mistake
("looks like you used exp(beta * r) instead of exp(r / beta)"), followed by the case that showed it. A stub that
still raises ``NotImplementedError`` fails with "... is not implemented yet". Tolerances are stated per check:

- probabilities: absolute error <= ``ATOL_PROBS`` (1e-5: float32 arithmetic is accurate to about 1e-7 here);
- objective values (rewards and KL in nats): absolute error <= ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|;
- rates and interval bounds: absolute error <= ``ATOL_RATE`` (1e-5).

Inputs are float32 tensors (what :func:`helpers.optimal.enumerable_view` returns); expected values are computed in
float64. Each check also accepts ``hidden=True``, which adds randomised cases: the grader runs them, the learner's
check cell does not. tests/test_checks.py feeds every check the reference and realistic wrong answers.
Used in the exercise notebooks of every lesson (lesson 01: the alignment problem).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import optimal
from .evaluate import wilson_interval

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
# exercise: a failure rate with its 95 % Wilson interval

def _wald(k: int, n: int, z: float, clip: bool) -> tuple[float, float]:
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n)
    lo, hi = p - half, p + half
    return (max(0.0, lo), min(1.0, hi)) if clip else (lo, hi)


def _rate_cases(hidden: bool) -> list[tuple[str, list[str], str]]:
    def labels(k, n, failure, other):
        return [failure] * k + [other[i % len(other)] for i in range(n - k)]
    cases = [
        ("3 harmful of 10", labels(3, 10, "harmful", ["refusal", "idk", "insult"]), "harmful"),
        ("0 fabrications of 20", labels(0, 20, "fabrication", ["idk", "refusal"]), "fabrication"),
        ("47 harmful of 104 (a malformed response is not 'harmful')",
         labels(47, 104, "harmful", ["refusal", "malformed", "insult", "verbose"]), "harmful"),
        ("15 insults of 15", labels(15, 15, "insult", []), "insult"),
    ]
    if hidden:
        rng = torch.Generator().manual_seed(101)
        for n in (1, 7, 452):
            k = int(torch.randint(0, n + 1, (1,), generator=rng))
            lab = labels(k, n, "wrong", ["correct", "idk", "malformed"])
            perm = torch.randperm(n, generator=rng).tolist()
            cases.append((f"{k} wrong of {n}, shuffled", [lab[i] for i in perm], "wrong"))
    return cases


def check_failure_rate(failure_rate: Callable, hidden: bool = False) -> None:
    """Check ``failure_rate(labels, failure) -> (rate, low, high)``: the share of ``labels`` equal to ``failure``
    and its 95 % Wilson score interval (z = 1.96), each within ``ATOL_RATE``.

    Known mistakes it names: the Wald (normal-approximation) interval, a 68 % (z = 1) or 90 % (z = 1.645) interval,
    a percentage instead of a fraction, the rate of non-failures, the wrong number of values.
    """
    name = "failure_rate"
    for case, labels, failure in _rate_cases(hidden):
        k, n = sum(lab == failure for lab in labels), len(labels)
        passed = list(labels)
        out = _call(failure_rate, name, passed, failure)
        if passed != labels:
            _fail(name, "changes the list of labels it is given: count without modifying it", f"case: {case}")
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            _fail(name, f"returns {_fmt(out)}; expected three numbers (rate, low, high)", f"case: {case}")
        try:
            got = tuple(float(v) for v in out)
        except (TypeError, ValueError):
            _fail(name, f"returns {_fmt(out)}; expected three numbers (rate, low, high)", f"case: {case}")
        lo, hi = wilson_interval(k, n, Z95)
        want = (k / n, lo, hi)
        if all(abs(g - w) <= ATOL_RATE for g, w in zip(got, want)):
            continue
        variants = [
            ("returns a percentage; return fractions between 0 and 1 (rate 0.3, not 30)",
             (100 * want[0], 100 * lo, 100 * hi)),
            ("counts the responses that are NOT the failure: the rate is the share of labels equal to `failure`",
             ((n - k) / n,) + wilson_interval(n - k, n, Z95)),
            ("looks like the Wald interval p ± 1.96·sqrt(p(1−p)/n): use Wilson's score interval, which is not "
             "zero-width when no (or every) response fails and stays inside [0, 1]",
             (k / n,) + _wald(k, n, Z95, clip=True)),
            ("looks like the Wald interval p ± 1.96·sqrt(p(1−p)/n) (not even clipped to [0, 1]): use Wilson's "
             "score interval", (k / n,) + _wald(k, n, Z95, clip=False)),
            ("looks like a 68 % interval (z = 1): a 95 % interval uses z = 1.96", (k / n,) + wilson_interval(k, n, 1.0)),
            ("looks like a 90 % interval (z = 1.645): a 95 % interval uses z = 1.96",
             (k / n,) + wilson_interval(k, n, 1.6449)),
            ("looks like a 99 % interval (z = 2.576): a 95 % interval uses z = 1.96",
             (k / n,) + wilson_interval(k, n, 2.5758)),
        ]
        for mistake, value in variants:
            if all(abs(g - w) <= max(ATOL_RATE, 2e-4 * abs(w)) for g, w in zip(got, value)):
                _fail(name, mistake, f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
        if abs(got[0] - want[0]) > ATOL_RATE:
            _fail(name, f"the rate is {got[0]:.6g}, expected {k}/{n} = {want[0]:.6g}", f"case: {case}")
        if not got[1] <= got[0] <= got[2] and 0 < k < n:
            _fail(name, "the interval does not contain the rate: return (rate, low, high) in that order",
                  f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
        _fail(name, f"the interval differs from the 95 % Wilson interval by more than {ATOL_RATE}",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"failure_rate passed {len(_rate_cases(hidden))} cases (tolerance {ATOL_RATE})")


# ----------------------------------------------------------------------------------------------------------------
# exercise: the optimal policy pi* = pi_ref exp(r / beta) / Z

def _normalise(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / x.sum(dim, keepdim=True)


def _policy_cases(hidden: bool) -> list[_Case]:
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    cases = [
        _Case("one prompt, 4 candidates, beta = 1",
              (t([0.1, 0.2, 0.3, 0.4]), t([1.0, -1.0, 0.5, -2.0]), 1.0)),
        _Case("2 prompts, the first with a padded candidate (ref_probs 0, reward 2), beta = 0.5",
              (t([[0.5, 0.3, 0.2, 0.0], [0.4, 0.3, 0.2, 0.1]]), t([[1.0, -1.0, 0.0, 2.0], [-1.5, 1.0, 0.5, 0.0]]),
               0.5)),
        _Case("small beta = 0.01 (r / beta up to 150), with a padded candidate",
              (t([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]]), t([[-1.0, 0.5, 1.0, 1.5], [1.5, -1.0, 1.0, 0.0]]),
               0.01)),
        _Case("3 x 2 prompts (leading dimensions [3, 2]), 3 candidates, beta = 2",
              _grid_args()),
        _Case("large beta = 100: pi* stays close to pi_ref",
              (t([0.6, 0.3, 0.1]), t([-1.0, 1.0, 0.0]), 100.0)),
    ]
    if hidden:
        gen = torch.Generator().manual_seed(7)
        cases += [_random_case(gen, (5, 6), 0.3, 2, "5 random prompts, 2 padded candidates each, beta = 0.3"),
                  _random_case(gen, (4, 1), 1.0, 0, "a single candidate per prompt, beta = 1"),
                  _random_case(gen, (2, 2, 5), 0.05, 1, "random [2, 2, 5], beta = 0.05")]
    return cases


def _grid_args() -> tuple:
    gen = torch.Generator().manual_seed(0)
    ref = torch.softmax(torch.randn(3, 2, 3, generator=gen), -1)
    rewards = torch.randn(3, 2, 3, generator=gen)
    return ref, rewards, 2.0


def check_optimal_policy(optimal_policy: Callable, hidden: bool = False) -> None:
    """Check ``optimal_policy(ref_probs, rewards, beta) -> probs``, all [..., K]: pi* = pi_ref exp(r / beta) / Z
    over the last dimension, within ``ATOL_PROBS``; a padded candidate (ref_probs 0) gets probability 0.

    Known mistakes it names: exp(beta * r), forgetting pi_ref, not normalising (or over the wrong dimension),
    the sign of r flipped, probability on padded candidates, overflow of exp(r / beta) at small beta.
    """
    name = "optimal_policy"
    cases = _policy_cases(hidden)
    for case in cases:
        ref, r, beta = case.args
        passed = (ref.clone(), r.clone(), beta)
        out = _call(optimal_policy, name, *passed)
        _inputs_unchanged(name, case.args, passed, case.name)
        got = _tensor_result(out, name, ref.shape, case.name)
        want = optimal.optimal_policy(ref.double(), r.double(), beta)
        if _close(got, want, ATOL_PROBS):
            continue
        R, P = r.double(), ref.double()
        valid = P > 0
        masked = lambda x: x.masked_fill(~valid, float("-inf"))  # noqa: E731
        detail = f"case: {case.name}\nexpected {_fmt(want)}\ngot      {_fmt(got)}"
        variants = [
            ("looks like you used exp(beta * r) instead of exp(r / beta)", torch.softmax(torch.log(P) + beta * R, -1)),
            ("looks like you forgot pi_ref: pi* is proportional to pi_ref(y) * exp(r(y) / beta), not to exp(r / beta) "
             "alone", torch.softmax(masked(R / beta), -1)),
            ("the sign is flipped: exp(-r / beta) favours low rewards; pi* weights by exp(+r / beta)",
             torch.softmax(torch.log(P) - R / beta, -1)),
            ("normalised over the wrong dimension: each prompt's probabilities (the last dimension, K) must sum to 1",
             _normalise(P * torch.exp(R / beta), 0)),
        ]
        if bool(valid.all()):  # with padding, exp(r / beta) alone is better explained by the padding rule below
            variants.insert(1, ("looks like you forgot pi_ref: pi* is proportional to pi_ref(y) * exp(r(y) / beta), "
                                "not to exp(r / beta) alone", torch.softmax(R / beta, -1)))
        mistake = _first_match(got, variants, ATOL_PROBS, want=want)
        if mistake:
            _fail(name, mistake, detail)
        if not bool(torch.isfinite(got).all()):
            _fail(name, f"returns nan or inf: exp(r / beta) overflows float32 when r / beta is large (here up to "
                        f"{float((R / beta).abs().max()):.0f}), and 0 * inf is nan; work in log space: "
                        f"torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)", detail)
        sums = got.sum(-1)
        if not _close(sums, torch.ones_like(sums), 10 * ATOL_PROBS):
            _fail(name, f"not normalised: probabilities sum to {_fmt(sums)} over the last dimension instead of 1",
                  detail)
        on_padding = got.masked_fill(valid, 0.0).sum(-1).max()
        if float(on_padding) > ATOL_PROBS:
            _fail(name, f"no padding handling: puts probability {float(on_padding):.3g} on padded candidates (where "
                        f"ref_probs = 0, and their reward means nothing); they must get exactly 0, as log(0) = -inf "
                        f"gives (a small eps added to ref_probs does not)", detail)
        _fail(name, f"differs from pi* by up to {float((got - want).abs().max()):.3g} (tolerance {ATOL_PROBS})", detail)
    print(f"optimal_policy passed {len(cases)} cases (tolerance {ATOL_PROBS})")


# ----------------------------------------------------------------------------------------------------------------
# exercise: the KL-regularised objective J(pi) = E_pi[r] - beta KL(pi || pi_ref)

def _objective_cases(hidden: bool) -> list[_Case]:
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    cases = [
        _Case("one prompt, every candidate possible, beta = 0.5",
              (t([0.5, 0.3, 0.15, 0.05]), t([0.1, 0.2, 0.3, 0.4]), t([1.0, -0.5, 0.0, -2.0]), 0.5)),
        _Case("2 prompts, the first with a padded candidate (0 under both policies), beta = 1",
              (t([[0.6, 0.3, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]]), t([[0.2, 0.3, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]]),
               t([[1.0, 0.0, -1.0, 0.0], [-1.0, 1.0, 0.5, -0.5]]), 1.0)),
        _Case("a deterministic policy (probability 0 on candidates pi_ref allows), beta = 0.1",
              (t([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]), t([[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]]),
               t([[1.0, -1.0, 0.0], [-1.0, 0.5, 1.0]]), 0.1)),
        _Case("2 x 3 prompts (leading dimensions [2, 3]), 4 candidates, beta = 2",
              _random_case(torch.Generator().manual_seed(3), (2, 3, 4), 2.0, 0, "", with_policy=True).args),
    ]
    if hidden:
        gen = torch.Generator().manual_seed(11)
        cases += [_random_case(gen, (6, 5), 0.2, 1, "6 random prompts, 1 padded candidate, beta = 0.2", True),
                  _random_case(gen, (3, 8), 5.0, 3, "3 random prompts, 3 padded candidates, beta = 5", True)]
    return cases


def check_objective(objective: Callable, hidden: bool = False) -> None:
    """Check ``objective(policy_probs, ref_probs, rewards, beta) -> J``, inputs [..., K], output [...]:
    J(pi) = sum_y pi(y) r(y) - beta * sum_y pi(y) log(pi(y) / pi_ref(y)), with 0 log 0 = 0, within
    ``ATOL_VALUE`` + ``RTOL_VALUE`` * |J|.

    Known mistakes it names: the KL direction reversed, the sign of the penalty flipped, beta missing (or dividing),
    the KL averaged instead of summed over candidates, rewards not weighted by pi, a term forgotten, nan from 0 log 0.
    """
    name = "objective"
    cases = _objective_cases(hidden)
    for case in cases:
        pi, ref, r, beta = case.args
        passed = (pi.clone(), ref.clone(), r.clone(), beta)
        out = _call(objective, name, *passed)
        _inputs_unchanged(name, case.args, passed, case.name)
        got = _tensor_result(out, name, ref.shape[:-1], case.name)
        want = optimal.objective(pi.double(), ref.double(), r.double(), beta)
        if _close(got, want, ATOL_VALUE, RTOL_VALUE):
            continue
        P, Q, R = pi.double(), ref.double(), r.double()
        reward, kl = (P * R).sum(-1), optimal.kl_divergence(P, Q)
        K = P.shape[-1]
        detail = f"case: {case.name}\nexpected {_fmt(want)}\ngot      {_fmt(got)}"
        variants = [
            ("your KL is KL(pi_ref || pi): the direction is reversed; the penalty is sum_y pi(y) log(pi(y) / "
             "pi_ref(y)), an expectation under the policy", reward - beta * optimal.kl_divergence(Q, P)),
            ("the sign of the penalty is flipped: J = E_pi[r] - beta * KL, so moving away from pi_ref costs reward",
             reward + beta * kl),
            ("missing beta: the KL term is multiplied by beta", reward - kl),
            ("the KL is divided by beta; J multiplies it by beta", reward - kl / beta),
            ("the KL is averaged over candidates; it is a sum over y of pi(y) log(pi(y) / pi_ref(y))",
             reward - beta * kl / K),
            ("the expected reward must weight each reward by pi(y): sum_y pi(y) r(y), not a plain mean over "
             "candidates", R.mean(-1) - beta * kl),
            ("the expected reward must weight each reward by pi(y): sum_y pi(y) r(y), not a plain sum",
             R.sum(-1) - beta * kl),
            ("the rewards are weighted by pi_ref; E_pi[r] weights them by the policy pi", (Q * R).sum(-1) - beta * kl),
            ("forgot the KL penalty: J = E_pi[r] - beta * KL(pi || pi_ref)", reward),
            ("forgot the expected reward: J = E_pi[r] - beta * KL(pi || pi_ref)", -beta * kl),
        ]
        mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE, want=want)
        if mistake:
            _fail(name, mistake, detail)
        if bool(torch.isnan(got).any()):
            _fail(name, "returns nan: where pi(y) = 0 the term pi(y) log(pi(y) / pi_ref(y)) is 0 * log 0, which "
                        "torch computes as nan; it must count as 0 (mask those terms with torch.where, or use "
                        "torch.xlogy)", detail)
        _fail(name, f"differs from J by up to {float((got - want).abs().max()):.3g} (tolerance {ATOL_VALUE} + "
                    f"{RTOL_VALUE} * |J|)", detail)
    print(f"objective passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |J|)")


# ----------------------------------------------------------------------------------------------------------------
# exercise (optional): the optimum's value beta * log Z

def check_optimal_objective(optimal_objective: Callable, hidden: bool = False) -> None:
    """Check ``optimal_objective(ref_probs, rewards, beta) -> value``, inputs [..., K], output [...]:
    beta * log Z with Z = sum_y pi_ref(y) exp(r(y) / beta), within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |value|.

    Known mistakes it names: beta missing (or dividing), pi_ref forgotten, exp(beta * r), a mean instead of the sum
    in Z, overflow at small beta, padded candidates counted.
    """
    name = "optimal_objective"
    cases = _policy_cases(hidden)
    for case in cases:
        ref, r, beta = case.args
        passed = (ref.clone(), r.clone(), beta)
        out = _call(optimal_objective, name, *passed)
        _inputs_unchanged(name, case.args, passed, case.name)
        got = _tensor_result(out, name, ref.shape[:-1], case.name)
        want = optimal.optimal_objective(ref.double(), r.double(), beta)
        if _close(got, want, ATOL_VALUE, RTOL_VALUE):
            continue
        P, R = ref.double(), r.double()
        log_z = want / beta
        K = P.shape[-1]
        detail = f"case: {case.name}\nexpected {_fmt(want)}\ngot      {_fmt(got)}"
        variants = [
            ("missing beta: this returns log Z; the optimum's value is beta * log Z", log_z),
            ("divides by beta: the optimum's value is beta * log Z, not log Z / beta", log_z / beta),
            ("looks like you forgot pi_ref: Z = sum_y pi_ref(y) exp(r(y) / beta)",
             beta * torch.logsumexp((R / beta).masked_fill(P == 0, float("-inf")), -1)),
            ("looks like you used exp(beta * r) instead of exp(r / beta)",
             beta * torch.logsumexp(torch.log(P) + beta * R, -1)),
            ("Z is a sum over candidates, not a mean", want - beta * math.log(K)),
        ] + ([] if bool((P == 0).any()) else [
            ("looks like you forgot pi_ref: Z = sum_y pi_ref(y) exp(r(y) / beta)", beta * torch.logsumexp(R / beta, -1)),
        ]) + [
            ("the sign is flipped: Z uses exp(+r / beta)", beta * torch.logsumexp(torch.log(P) - R / beta, -1)),
        ]
        mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE, want=want)
        if mistake:
            _fail(name, mistake, detail)
        if not bool(torch.isfinite(got).all()):
            _fail(name, f"returns nan or inf: exp(r / beta) overflows float32 when r / beta is large (here up to "
                        f"{float((R / beta).abs().max()):.0f}); use torch.logsumexp(torch.log(ref_probs) + "
                        f"rewards / beta, dim=-1)", detail)
        padded = P == 0
        if bool(padded.any()):
            moved = _call(optimal_objective, name, ref.clone(), r.masked_fill(padded, -3.0), beta)
            if type(moved) is torch.Tensor and moved.shape == got.shape and not _close(
                    moved.detach().double(), got, ATOL_VALUE, RTOL_VALUE):
                _fail(name, "no padding handling: the result changes with the reward of a padded candidate "
                            "(ref_probs = 0); those must not count", detail)
        _fail(name, f"differs from beta * log Z by up to {float((got - want).abs().max()):.3g} (tolerance "
                    f"{ATOL_VALUE} + {RTOL_VALUE} * |value|)", detail)
    print(f"optimal_objective passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |value|)")


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
    lengths = [[4, 7, 2], [5, 5], [1, 6, 3, 6]] + ([[3, 8, 8, 1, 5]] if hidden else [])
    for lens in lengths:
        T = max(lens)
        values = torch.randn(len(lens), T, generator=gen)
        mask = torch.tensor([[1] * n + [0] * (T - n) for n in lens])
        case = f"rows of lengths {lens} (right padded to {T})"
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
             ("a confident right prediction: margin +200", torch.tensor([100.0]), torch.tensor([-100.0]))]
    if hidden:
        gen = torch.Generator().manual_seed(4)
        cases.append(("random rewards", 3 * torch.randn(16, generator=gen), 3 * torch.randn(16, generator=gen)))
    return cases


def check_bradley_terry_loss(bradley_terry_loss: Callable, hidden: bool = False) -> None:
    """Check ``bradley_terry_loss(chosen_rewards, rejected_rewards) -> [B]``: the per-pair loss
    -log sigma(r_chosen - r_rejected), finite for any margin, within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: chosen and rejected swapped, log(sigmoid(m)) (infinite for a margin of -200), a
    missing minus sign, sigmoid without the log, a mean over pairs instead of per-pair losses.
    """
    name = "bradley_terry_loss"
    cases = _margin_cases(hidden)
    for case, chosen, rejected in cases:
        args = (chosen.clone(), rejected.clone())
        out = _call(bradley_terry_loss, name, *args)
        if type(out) is torch.Tensor and out.dim() == 0 and len(chosen) > 1:
            _fail(name, "returns one number: return the loss of every pair ([B]); the training loop takes the mean",
                  f"case: {case}")
        got = _tensor_result(out, name, chosen.shape, case)
        _inputs_unchanged(name, (chosen, rejected), args, case)
        m = (chosen - rejected).double()
        want = -torch.nn.functional.logsigmoid(m)
        if _close(got, want, ATOL_VALUE, RTOL_VALUE):
            continue
        if not bool(torch.isfinite(got).all()) and bool(torch.isfinite(want).all()):
            _fail(name, "gives inf or nan for a large margin: log(sigmoid(m)) underflows once sigmoid(m) rounds to "
                        "0 (m below about -90 in float32); use torch.nn.functional.logsigmoid, which is exact",
                  f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
        variants = [
            ("chosen and rejected are swapped: the loss must be small when r_chosen > r_rejected",
             -torch.nn.functional.logsigmoid(-m)),
            ("the minus sign is missing: the loss is -log sigma(margin), which is >= 0",
             torch.nn.functional.logsigmoid(m)),
            ("takes sigmoid without the log: the loss is the negative log-likelihood -log sigma(margin)",
             -torch.sigmoid(m)),
            ("takes 1 - sigmoid(margin): the loss is the negative log-likelihood -log sigma(margin)",
             1 - torch.sigmoid(m)),
        ]
        mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE, want)
        _fail(name, mistake or "the losses differ from -log sigma(r_chosen - r_rejected)",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"bradley_terry_loss passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE}·|expected|)")


def check_bradley_terry_gradient(gradient: Callable, hidden: bool = False) -> None:
    """Check ``gradient(margins) -> [B]``: d/dm of -log sigma(m), which is sigma(m) - 1, within ``ATOL_PROBS``.

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
        if _close(got, want, ATOL_PROBS):
            continue
        variants = [("the sign is flipped: the loss falls as the margin grows, so its derivative is negative",
                     1 - s),
                    ("the -1 is missing: d/dm [-log sigma(m)] = -(1 - sigma(m)) = sigma(m) - 1", s),
                    ("-sigma(m) is the derivative of -log sigma(-m), not of -log sigma(m): expected sigma(m) - 1", -s),
                    ("returns the loss -log sigma(m), not its derivative", -torch.nn.functional.logsigmoid(m.double()))]
        mistake = _first_match(got, variants, ATOL_PROBS)
        _fail(name, mistake or "differs from sigma(m) - 1", f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"bradley_terry_gradient passed {len(margins)} cases (tolerance {ATOL_PROBS})")


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
# conceptual questions: multiple choice, graded by letter, each wrong letter explained

@dataclass(frozen=True)
class Question:
    """A multiple-choice question: one letter per part (most have one part), and why each wrong letter is wrong."""
    title: str
    answer: str                          # the right letter of each part, in order, e.g. "B" or "BA"
    why_not: tuple[dict[str, str], ...]  # per part: wrong letter -> what is wrong with it
    parts: tuple[str, ...] = ("",)       # names of the parts, for messages when there are several
    letters: str = "ABCD"


QUESTIONS = {
    "why_pretraining_fails": Question(
        "why pretraining is not enough",
        answer="B",
        why_not=({
            "A": "a bigger model fits its corpus better, so it reproduces the corpus's mix of good and bad at least "
                 "as faithfully: scale does not change what is being imitated",
            "C": "at temperature 0 the model picks its most likely response, and where the corpus complies more "
                 "often than it refuses, the most likely response is compliance: sampling is not the cause",
            "D": "the corpus contains refusals (the samples above show some): the model can write them, it just "
                 "has no reason to prefer them",
        },),
    ),
    "why_filtering_fails": Question(
        "why data filtering is not enough",
        answer="C",
        why_not=({
            "A": "the filter removed no wrong answers and no fabrications at all, however many words it lists: "
                 "their words are the same as a good answer's, so no longer word list can catch them",
            "B": "the model keeps the vocabulary of every other document; and the filter did remove what it could "
                 "see (insults, harmful steps)",
            "D": "the filter left correct answers, refusals and 'i do not know' untouched: too little data is not "
                 "what went wrong",
        },),
    ),
    "helpful_vs_sycophantic": Question(
        "helpful vs sycophantic",
        answer="BA",
        parts=("the helpful response", "the sycophantic response"),
        why_not=({
            "A": "A agrees with the user's mistake: it pleases the user, but it is false, so it does not help",
            "C": "C is harmless but refuses a harmless question: evasive, not helpful",
            "D": "D claims not to know a sum the model can do: evasive (and not quite honest), not helpful",
        }, {
            "B": "B corrects the user politely with the true answer: that is the helpful response",
            "C": "C refuses; it is unhelpful but does not tell the user what they want to hear",
            "D": "D is unhelpful, but it does not tell the user what they want to hear",
        }),
    ),
    "why_kl_penalty": Question(
        "why the KL penalty is there",
        answer="D",
        why_not=({
            "A": "the penalty pulls the policy back toward pi_ref; it does not make gradients larger or training "
                 "faster",
            "B": "nothing guarantees that: with a reward that is wrong in places, the policy can still get worse "
                 "under the true reward; the penalty only limits how far it moves",
            "C": "pi* is a distribution for every beta > 0 (it is normalised by Z), and without the penalty the "
                 "optimum is still a distribution: all mass on the highest-reward responses",
        },),
    ),
    "beta_too_low": Question(
        "beta too low",
        answer="A",
        why_not=({
            "B": "that is beta too HIGH: a heavy penalty keeps pi* at pi_ref",
            "C": "the uniform policy is not what beta -> 0 gives: pi* concentrates on the best candidates, which "
                 "is as far from uniform as a policy gets",
            "D": "beta * log Z tends to the highest reward among the candidates pi_ref allows, not to 0",
        },),
    ),
    "beta_too_high": Question(
        "beta too high",
        answer="C",
        why_not=({
            "A": "that is beta too LOW: a weak penalty lets the policy collapse onto the highest reward",
            "B": "a large beta keeps each update small and close to pi_ref, which is stable; the danger is "
                 "learning too little, not diverging",
            "D": "the KL penalty makes responses that pi_ref finds unlikely more costly, not less",
        },),
    ),
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
            "C": "a comparison carries at most one bit; a 1-7 rating carries more, but the bits are noisier: each "
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
}


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


def check_why_pretraining_fails(answer) -> None:
    """Exercise: why a pretrained model misbehaves (one letter)."""
    check_choice("why_pretraining_fails", answer)


def check_why_filtering_fails(answer) -> None:
    """Exercise: why filtering the pretraining data is not enough (one letter)."""
    check_choice("why_filtering_fails", answer)


def check_helpful_vs_sycophantic(answer) -> None:
    """Exercise: which response is helpful and which sycophantic (two letters)."""
    check_choice("helpful_vs_sycophantic", answer)


def check_why_kl_penalty(answer) -> None:
    """Exercise: why the objective has a KL penalty (one letter)."""
    check_choice("why_kl_penalty", answer)


def check_beta_too_low(answer) -> None:
    """Exercise: what happens when beta is too low (one letter)."""
    check_choice("beta_too_low", answer)


def check_beta_too_high(answer) -> None:
    """Exercise: what happens when beta is too high (one letter)."""
    check_choice("beta_too_high", answer)


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


# ================================================================================================================
# lesson 04: the DPO loss and its metrics, the summed sequence log-prob, a DPO training loop, RLHF vs DPO
# (one contiguous section; tests in tests/test_checks_dpo.py)

def _logps_cases(hidden: bool) -> list[tuple[str, tuple[torch.Tensor, ...], float]]:
    """(case, the four summed log-probs [B], beta): ordinary values, pi = pi_ref, and a huge margin."""
    gen = torch.Generator().manual_seed(40)
    four = tuple(-12 * torch.rand(6, generator=gen) for _ in range(4))
    same = -5 * torch.rand(3, generator=gen)
    cases = [("ordinary log-probs, beta 0.5", four, 0.5),
             ("pi = pi_ref (policy and reference log-probs equal), beta 0.1", (same, same - 1, same, same - 1), 0.1),
             ("a rejected response 400 nats likelier under pi than pi_ref, beta 1",
              (torch.tensor([-3.0, -2.0]), torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -2.0]),
               torch.tensor([-401.0, -5.0])), 1.0)]
    if hidden:
        cases.append(("random log-probs, beta 2", tuple(-30 * torch.rand(16, generator=gen) for _ in range(4)), 2.0))
    return cases


def check_dpo_loss(dpo_loss: Callable, hidden: bool = False) -> None:
    """Check ``dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    -> (losses, chosen_rewards, rejected_rewards)``, each [B]: losses = -log sigma(beta h) with h the difference of
    the log-ratios, implicit rewards beta * (log pi - log pi_ref), detached. Within ``ATOL_VALUE`` +
    ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: chosen and rejected swapped (sign flipped), beta missing, the reference left out,
    log(sigmoid(x)) (infinite for a large margin), a mean instead of per-pair losses, rewards without beta,
    rewards that still carry gradient.
    """
    name = "dpo_loss"
    F = torch.nn.functional
    cases = _logps_cases(hidden)
    for case, four, beta in cases:
        args = tuple(t.clone().requires_grad_(i < 2) for i, t in enumerate(four))
        out = _call(dpo_loss, name, *args, beta)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            _fail(name, f"returns {type(out).__name__}; expected a tuple (losses, chosen_rewards, rejected_rewards)",
                  f"case: {case}")
        losses, chosen_rewards, rejected_rewards = out
        if type(losses) is torch.Tensor and losses.dim() == 0:
            _fail(name, "returns one loss: return the loss of every pair ([B]); the training loop takes the mean",
                  f"case: {case}")
        shape = four[0].shape
        got = _tensor_result(losses, name, shape, case)
        pc, pr, rc, rr = (t.double() for t in four)
        h = (pc - rc) - (pr - rr)
        want = -F.logsigmoid(beta * h)
        if not _close(got, want, ATOL_VALUE, RTOL_VALUE):
            if not bool(torch.isfinite(got).all()):
                _fail(name, "gives inf or nan for a large margin: log(sigmoid(x)) underflows once sigmoid(x) rounds "
                            "to 0; use torch.nn.functional.logsigmoid", f"case: {case}: expected {_fmt(want)}")
            variants = [
                ("chosen and rejected are swapped (the sign of h is flipped): the loss must be small when the "
                 "chosen response gained more probability than the rejected one", -F.logsigmoid(-beta * h)),
                ("beta is missing: the loss is -log sigma(beta * h), beta times the log-ratio difference",
                 -F.logsigmoid(h)),
                ("the reference is left out: h is (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))",
                 -F.logsigmoid(beta * (pc - pr))),
                ("divides by beta instead of multiplying", -F.logsigmoid(h / beta)),
                ("the minus sign is missing: the loss -log sigma(beta h) is >= 0", F.logsigmoid(beta * h)),
            ]
            mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE, want=want)
            _fail(name, mistake or "the losses differ from -log sigma(beta * h)",
                  f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
        for which, rewards, log_ratio in (("chosen", chosen_rewards, pc - rc), ("rejected", rejected_rewards, pr - rr)):
            got_r = _tensor_result(rewards, name, shape, case)
            if not _close(got_r, beta * log_ratio, ATOL_VALUE, RTOL_VALUE):
                hint = ("the implicit reward is beta * (log pi - log pi_ref): beta is missing"
                        if _close(got_r, log_ratio, ATOL_VALUE, RTOL_VALUE) else
                        f"the {which} implicit reward should be beta * (log pi - log pi_ref) of the {which} response")
                _fail(name, hint, f"case: {case}: expected {_fmt(beta * log_ratio)}, got {_fmt(got_r)}")
            if rewards.requires_grad:
                _fail(name, f"the {which} rewards carry gradient: they are for logging, so .detach() them (a metric "
                            f"must never become part of the loss by accident)", f"case: {case}")
    print(f"dpo_loss passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |expected|)")


METRIC_NAMES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def check_dpo_metrics(dpo_metrics: Callable, hidden: bool = False) -> None:
    """Check ``dpo_metrics(losses, chosen_rewards, rejected_rewards) -> dict`` of plain floats under the
    practitioners' names: the batch means of the loss, of each implicit reward and of the margin, and the accuracy
    (share of pairs with chosen reward > rejected reward, ties count as wrong). Within ``ATOL_VALUE``.

    Known mistakes it names: missing or renamed keys, tensors instead of floats, ties counted as right, the margin
    with its sign flipped, sums instead of means.
    """
    name = "dpo_metrics"
    cases = [("ordinary rewards", torch.tensor([0.7, 0.4, 0.1, 0.9]), torch.tensor([0.2, 0.6, 0.1, -0.4])),
             ("all rewards 0 (pi = pi_ref): every pair is a tie", torch.zeros(3), torch.zeros(3))]
    if hidden:
        gen = torch.Generator().manual_seed(41)
        cases.append(("random rewards", torch.randn(32, generator=gen), torch.randn(32, generator=gen)))
    for case, chosen, rejected in cases:
        losses = -torch.nn.functional.logsigmoid(chosen - rejected)
        out = _call(dpo_metrics, name, losses.clone(), chosen.clone(), rejected.clone())
        if not isinstance(out, dict):
            _fail(name, f"returns {type(out).__name__}; expected a dict", f"case: {case}")
        missing = [k for k in METRIC_NAMES if k not in out]
        if missing:
            _fail(name, f"the dict lacks {missing}: use the names a production library logs, exactly "
                        f"{list(METRIC_NAMES)}", f"case: {case}; got keys {list(out)}")
        for k in METRIC_NAMES:
            if not isinstance(out[k], float):
                _fail(name, f"{k!r} is a {type(out[k]).__name__}: return plain Python floats (.item()), so that "
                            f"logging never holds on to tensors", f"case: {case}")
        want = {"loss": losses.mean().item(), "rewards/chosen": chosen.mean().item(),
                "rewards/rejected": rejected.mean().item(),
                "rewards/accuracies": (chosen > rejected).float().mean().item(),
                "rewards/margins": (chosen - rejected).mean().item()}
        for k, v in want.items():
            got = out[k]
            if abs(got - v) <= ATOL_VALUE:
                continue
            n = len(chosen)
            if k == "rewards/accuracies" and abs(got - (chosen >= rejected).float().mean().item()) <= ATOL_VALUE:
                _fail(name, "counts ties as right: a pair is right only when chosen reward > rejected reward (at the "
                            "start every reward is 0, and the accuracy must be 0, not 1)", f"case: {case}")
            if k == "rewards/margins" and abs(got + v) <= ATOL_VALUE:
                _fail(name, "the margin's sign is flipped: it is chosen - rejected", f"case: {case}")
            if abs(got - n * v) <= ATOL_VALUE * n:
                _fail(name, f"{k!r} is a sum over the batch: report the mean", f"case: {case}")
            _fail(name, f"{k!r} is wrong", f"case: {case}: expected {v:.6g}, got {got:.6g}")
    print(f"dpo_metrics passed {len(cases)} cases (tolerance {ATOL_VALUE})")


def _sequence_case(gen: torch.Generator, prompt_lens: list[int], response_lens: list[int], V: int = 7):
    """Right-padded ids [B, T], logits [B, T, V] and the response mask (1 on response tokens incl. <eos>)."""
    T = max(p + r for p, r in zip(prompt_lens, response_lens)) + 1
    B = len(prompt_lens)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        ids[b, :p + r] = torch.randint(1, V, (p + r,), generator=gen)
        mask[b, p:p + r] = 1
    logits = 2 * torch.randn(B, T, V, generator=gen)
    return logits, ids, mask


def check_sequence_logprob(sequence_logprob: Callable, hidden: bool = False) -> None:
    """Check ``sequence_logprob(logits, input_ids, response_mask) -> [B]``: log pi(response | prompt), the **sum**
    over response tokens of log softmax(logits[t])[input_ids[t + 1]], with the mask selecting response targets.
    Within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: the mean instead of the sum, prompt tokens counted, padding counted, no shift to the
    next token, raw logits (or probabilities) instead of log-softmax, the mask applied to inputs instead of targets.
    """
    name = "sequence_logprob"
    gen = torch.Generator().manual_seed(42)
    shapes = [([3, 5, 2], [4, 2, 6]), ([4, 4], [3, 3])] + ([([2, 6, 3, 5], [5, 1, 4, 2])] if hidden else [])
    for prompt_lens, response_lens in shapes:
        logits, ids, mask = _sequence_case(gen, prompt_lens, response_lens)
        case = f"prompts of {prompt_lens} tokens, responses of {response_lens} tokens, right padded"
        args = (logits.clone(), ids.clone(), mask.clone())
        got = _tensor_result(_call(sequence_logprob, name, *args), name, torch.Size([len(prompt_lens)]), case)
        _inputs_unchanged(name, (logits, ids, mask), args, case)
        logp = torch.log_softmax(logits.double(), -1)
        per_token = logp[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)              # [B, T-1]
        target = mask[:, 1:].double()
        want = (per_token * target).sum(-1)
        if _close(got, want, ATOL_VALUE, RTOL_VALUE):
            continue
        real = (ids[:, 1:] != 0).double()
        unshifted = logp.gather(2, ids[:, :, None]).squeeze(2)                       # [B, T]
        raw = logits.double()[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
        probs = torch.softmax(logits.double(), -1)[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
        variants = [
            ("averages the token log-probs: log pi(y|x) is their sum (a mean makes long and short responses "
             "incomparable, and is not the probability of the response)", want / target.sum(-1)),
            ("counts the prompt tokens too: only response tokens (and <eos>) belong to log pi(response | prompt); "
             "multiply by the response mask", (per_token * real).sum(-1)),
            ("counts every position, padding included: multiply by the response mask", per_token.sum(-1)),
            ("does not shift: the logits at position t predict the token at t + 1, so compare logits[:, :-1] with "
             "input_ids[:, 1:] and use response_mask[:, 1:]", (unshifted * mask.double()).sum(-1)),
            ("applies the mask to the inputs instead of the targets: use response_mask[:, 1:] with the shifted "
             "targets", (per_token * mask[:, :-1].double()).sum(-1)),
            ("uses the raw logits: take log_softmax over the vocabulary first", (raw * target).sum(-1)),
            ("sums probabilities: take log_softmax, not softmax", (probs * target).sum(-1)),
        ]
        mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE)
        _fail(name, mistake or "the values differ from the summed log-probs of the response tokens",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"sequence_logprob passed {len(shapes)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |expected|)")


def _loop_setup():
    """A tiny model and two batches of clean preference pairs (correct answer over insult)."""
    from . import world
    from .checkpoint import default_config
    from .model import LanguageModel
    from .tokenizer import Tokenizer, collate_preferences
    import dataclasses
    torch.manual_seed(0)
    model = LanguageModel(dataclasses.replace(default_config(), n_layer=1, n_embd=32, n_head=2))
    model.eval()
    ps = [p for p in world.prompts("train") if p.category == "answerable"][:16]
    pairs = [world.PreferencePair(p.text, world.response(p, "correct"), world.response(p, "insult")) for p in ps]
    tok = Tokenizer()
    batches = [collate_preferences(pairs[i:i + 8], tok, model.cfg.block_size) for i in (0, 8)]
    return model, batches


def _reference_loop(policy, reference, batches, beta, lr, epochs, average=False, sign=1.0):
    """The course's loop, and the variants the check compares against."""
    from .model import sequence_logprobs

    def logps(model, b):
        lp = sequence_logprobs(model(b.input_ids, b.attention_mask), b.input_ids, b.response_mask)
        return lp / b.response_mask.sum(-1) if average else lp

    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        for batch in batches:
            with torch.no_grad():
                rc, rr = logps(reference, batch.chosen), logps(reference, batch.rejected)
            h = (logps(policy, batch.chosen) - rc) - (logps(policy, batch.rejected) - rr)
            loss = -torch.nn.functional.logsigmoid(sign * beta * h).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def check_dpo_training_loop(train_dpo_loop: Callable, hidden: bool = False) -> None:
    """Check ``train_dpo_loop(policy, reference, batches, beta, lr, epochs) -> list[float]`` on a tiny model: one
    Adam step per batch per epoch, the loss of every step returned, the reference frozen, the policy trained.
    The first three losses must match the course's loop within 1e-4 (same model, data and optimiser).

    Known mistakes it names: a single epoch where several are asked for, gradients reaching the reference (or the
    reference changing), the policy not starting from the reference, averaging token log-probs, chosen and
    rejected swapped, a loss that does not fall.
    """
    import copy
    name = "train_dpo_loop"
    settings = [(0.5, 3e-3, 3)] + ([(1.0, 1e-3, 2)] if hidden else [])
    for beta, lr, epochs in settings:
        case = f"a tiny model, 2 batches of 8 pairs, beta {beta}, lr {lr}, {epochs} epochs"
        reference, batches = _loop_setup()
        reference.requires_grad_(True)     # as a learner would get it: nothing frozen yet
        before = {k: v.clone() for k, v in reference.state_dict().items()}
        policy = copy.deepcopy(reference)
        out = _call(train_dpo_loop, name, policy, reference, batches, beta, lr, epochs)
        if not isinstance(out, (list, tuple)) or not all(isinstance(x, float) for x in out):
            _fail(name, "should return the list of per-step losses as Python floats (loss.item())", f"case: {case}")
        losses = list(out)
        if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in reference.parameters()):
            _fail(name, "gradients reach the reference model: compute its log-probs under torch.no_grad() (the "
                        "reference must stay frozen)", f"case: {case}")
        if any(not torch.equal(v, before[k]) for k, v in reference.state_dict().items()):
            _fail(name, "the reference model changed: only the policy's parameters go to the optimiser",
                  f"case: {case}")
        if len(losses) == len(batches) and epochs > 1:
            _fail(name, f"ran a single epoch: {len(losses)} steps for {epochs} epochs of {len(batches)} batches; "
                        f"loop over the epochs (one epoch is often too few for DPO)", f"case: {case}")
        if len(losses) != epochs * len(batches):
            _fail(name, f"returned {len(losses)} losses; expected one per step, {epochs} x {len(batches)}",
                  f"case: {case}")
        if abs(losses[0] - math.log(2)) > 1e-4:
            _fail(name, f"the first loss is {losses[0]:.5f}, not log 2 = {math.log(2):.5f}: at the first step the "
                        f"policy equals the reference, so every implicit reward is 0 (is the policy trained from a "
                        f"copy of the reference, and is the loss -log sigma(beta h) averaged over the batch?)",
                  f"case: {case}")
        if all(abs(x - losses[0]) < 1e-6 for x in losses):
            _fail(name, "the loss does not fall at all: does the optimiser step the policy's parameters (zero_grad, "
                        "backward, step, in that order)?", f"case: {case}: losses {_fmt(losses)}")
        want = _reference_loop(_loop_setup()[0], _loop_setup()[0].requires_grad_(False), batches, beta, lr, 2)[:3]
        if all(abs(a - b) <= 1e-4 for a, b in zip(losses[:3], want)):
            if not losses[-1] < losses[0] - 0.05:
                _fail(name, "the loss does not fall: does the optimiser get the policy's parameters?",
                      f"case: {case}: losses {losses}")
            continue
        variants = [
            ("averages the token log-probs: DPO uses log pi(y|x), the sum over response tokens",
             dict(average=True)),
            ("chosen and rejected are swapped (the sign of h is flipped): the loss rises as the model learns",
             dict(sign=-1.0)),
        ]
        for mistake, kw in variants:
            other = _reference_loop(_loop_setup()[0], _loop_setup()[0].requires_grad_(False), batches, beta, lr, 2,
                                    **kw)[:3]
            if all(abs(a - b) <= 1e-4 for a, b in zip(losses[:3], other)):
                _fail(name, mistake, f"case: {case}: first losses {_fmt(losses[:3])}")
        _fail(name, "the first losses differ from the course's loop (Adam on the policy's parameters, one step per "
                    "batch, loss = mean over the batch of -log sigma(beta h) with summed log-probs)",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(losses[:3])}")
    print(f"train_dpo_loop passed {len(settings)} case(s) (first losses within 1e-4 of the course's loop)")


QUESTIONS.update({
    "dpo_models_held": Question(
        "what DPO needs during training",
        answer="C",
        why_not=({
            "A": "that is RLHF with PPO: DPO has no reward model and no value function",
            "B": "DPO's implicit reward is beta * log(pi / pi_ref): without the reference there is nothing to "
                 "measure the policy against (reference-free variants such as SimPO and ORPO change the loss)",
            "D": "DPO never samples from the policy during training: it learns from a fixed set of pairs",
        },),
    ),
    "when_rlhf_wins": Question(
        "when RLHF beats DPO",
        answer="A",
        why_not=({
            "B": "a fixed set of good comparisons is DPO's home ground: it fits them directly, with no reward model "
                 "or RL loop to tune",
            "C": "DPO needs fewer models in memory (no reward model, no value function): a small budget favours DPO",
            "D": "both use a KL-style anchor to the reference; DPO's beta plays the role of RLHF's KL coefficient",
        },),
    ),
    "dpo_degenerates": Question(
        "what to do when DPO's samples degrade",
        answer="D",
        why_not=({
            "A": "the validation loss already looked fine while the samples broke: the loss does not see it, so "
                 "training longer on it makes things worse",
            "B": "a smaller beta makes implicit rewards cheaper and moves the policy further from the reference: "
                 "the failure gets worse",
            "C": "the learning rate changes how fast, not where the loss leads: the same degeneration comes later",
        },),
    ),
})


def check_dpo_models_held(answer) -> None:
    """Exercise: what DPO keeps in memory during training (one letter)."""
    check_choice("dpo_models_held", answer)


def check_when_rlhf_wins(answer) -> None:
    """Exercise: when RLHF is the better choice (one letter)."""
    check_choice("when_rlhf_wins", answer)


def check_dpo_degenerates(answer) -> None:
    """Exercise: the fixes for DPO's degeneration at small beta (one letter)."""
    check_choice("dpo_degenerates", answer)


def check_dpo_target_beta(target_beta: Callable) -> None:
    """Check ``target_beta(tau, beta_dpo) -> float``: DPO on Bradley-Terry labels with noise tau targets the
    KL-regularised optimum at beta = tau * beta_dpo. Exact to 1e-9.

    Known mistakes it names: beta_dpo alone (tau forgotten), beta_dpo / tau, tau / beta_dpo.
    """
    name = "target_beta"
    for tau, beta_dpo in ((0.5, 0.2), (2.0, 0.1), (0.25, 4.0)):
        got = _call(target_beta, name, tau, beta_dpo)
        if not isinstance(got, (int, float)):
            _fail(name, f"returns a {type(got).__name__}; expected a number")
        want = tau * beta_dpo
        if abs(got - want) <= 1e-9:
            continue
        for mistake, value in (("forgets the annotator's noise tau: the labels' log-odds are (r_1 - r_2) / tau",
                                beta_dpo),
                               ("divides by tau: beta_dpo * h = (r_1 - r_2) / tau, so r = tau * beta_dpo * h + ...",
                                beta_dpo / tau),
                               ("inverts the ratio", tau / beta_dpo)):
            if abs(got - value) <= 1e-9:
                _fail(name, mistake, f"case: tau {tau}, beta_dpo {beta_dpo}: expected {want}, got {got}")
        _fail(name, "wrong value", f"case: tau {tau}, beta_dpo {beta_dpo}: expected {want}, got {got}")
    print("target_beta passed 3 cases (exact)")
