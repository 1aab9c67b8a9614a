"""Lesson 05's checks: group baselines without a value model (GRPO's and RLOO's advantages), Best-of-N's KL, reading
the controlled comparison (the fraction of the optimum at a policy's KL, the method nearest the frontier), choosing a
method for a situation, and over-optimisation in the comparison's runs. Tests: tests/test_checks_choosing.py.

The references are the course's: :func:`helpers.grpo.grpo_advantages` and :func:`helpers.grpo.rloo_advantages`
(computed in float64), :func:`helpers.optimal.best_of_n_policy` for the exact Best-of-N KL, and
:func:`helpers.comparison.fraction_of_optimum` on the committed comparison (``helpers/artifacts/comparison.json``,
the ``"full"`` setting), whose runs also give the over-optimisation cases.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from .base import ATOL_VALUE, RTOL_VALUE, _call, _close, _fail, _first_match, _fmt, _inputs_unchanged, _tensor_result

TRAINED = ("ppo", "dpo", "grpo", "rloo")                    # the comparison's methods that change the weights
METHODS_05 = ("best_of_n",) + TRAINED
TOL_FRACTION = 1e-6     # fraction of the optimum: the same float64 arithmetic as the reference, up to its order
TOL_KL_BON = 1e-6       # Best-of-N's KL in nats


def _comparison() -> dict:
    from ...comparison import load_comparison
    return load_comparison("full")


# ----------------------------------------------------------------------------------------------------------------
# exercise: GRPO's group-relative advantages

GRPO_EPS = 1e-4


def _group_cases(hidden: bool, seed: int) -> list[tuple[str, torch.Tensor]]:
    """(case, rewards [P, G] float32): P != G, so that an axis mixed up shows; groups whose rewards are all equal
    (one of them a value whose float32 mean is not exact); 0/1 verifiable rewards; a group that barely differs."""
    gen = torch.Generator().manual_seed(seed)
    ordinary = torch.randn(3, 5, generator=gen)
    verifiable = (torch.rand(4, 8, generator=gen) < 0.4).float()
    verifiable[0], verifiable[1] = 0.0, 1.0                       # all wrong, all right
    verifiable[2] = torch.tensor([0, 0, 0, 1, 0, 0, 0, 0.])       # one right answer in eight
    flat = torch.tensor([[0.7] * 8, [1.0, -1.0, 0.5, 0.0, 2.0, 0.3, -0.2, 1.0], [-0.3] * 8])
    close = torch.tensor([[0.500, 0.501, 0.499, 0.5005, 0.5, 0.5, 0.502, 0.498],
                          [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
    cases = [("ordinary rewards, P = 3 prompts, G = 5 responses each", ordinary),
             ("0/1 verifiable rewards, G = 8: a group all wrong, one all right, one with a single right answer",
              verifiable),
             ("groups whose rewards are all equal (0.7 eight times, -0.3 eight times) beside an ordinary one", flat),
             ("a group whose rewards differ by about 0.001 (its std is near eps) beside a 0/1 group", close)]
    if hidden:
        cases.append(("random rewards, P = 16, G = 8", 3 * torch.randn(16, 8, generator=gen) + 1))
        cases.append(("rewards around 100, P = 4, G = 6", 100 + torch.randn(4, 6, generator=gen)))
    return cases


def _flat_rows(r: torch.Tensor) -> torch.Tensor:
    return r.amax(1) == r.amin(1)                                                         # [P]


def _std(r: torch.Tensor, dim: int, correction: int = 1) -> torch.Tensor:
    return r.std(dim, keepdim=True, correction=correction) if r.shape[dim] > correction else torch.zeros_like(r)


def check_grpo_advantages(grpo_advantages: Callable, hidden: bool = False) -> None:
    """Check ``grpo_advantages(rewards [P, G]) -> advantages [P, G]``: (r_i - mean of the group) / (std of the
    group + 1e-4), the std unbiased (G - 1, torch's default), and exactly 0 for a group whose rewards are all equal.
    Within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: the mean or the std over the wrong axis (over prompts, not over the group), both over the
    whole batch, the population std, eps missing or inside the square root, no division by the std (Dr. GRPO), the
    variance instead of the std, the sign flipped, RLOO's leave-one-out baseline instead, no zero-std guard (nan, or
    rounding error divided by eps, for a group of equal rewards), the input changed in place.
    """
    from ...grpo import grpo_advantages as reference, rloo_advantages
    name = "grpo_advantages"
    eps = GRPO_EPS
    cases = _group_cases(hidden, seed=50)
    for case, rewards in cases:
        passed = rewards.clone()
        got = _tensor_result(_call(grpo_advantages, name, passed), name, rewards.shape, case)
        _inputs_unchanged(name, (rewards,), (passed,), case)
        r = rewards.double()
        want = reference(r)
        flat = _flat_rows(r)
        rows = ~flat
        if not _close(got[rows], want[rows], ATOL_VALUE, RTOL_VALUE):
            m1, s1 = r.mean(1, keepdim=True), _std(r, 1)
            m0, s0 = r.mean(0, keepdim=True), _std(r, 0)
            variants = [
                ("the std is over the wrong axis: over the prompts (dim 0), not over each prompt's group of G "
                 "responses (dim 1)", (r - m1) / (s0 + eps)),
                ("the mean is over the wrong axis: over the prompts (dim 0), not over each prompt's group (dim 1)",
                 (r - m0) / (s1 + eps)),
                ("the mean and the std are over the wrong axis: over the prompts (dim 0), not over each group (dim 1)",
                 (r - m0) / (s0 + eps)),
                ("the mean and the std are over the whole batch: GRPO compares each response with its own group, the "
                 "other responses to the same prompt", (r - r.mean()) / (r.std() + eps)),
                ("uses the population std (dividing by G): the course, like TRL, uses the unbiased std (G - 1), "
                 "torch's default", (r - m1) / (_std(r, 1, 0) + eps)),
                ("eps is missing: divide by std + eps (1e-4), or a group whose rewards barely differ gets huge "
                 "advantages", (r - m1) / s1),
                ("eps is inside the square root: GRPO divides by std + eps", (r - m1) / (s1 ** 2 + eps).sqrt()),
                ("does not divide by the group's std: that is Dr. GRPO (Liu et al. 2025), not GRPO", r - m1),
                ("divides by the variance instead of the std", (r - m1) / (s1 ** 2 + eps)),
                ("the sign is flipped: a reward above its group's mean must get a positive advantage",
                 (m1 - r) / (s1 + eps)),
                ("computes RLOO's leave-one-out advantage, not GRPO's: (r - group mean) / (group std + eps)",
                 rloo_advantages(r)),
            ]
            sub = [(m, v[rows]) for m, v in variants]
            mistake = _first_match(got[rows], sub, ATOL_VALUE, RTOL_VALUE, want=want[rows])
            _fail(name, mistake or "the advantages differ from (r - mean of the group) / (std of the group + eps)",
                  f"case: {case}: expected {_fmt(want[rows])}, got {_fmt(got[rows])}")
        if bool(flat.any()):
            if not bool(torch.isfinite(got[flat]).all()):
                _fail(name, "no zero-std guard: a group whose rewards are all equal gives nan (0 / 0); its std is 0, "
                            "so add eps to the std and give such a group advantages of exactly 0",
                      f"case: {case}: expected zeros, got {_fmt(got[flat])}")
            if not _close(got[flat], want[flat], ATOL_VALUE):
                _fail(name, "no zero-std guard: a group whose rewards are all equal carries no signal, but its mean's "
                            "float32 rounding error divided by eps gives nonzero advantages; give such a group "
                            "advantages of exactly 0 (where its max equals its min)",
                      f"case: {case}: expected zeros, got {_fmt(got[flat])}")
    print(f"grpo_advantages passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |expected|)")


# ----------------------------------------------------------------------------------------------------------------
# exercise: RLOO's leave-one-out advantages

def _shifted(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A constant added to each group (10, -3, 100, ...): the shifts, and the shifted rewards."""
    shifts = torch.tensor([10.0, -3.0, 100.0, 0.5, -20.0, 7.0] * 4)[:rewards.shape[0], None]
    return shifts, rewards + shifts


def check_rloo_advantages(rloo_advantages: Callable, hidden: bool = False) -> None:
    """Check ``rloo_advantages(rewards [P, G]) -> advantages [P, G]``: r_i minus the mean of the *other* G - 1
    rewards of its group (Ahmadian et al. 2024). Within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected| (1e-3 absolute
    on the case with rewards near 100). Each case is run twice, the second time with a constant added to each group.

    Known mistakes it names: the sample's own reward left in its baseline (r_i - the mean of all G, (G - 1)/G times
    the right advantage), the others' sum divided by G or not divided, the baseline over the wrong axis, the sign
    flipped, GRPO's scaled advantage instead; and, for other wrong answers, a group whose advantages do not sum to 0,
    or that change when a constant is added to the group's rewards.
    """
    from ...grpo import grpo_advantages, rloo_advantages as reference
    name = "rloo_advantages"
    cases = [(c, r) for c, r in _group_cases(hidden, seed=51) if "near eps" not in c]
    for case, rewards in cases:
        shifts, moved = _shifted(rewards)
        runs = []
        for what, x in ((case, rewards), (f"{case}, with {_fmt(shifts.flatten())} added to the groups", moved)):
            passed = x.clone()
            got = _tensor_result(_call(rloo_advantages, name, passed), name, x.shape, what)
            _inputs_unchanged(name, (x,), (passed,), what)
            runs.append((what, x, got))
        outs = [got for _, _, got in runs]
        for what, x, got in runs:
            r = x.double()
            want = reference(r)
            atol = max(ATOL_VALUE, 1e-3 if float(r.abs().max()) > 50 else 0.0)   # float32 rounding of r ~ 100
            if _close(got, want, atol, RTOL_VALUE):
                continue
            G, P = r.shape[1], r.shape[0]
            total, total0 = r.sum(1, keepdim=True), r.sum(0, keepdim=True)
            variants = [
                (f"the sample's own reward is left in its baseline: r_i - mean of all G rewards is (G - 1)/G = "
                 f"{G - 1}/{G} times the leave-one-out advantage; the baseline is the mean of the other G - 1",
                 r - total / G),
                ("divides the others' sum by G: their mean is the sum of the other G - 1 rewards divided by G - 1",
                 r - (total - r) / G),
                ("subtracts the others' sum, not their mean: divide it by G - 1", r - (total - r)),
                ("the baseline is over the wrong axis: the other responses to the same prompt (dim 1), not the same "
                 "response slot of the other prompts (dim 0)", r - (total0 - r) / max(P - 1, 1)),
                ("the sign is flipped: a reward above the others' mean must get a positive advantage",
                 (total - r) / (G - 1) - r),
                ("computes GRPO's advantage (divided by the group's std), not RLOO's: r_i - the mean of the others",
                 grpo_advantages(r)),
            ]
            mistake = _first_match(got, variants, atol, RTOL_VALUE, want=want)
            detail = f"case: {what}: expected {_fmt(want)}, got {_fmt(got)}"
            if mistake:
                _fail(name, mistake, detail)
            sums = got.sum(1)
            if bool(torch.isfinite(sums).all()) and not _close(sums, torch.zeros_like(sums), 10 * atol):
                _fail(name, f"the advantages of a group do not sum to 0 (row sums {_fmt(sums)}): with the leave-one-"
                            f"out baseline they always do, since each reward is compared with the others' mean", detail)
            if not _close(outs[1], outs[0], 10 * atol):
                _fail(name, "adding the same constant to every reward of a group changes its advantages: a baseline "
                            "made of the group's other rewards moves with them, so the advantages must not change",
                      detail)
            _fail(name, "the advantages differ from r_i - (sum of the other G - 1 rewards) / (G - 1)", detail)
    print(f"rloo_advantages passed {len(cases)} cases, each also with a constant added to every group (tolerance "
          f"{ATOL_VALUE} + {RTOL_VALUE} * |expected|)")


# ----------------------------------------------------------------------------------------------------------------
# exercise: Best-of-N's KL

def _number(out, name: str, case: str) -> float:
    """A Python number (or a one-element tensor) as a float; anything else fails with its type named."""
    if type(out) is torch.Tensor and out.numel() == 1:
        out = float(out)
    if isinstance(out, bool) or type(out) not in (int, float):
        _fail(name, f"returns {type(out).__name__} {out!r}; expected a Python number", f"case: {case}")
    if not math.isfinite(out):
        _fail(name, f"returns {out}; expected a finite number", f"case: {case}")
    return float(out)


def exact_best_of_n_kl(ref_probs: torch.Tensor, n: int) -> float:
    """KL(Best-of-n || pi_ref) of one prompt's candidates, exact, with distinct scores (the candidates' order)."""
    from ...optimal import best_of_n_policy, kl_divergence
    scores = torch.arange(len(ref_probs), dtype=torch.float64)
    return float(kl_divergence(best_of_n_policy(ref_probs, scores, n), ref_probs))


def check_best_of_n_kl(best_of_n_kl: Callable, hidden: bool = False) -> None:
    """Check ``best_of_n_kl(n) -> float``: log n - (n - 1)/n nats, within ``TOL_KL_BON``; then set it beside the exact
    KL of :func:`helpers.optimal.best_of_n_policy` on two distributions (printed): on 4 candidates the formula is
    strictly above the exact KL, on 1,024 it is within 1e-3 of it (the formula is the bound, Beirami et al. 2024,
    tight when no candidate holds much probability).

    Known mistakes it names: log n alone, the sign of (n - 1)/n flipped, the whole formula negated, (n - 1) not
    divided by n, log(n - 1), 1/n in place of (n - 1)/n.
    """
    name = "best_of_n_kl"
    ns = [1, 2, 3, 4, 8, 16, 100]
    if hidden:
        ns += [5, 7, 31, 1000, 4096]
    for n in ns:
        case = f"n = {n}"
        got = _number(_call(best_of_n_kl, name, n), name, case)
        want = math.log(n) - (n - 1) / n
        if abs(got - want) <= TOL_KL_BON:
            continue
        variants = [
            ("is log n alone: drawing n and keeping the best moves less than that; the KL is log n - (n - 1)/n",
             math.log(n)),
            ("adds (n - 1)/n: the KL is log n MINUS (n - 1)/n", math.log(n) + (n - 1) / n),
            ("has the sign flipped: the KL is log n - (n - 1)/n, which is >= 0", (n - 1) / n - math.log(n)),
            ("forgets to divide n - 1 by n: the KL is log n - (n - 1)/n", math.log(n) - (n - 1)),
            ("uses 1/n in place of (n - 1)/n: the KL is log n - (n - 1)/n", math.log(n) - 1 / n),
            ("uses log(n - 1): the KL is log n - (n - 1)/n", math.log(max(n - 1, 1e-300)) - (n - 1) / n),
        ]
        for mistake, value in variants:
            if abs(got - value) <= TOL_KL_BON:
                _fail(name, mistake, f"case: {case}: expected {want:.6f}, got {got:.6f}")
        _fail(name, "is not log n - (n - 1)/n", f"case: {case}: expected {want:.6f}, got {got:.6f}")
    small = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    fine = torch.softmax(torch.randn(1024, generator=torch.Generator().manual_seed(52), dtype=torch.float64) * 0.3, 0)
    formula = math.log(4) - 3 / 4
    exact_small, exact_fine = exact_best_of_n_kl(small, 4), exact_best_of_n_kl(fine, 4)
    assert exact_small < formula - 0.01 and abs(exact_fine - formula) < 1e-3, (exact_small, exact_fine, formula)
    print(f"best_of_n_kl passed {len(ns)} cases (within {TOL_KL_BON} nats). Best-of-4: the formula gives "
          f"{formula:.4f}; the exact KL is {exact_small:.4f} on 4 candidates and {exact_fine:.4f} on 1,024: an "
          f"upper bound, tight when no candidate holds much probability")


# ----------------------------------------------------------------------------------------------------------------
# exercise: the fraction of the optimum at a policy's KL

SMALL_FRONTIER = [{"beta": math.inf, "kl": 0.0, "reward": -0.5}, {"beta": 1.0, "kl": 0.25, "reward": 0.0},
                  {"beta": 0.5, "kl": 1.0, "reward": 0.5}, {"beta": 0.1, "kl": 2.0, "reward": 0.8},
                  {"beta": 0.0, "kl": 3.0, "reward": 0.9}]


def _interpolate(kl: float, frontier: list[dict], how: str) -> float:
    """The frontier's reward at ``kl`` the wrong ways: the grid point below, the nearest one, or extrapolated."""
    kls, rs = [p["kl"] for p in frontier], [p["reward"] for p in frontier]
    if how == "extrapolated" and kl > kls[-1]:
        return rs[-1] + (kl - kls[-1]) * (rs[-1] - rs[-2]) / (kls[-1] - kls[-2])
    if kl <= kls[0] or kl >= kls[-1]:
        return rs[0] if kl <= kls[0] else rs[-1]
    i = next(i for i in range(1, len(kls)) if kls[i] >= kl)
    if how == "below":
        return rs[i - 1]
    if how == "above":
        return rs[i]
    return rs[i] if kls[i] - kl < kl - kls[i - 1] else rs[i - 1]


_NO_INTERPOLATION = ("does not interpolate: it reads one of the frontier's grid points (the one below the KL, above it, "
                     "or the nearest); interpolate linearly between the two points around the KL")


def _fraction_cases(hidden: bool) -> list[tuple[str, float, float, list[dict]]]:
    """(case, reward, kl, frontier): a small frontier where each way of reading it gives another number, then every
    point the committed comparison placed on the enumerable view."""
    cases = [("a small frontier, a policy between two of its points", 0.2, 0.8, SMALL_FRONTIER),
             ("a small frontier, a policy between two of its points, nearer the lower one", 0.6, 1.1, SMALL_FRONTIER),
             ("a small frontier, a policy exactly at one of its points", 0.2, 1.0, SMALL_FRONTIER),
             ("a small frontier, a policy with a KL beyond its last point", 0.7, 4.0, SMALL_FRONTIER),
             ("a small frontier, a policy below pi_ref's reward", -0.7, 0.25, SMALL_FRONTIER),
             ("a small frontier, a policy at KL 0 (pi_ref itself)", -0.5, 0.0, SMALL_FRONTIER)]
    from ...comparison import enumerable_points
    result = _comparison()
    points = enumerable_points(result)
    if not hidden:
        points = [p for p in points if not p["name"].startswith("best_of_n_curve")]
    for p in points:
        cases.append((f"the committed comparison's point {p['name']} (the full setting's frontier, "
                      f"{len(result['frontier'])} points)", p["reward"], p["kl"], result["frontier"]))
    return cases


def check_fraction_of_optimum(fraction_of_optimum: Callable, hidden: bool = False) -> None:
    """Check ``fraction_of_optimum(reward, kl, frontier) -> float``: (R - R_ref) / (R*(KL) - R_ref) with R*(KL) the
    frontier's reward at ``kl`` interpolated linearly between its two nearest points (its last reward beyond its last
    point) and R_ref its first point's reward; 0 where the optimum gains nothing (KL at or below the first point's).
    Against :func:`helpers.comparison.fraction_of_optimum` on a small frontier and on every point of the committed
    comparison, within ``TOL_FRACTION``.

    Known mistakes it names: no interpolation (the grid point below, above, or the nearest), extrapolation beyond the
    frontier's last point, R / R*(KL) (R_ref not subtracted), R_ref subtracted above the line only, the highest
    reward on the frontier instead of the reward at the same KL, the share left (1 - fraction), the gap R*(KL) - R,
    a division by zero at KL 0.
    """
    from ...comparison import fraction_of_optimum as reference, frontier_reward
    name = "fraction_of_optimum"
    cases = _fraction_cases(hidden)
    for case, reward, kl, frontier in cases:
        detail_case = f"{case}: reward {reward:+.6f}, KL {kl:.6f}"
        try:
            out = _call(fraction_of_optimum, name, reward, kl, copy.deepcopy(frontier))
        except ZeroDivisionError:
            _fail(name, "divides by zero where the optimum gains nothing (at KL 0 R*(KL) = R_ref): return 0 there",
                  f"case: {detail_case}")
        want = reference(reward, kl, frontier)
        if isinstance(out, float) and not math.isfinite(out) and want == 0.0:
            _fail(name, f"returns {out} where the optimum gains nothing (at KL 0 R*(KL) = R_ref): return 0 there",
                  f"case: {detail_case}")
        got = _number(out, name, detail_case)
        if abs(got - want) <= TOL_FRACTION:
            continue
        ref = frontier[0]["reward"]
        best = max(p["reward"] for p in frontier)
        at = frontier_reward(kl, frontier)

        def share(r_star: float) -> float:
            return 0.0 if r_star - ref <= 1e-12 else (reward - ref) / (r_star - ref)
        variants = [
            *[(_NO_INTERPOLATION, share(_interpolate(kl, frontier, how))) for how in ("below", "above", "nearest")],
            ("extrapolates beyond the frontier's last point: past it, R*(KL) is the last point's reward (the highest "
             "any policy can reach)", share(_interpolate(kl, frontier, "extrapolated"))),
            ("divides by the frontier's highest reward, not its reward at the policy's KL: the fraction compares "
             "with the best policy at the SAME KL", share(best)),
            ("is R / R*(KL): subtract pi_ref's reward (the frontier's first point) above and below",
             reward / at if at else math.nan),
            ("subtracts pi_ref's reward from R only: subtract it from R*(KL) too, (R - R_ref) / (R*(KL) - R_ref)",
             (reward - ref) / at if at else math.nan),
            ("is the share left, 1 - fraction: report the share gained, (R - R_ref) / (R*(KL) - R_ref)", 1 - want),
            ("is the gap below the frontier, R*(KL) - R: report the share (R - R_ref) / (R*(KL) - R_ref)",
             at - reward),
        ]
        for mistake, value in variants:
            if math.isfinite(value) and abs(got - value) <= TOL_FRACTION:
                _fail(name, mistake, f"case: {detail_case}: expected {want:.6f}, got {got:.6f}")
        _fail(name, "is not (R - R_ref) / (R*(KL) - R_ref) with R*(KL) interpolated on the frontier",
              f"case: {detail_case}: expected {want:.6f}, got {got:.6f}")
    print(f"fraction_of_optimum passed {len(cases)} cases (within {TOL_FRACTION})")


# ----------------------------------------------------------------------------------------------------------------
# question: which trained method is nearest the frontier at its KL

def check_nearest_frontier(answer) -> None:
    """Exercise: the trained method (PPO, DPO, GRPO or RLOO) whose chosen run is nearest the exact frontier at its
    own KL, in the committed comparison: the largest fraction of the optimum. The answer is a method's name, as in
    the comparison (``"dpo"``), or a function returning it.

    Known mistakes it names: the method with the highest gold reward (at a larger KL), the one with the smallest KL,
    Best-of-N (it trains nothing), a name that is not a method.
    """
    from ...comparison import summary
    name = "nearest_frontier"
    got = _call(answer, name) if callable(answer) else answer
    if not isinstance(got, str):
        _fail(name, f"expected a method's name as a string, one of {', '.join(TRAINED)}; got {got!r}")
    got = got.strip().lower()
    table = summary(_comparison())
    if got == "best_of_n":
        _fail(name, "Best-of-N trains nothing: the question asks for the trained method (PPO, DPO, GRPO or RLOO) "
                    "nearest the frontier")
    if got not in TRAINED:
        _fail(name, f"{got!r} is not one of the comparison's trained methods: {', '.join(TRAINED)}")
    fraction = {m: table[m]["fraction_of_optimum"] for m in TRAINED}
    right = max(TRAINED, key=fraction.get)
    if got == right:
        print(f"nearest_frontier: correct ({right}: {fraction[right]:.1%} of what the optimum gains at its KL)")
        return
    detail = "fractions of the optimum: " + ", ".join(f"{m} {fraction[m]:.3f}" for m in TRAINED)
    if got == max(TRAINED, key=lambda m: table[m]["enumerable_reward"]):
        _fail(name, f"{got} has the highest gold reward, but at a larger KL: nearest the frontier means the largest "
                    f"share of what the optimum gains at the SAME KL (the fraction of the optimum)", detail)
    if got == min(TRAINED, key=lambda m: table[m]["enumerable_kl"]):
        _fail(name, f"{got} stays closest to pi_ref (the smallest KL), which is not the same as closest to the "
                    f"frontier at its KL: compare the fractions of the optimum", detail)
    _fail(name, f"{got} reaches {fraction[got]:.1%} of what the optimum gains at its KL; {right} reaches "
                f"{fraction[right]:.1%}", detail)


# ----------------------------------------------------------------------------------------------------------------
# exercise: choosing a method for a situation

SITUATIONS = {
    "offline_pairs": "8,000 preference pairs labelled last year, no reward model, nobody to label more, and one GPU "
                     "for an afternoon",
    "no_training": "a reward model you trust, a model you cannot fine-tune (its weights are not yours), and a few "
                   "extra samples per request are affordable",
    "checkable_answers": "training problems whose answers a program checks (sums, unit tests), no preference labels, "
                         "and memory for two copies of the model (the policy and pi_ref) and nothing else",
    "custom_reward": "a reward you define and keep changing (a safety score plus a length penalty), fresh prompts "
                     "every week, compute to train online, and serving must cost one sample per request",
}
CHOICES = {"offline_pairs": ("dpo",), "no_training": ("best_of_n",), "checkable_answers": ("grpo", "rloo"),
           "custom_reward": ("ppo", "grpo", "rloo")}
_WHY_NOT = {
    "offline_pairs": {
        "best_of_n": "Best-of-N needs a reward model to choose among samples, and there is none (training one is the "
                     "first step of the RLHF route, more than an afternoon)",
        "ppo": "PPO needs a reward model to score its fresh samples and a value model beside it (four models in "
               "memory); with fixed pairs and an afternoon, learn from the pairs directly",
        "grpo": "GRPO needs a reward for the fresh samples it draws; preference pairs are not one, and no reward "
                "model or checker is at hand",
        "rloo": "RLOO needs a reward for the fresh samples it draws; preference pairs are not one, and no reward "
                "model or checker is at hand",
    },
    "no_training": {m: f"{m.upper()} changes the model's weights, and these weights are not yours to train: choose at "
                       f"inference, with the reward model" for m in TRAINED},
    "checkable_answers": {
        "dpo": "DPO learns from preference pairs, and there are none: the checker is a reward that scores fresh "
               "samples, which is what online RL uses (RL with verifiable rewards)",
        "ppo": "PPO's value model is a third copy of the model, and memory holds two: GRPO and RLOO take their "
               "baseline from a group of samples instead",
        "best_of_n": "Best-of-N needs a scorer at inference for every new question, and the checker only knows the "
                     "training problems' answers: train the model with the checker instead",
    },
    "custom_reward": {
        "dpo": "DPO learns from a fixed set of pairs: every change to the reward would need new pairs labelled; RL "
               "optimises the reward as you define it, on the policy's own fresh samples",
        "best_of_n": "Best-of-N costs N samples and N reward calls per request, and serving must cost one",
    },
}


def check_choose_method(answer) -> None:
    """Exercise: a method for each situation of :data:`SITUATIONS`, as a dict {situation: method} (or a function
    returning it), each method one of :data:`METHODS_05`. Offline pairs and little compute: DPO; a reward model and
    no training: Best-of-N; a checker and memory for two models: GRPO or RLOO (verifiable rewards); a reward of your
    own, changing, online, one sample per request: RL (PPO, GRPO or RLOO).

    Known mistakes it names: each wrong method for each situation, with why it does not fit; missing situations,
    unknown method names.
    """
    name = "choose_method"
    got = _call(answer, name) if callable(answer) else answer
    if not isinstance(got, dict):
        _fail(name, f"returns a {type(got).__name__}; expected a dict {{situation: method}} with the keys "
                    f"{', '.join(SITUATIONS)}")
    missing = [k for k in SITUATIONS if k not in got]
    if missing:
        _fail(name, f"has no answer for {missing[0]!r}; expected the keys {', '.join(SITUATIONS)}")
    wrong = []
    for key, accepted in CHOICES.items():
        method = got[key]
        if not isinstance(method, str) or method.strip().lower() not in METHODS_05:
            _fail(name, f"{key!r}: {method!r} is not one of the methods {', '.join(METHODS_05)}")
        method = method.strip().lower()
        if method not in accepted:
            wrong.append(f"{key!r} ({SITUATIONS[key]}): not {method}: {_WHY_NOT[key][method]}")
    if wrong:
        raise AssertionError(f"{name}: " + "\n".join(wrong))
    print(f"choose_method: correct ({len(CHOICES)} situations)")


# ----------------------------------------------------------------------------------------------------------------
# exercise: over-optimisation in the comparison's runs

def reference_overoptimisation(kl: list[float], gold: list[float], proxy: list[float]) -> dict:
    """The peak of the gold reward (the first index of its maximum, and the KL there) and the points where the proxy
    rose while the gold reward fell, each against the point before it."""
    peak = max(range(len(gold)), key=lambda i: (gold[i], -i))
    hacked = [i for i in range(1, len(gold)) if proxy[i] > proxy[i - 1] and gold[i] < gold[i - 1]]
    return {"peak": peak, "peak_kl": kl[peak], "hacked": hacked}


def _trajectory_cases(hidden: bool) -> list[tuple[str, list, list, list]]:
    """(case, kl, gold, proxy): a small made-up run where each mistake shows, Best-of-N's exact curve (N = 1 to 1024)
    and every trained run's checks (test samples) in the committed comparison."""
    cases = [("a made-up run of 7 checks",
              [0.0, 0.2, 0.5, 0.9, 1.4, 2.0, 2.3],
              [0.0, 0.3, 0.5, 0.45, 0.47, 0.40, 0.35],
              [0.0, 0.4, 0.6, 0.65, 0.62, 0.80, 0.55])]
    result = _comparison()
    curve = result["methods"]["best_of_n"]["enumerable_curve"]
    cases.append(("Best-of-N's exact curve, N = " + ", ".join(str(p["n"]) for p in curve),
                  [p["kl"] for p in curve], [p["reward"] for p in curve], [p["proxy_reward"] for p in curve]))
    for method in TRAINED:
        for run in result["methods"][method]["runs"]:
            checks = [c for c in run["checks"] if "test" in c]
            cases.append((f"{method}, beta {run['strength']}: its checks at steps {[c['step'] for c in checks]}",
                          [c["test"]["kl"] for c in checks], [c["test"]["gold_reward"] for c in checks],
                          [c["test"]["proxy_reward"] for c in checks]))
    if hidden:
        gen = torch.Generator().manual_seed(53)
        for k in range(3):
            steps = torch.randn(12, 2, generator=gen, dtype=torch.float64).cumsum(0)
            cases.append((f"a random walk of 12 checks ({k + 1})", torch.linspace(0, 3, 12).tolist(),
                          steps[:, 0].tolist(), steps[:, 1].tolist()))
    return cases


def check_overoptimisation(overoptimisation: Callable, hidden: bool = False) -> None:
    """Check ``overoptimisation(kl, gold, proxy) -> {"peak", "peak_kl", "hacked"}`` on a run's points in the order
    the run went (steps, or N for Best-of-N): the index of the highest gold reward (the first, if tied), the KL
    there, and the indices i >= 1 where the proxy rose and the gold reward fell since point i - 1. Exact (indices;
    the KL within 1e-12).

    Known mistakes it names: the proxy's peak instead of the gold reward's, the last point (the largest KL),
    indices counted from 1, the KL of another point, every point after the peak, points where only the gold fell
    or only the proxy rose, each point compared with the peak instead of the point before, the previous point's
    index; missing keys, non-integer indices.
    """
    name = "overoptimisation"
    cases = _trajectory_cases(hidden)
    for case, kl, gold, proxy in cases:
        out = _call(overoptimisation, name, list(kl), list(gold), list(proxy))
        if not isinstance(out, dict):
            _fail(name, f"returns a {type(out).__name__}; expected a dict with the keys 'peak', 'peak_kl', 'hacked'",
                  f"case: {case}")
        for key in ("peak", "peak_kl", "hacked"):
            if key not in out:
                _fail(name, f"the result has no {key!r}; expected the keys 'peak', 'peak_kl', 'hacked'",
                      f"case: {case}")
        want = reference_overoptimisation(kl, gold, proxy)
        n = len(gold)
        peak = out["peak"]
        detail = f"case: {case}\n  kl {_fmt(kl)}\n  gold {_fmt(gold)}\n  proxy {_fmt(proxy)}"
        if isinstance(peak, bool) or type(peak) is not int:
            _fail(name, f"'peak' is {peak!r} ({type(peak).__name__}); expected a Python int, the index of the "
                        f"point (int(...) of a tensor)", detail)
        if peak != want["peak"]:
            d = f"{detail}\n  expected peak {want['peak']}, got {peak}"
            if peak == max(range(n), key=lambda i: (proxy[i], -i)):
                _fail(name, "'peak' is where the proxy (the reward model's score) peaks: over-optimisation is "
                            "read on the gold reward, which peaks while the proxy goes on rising", d)
            if peak == want["peak"] + 1:
                _fail(name, "'peak' counts from 1: return the index into the lists (from 0)", d)
            if peak == n - 1 or peak == max(range(n), key=lambda i: kl[i]):
                _fail(name, "'peak' is the last point (the largest KL): it is where the gold reward is highest", d)
            _fail(name, "'peak' is not the index of the highest gold reward (the first one, if tied)", d)
        peak_kl = out["peak_kl"]
        if isinstance(peak_kl, bool) or type(peak_kl) not in (int, float):
            _fail(name, f"'peak_kl' is {peak_kl!r} ({type(peak_kl).__name__}); expected a Python number", detail)
        if abs(peak_kl - want["peak_kl"]) > 1e-12:
            d = f"{detail}\n  expected peak_kl {want['peak_kl']!r}, got {peak_kl!r}"
            _fail(name, "'peak_kl' is not the KL at the gold reward's peak: kl[peak]", d)
        hacked = out["hacked"]
        if not isinstance(hacked, (list, tuple)) or any(isinstance(i, bool) or type(i) is not int for i in hacked):
            _fail(name, f"'hacked' is {hacked!r}; expected a list of Python ints, the indices of the points", detail)
        hacked = sorted(hacked)
        right = want["hacked"]
        if hacked == right:
            continue
        d = f"{detail}\n  expected hacked {right}, got {hacked}"
        steps = range(1, n)
        variants = [
            ("'hacked' counts from 1: return indices into the lists (from 0)", [i + 1 for i in right]),
            ("'hacked' names the point before each step: name point i, where the step from i - 1 to i ends",
             [i - 1 for i in right]),
            ("'hacked' lists every point where the gold reward fell, whatever the proxy did: a step where both fell "
             "is a worse step, not reward hacking; the proxy must have risen",
             [i for i in steps if gold[i] < gold[i - 1]]),
            ("'hacked' lists every point where the proxy rose, whatever the gold reward did: a step where both rose "
             "is progress; the gold reward must have fallen", [i for i in steps if proxy[i] > proxy[i - 1]]),
            ("'hacked' lists every point after the gold reward's peak: compare each point with the one before it "
             "(the proxy rose, the gold reward fell)", list(range(want["peak"] + 1, n))),
            ("'hacked' compares each point with the peak, not with the point before it",
             [i for i in range(want["peak"] + 1, n) if proxy[i] > proxy[want["peak"]] and gold[i] < gold[want["peak"]]]),
            ("'hacked' has the proxy and the gold reward swapped: the proxy rose and the gold reward fell, not the "
             "other way round", [i for i in steps if gold[i] > gold[i - 1] and proxy[i] < proxy[i - 1]]),
        ]
        for mistake, value in variants:
            if hacked == sorted(value):
                _fail(name, mistake, d)
        _fail(name, "'hacked' is not the points where the proxy rose and the gold reward fell since the point "
                    "before", d)
    print(f"overoptimisation passed {len(cases)} cases (exact)")

