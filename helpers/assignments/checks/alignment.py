"""Lesson 01's checks: a failure rate with its Wilson interval, the optimal policy, the KL-regularised
objective and its optimum beta log Z; the conceptual questions on why pretraining is not enough and on the KL penalty.
Tests: tests/test_checks.py.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ... import optimal
from ...evaluate import wilson_interval
from .base import (ATOL_PROBS, ATOL_RATE, ATOL_VALUE, QUESTIONS, Question, RTOL_VALUE, Z95, _Case, _call,
                   _close, _fail, _first_match, _fmt, _inputs_unchanged, _random_case, _tensor_result,
                   check_choice)

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


QUESTIONS.update({
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
})


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
