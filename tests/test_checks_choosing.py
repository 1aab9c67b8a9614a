"""Lesson 05's checks: each passes the reference answer and fails every wrong answer it names, with that name."""
import math

import pytest
import torch

from helpers import checks
from helpers.assignments.checks import choosing as ch
from helpers.comparison import fraction_of_optimum, frontier_reward, load_comparison, summary
from failing import fails

pytestmark = pytest.mark.usefixtures("one_thread")


def _stub(*args):
    raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------
# GRPO's advantages: written here as a learner would, not with helpers.grpo

def _grpo(kind="right"):
    def grpo_advantages(rewards, eps=1e-4):
        r = rewards
        if kind == "in_place":
            r = rewards.sub_(0.0).mul_(1.0)
            rewards.add_(1.0)
        dim_mean = 0 if kind in ("mean_axis", "both_axes") else 1
        dim_std = 0 if kind in ("std_axis", "both_axes") else 1
        mean = r.mean(dim_mean, keepdim=True)
        std = r.std(dim_std, keepdim=True, correction=0 if kind == "population" else 1)
        if kind == "batch":
            mean, std = r.mean(), r.std()
        centred = mean - r if kind == "sign" else r - mean
        if kind == "dr_grpo":
            out = centred
        elif kind == "no_eps":
            out = centred / std
        elif kind == "eps_in_sqrt":
            out = centred / (std ** 2 + eps).sqrt()
        elif kind == "variance":
            out = centred / (std ** 2 + eps)
        elif kind == "rloo":
            G = r.shape[1]
            out = r - (r.sum(1, keepdim=True) - r) / (G - 1)
        else:
            out = centred / (std + eps)
        if kind in ("no_guard", "no_eps"):
            return out
        flat = r.amax(1, keepdim=True) == r.amin(1, keepdim=True)
        return torch.where(flat, torch.zeros_like(out), out)
    return grpo_advantages


def test_check_grpo_advantages_passes_a_right_answer_including_hidden_cases(capsys):
    checks.check_grpo_advantages(_grpo())
    checks.check_grpo_advantages(_grpo(), hidden=True)
    assert "grpo_advantages passed" in capsys.readouterr().out


def test_the_course_grpo_advantages_pass_their_own_check():
    from helpers.grpo import grpo_advantages
    checks.check_grpo_advantages(grpo_advantages, hidden=True)


@pytest.mark.parametrize("kind,words", [
    ("std_axis", ["the std is over the wrong axis"]),
    ("mean_axis", ["the mean is over the wrong axis"]),
    ("both_axes", ["the mean and the std are over the wrong axis"]),
    ("batch", ["over the whole batch"]),
    ("population", ["population std"]),
    ("no_eps", ["eps is missing"]),
    ("eps_in_sqrt", ["eps is inside the square root"]),
    ("dr_grpo", ["does not divide by the group's std", "dr. grpo"]),
    ("variance", ["divides by the variance"]),
    ("sign", ["the sign is flipped"]),
    ("rloo", ["rloo's leave-one-out"]),
    ("no_guard", ["no zero-std guard", "nonzero advantages"]),
    ("in_place", ["changes its input"]),
])
def test_check_grpo_advantages_names_each_mistake(kind, words):
    fails(checks.check_grpo_advantages, _grpo(kind), words)


def test_check_grpo_advantages_names_nan_for_a_flat_group():
    def grpo_advantages(rewards):
        r = rewards.double()
        return ((r - r.mean(1, keepdim=True)) / r.std(1, keepdim=True)).float()
    # eps missing shows first on the group whose std is near eps; on the flat groups alone it is nan
    fails(checks.check_grpo_advantages, grpo_advantages, ["eps is missing"])

    def no_eps_but_exact_elsewhere(rewards):
        out = _grpo()(rewards)
        flat = rewards.amax(1) == rewards.amin(1)
        out[flat] = float("nan")
        return out
    fails(checks.check_grpo_advantages, no_eps_but_exact_elsewhere, ["no zero-std guard", "nan"])


def test_check_grpo_advantages_names_a_wrong_shape_and_a_stub():
    fails(checks.check_grpo_advantages, lambda r: _grpo()(r).mean(0), ["returns shape"])
    fails(checks.check_grpo_advantages, _stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# RLOO's advantages

def _rloo(kind="right"):
    def rloo_advantages(rewards):
        r = rewards
        P, G = r.shape
        total = r.sum(1, keepdim=True)
        if kind == "own_in_baseline":
            return r - r.mean(1, keepdim=True)
        if kind == "over_g":
            return r - (total - r) / G
        if kind == "sum":
            return r - (total - r)
        if kind == "axis":
            return r - (r.sum(0, keepdim=True) - r) / (P - 1)
        if kind == "sign":
            return (total - r) / (G - 1) - r
        if kind == "grpo":
            return _grpo()(r)
        if kind == "ratio":          # not shift invariant, but sums to 0
            out = r - (total - r) / (G - 1)
            return out * (1 + r.mean(1, keepdim=True).abs())
        if kind == "offset":         # shift invariant, but does not sum to 0
            return r - (total - r) / (G - 1) + 0.5
        return r - (total - r) / (G - 1)
    return rloo_advantages


def test_check_rloo_advantages_passes_a_right_answer_including_hidden_cases(capsys):
    checks.check_rloo_advantages(_rloo())
    checks.check_rloo_advantages(_rloo(), hidden=True)
    assert "rloo_advantages passed" in capsys.readouterr().out


def test_the_course_rloo_advantages_pass_their_own_check():
    from helpers.grpo import rloo_advantages
    checks.check_rloo_advantages(rloo_advantages, hidden=True)


def test_own_reward_in_the_baseline_is_g_minus_1_over_g_times_the_right_advantage():
    r = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(_rloo("own_in_baseline")(r), (5 - 1) / 5 * _rloo()(r))


@pytest.mark.parametrize("kind,words", [
    ("own_in_baseline", ["own reward is left in its baseline", "(g - 1)/g"]),
    ("over_g", ["divides the others' sum by g"]),
    ("sum", ["subtracts the others' sum, not their mean"]),
    ("axis", ["the baseline is over the wrong axis"]),
    ("sign", ["the sign is flipped"]),
    ("grpo", ["grpo's advantage"]),
    ("ratio", ["adding the same constant", "changes its advantages"]),
    ("offset", ["do not sum to 0"]),
])
def test_check_rloo_advantages_names_each_mistake(kind, words):
    fails(checks.check_rloo_advantages, _rloo(kind), words)


def test_check_rloo_advantages_reports_a_stub():
    fails(checks.check_rloo_advantages, _stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# Best-of-N's KL

def test_check_best_of_n_kl_passes_the_formula_including_hidden_cases(capsys):
    checks.check_best_of_n_kl(lambda n: math.log(n) - (n - 1) / n)
    checks.check_best_of_n_kl(lambda n: torch.tensor(math.log(n) - (n - 1) / n), hidden=True)
    out = capsys.readouterr().out
    assert "best_of_n_kl passed" in out and "upper bound" in out


def test_the_formula_bounds_the_exact_best_of_n_kl_and_is_tight_on_many_small_candidates():
    small = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    fine = torch.full((1024,), 1 / 1024, dtype=torch.float64)
    for n in (2, 4, 8):
        bound = math.log(n) - (n - 1) / n
        assert ch.exact_best_of_n_kl(small, n) < bound
        assert abs(ch.exact_best_of_n_kl(fine, n) - bound) < 1e-3
    assert ch.exact_best_of_n_kl(small, 1) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("answer,words", [
    (lambda n: math.log(n), ["is log n alone"]),
    (lambda n: math.log(n) + (n - 1) / n, ["adds (n - 1)/n"]),
    (lambda n: (n - 1) / n - math.log(n), ["has the sign flipped"]),
    (lambda n: math.log(n) - (n - 1), ["forgets to divide n - 1 by n"]),
    (lambda n: math.log(n) - 1 / n, ["uses 1/n in place of (n - 1)/n"]),
    (lambda n: math.log(max(n - 1, 1e-300)) - (n - 1) / n, ["uses log(n - 1)"]),
    (lambda n: math.log2(n) - (n - 1) / n, ["is not log n - (n - 1)/n"]),
    (lambda n: str(math.log(n) - (n - 1) / n), ["expected a python number"]),
    (_stub, ["not implemented"]),
])
def test_check_best_of_n_kl_names_each_mistake(answer, words):
    fails(checks.check_best_of_n_kl, answer, words)


# ----------------------------------------------------------------------------------------------------------------
# the fraction of the optimum at a policy's KL

def _fraction(kind="right"):
    def fraction(reward, kl, frontier):
        kls, rs = [p["kl"] for p in frontier], [p["reward"] for p in frontier]
        ref = rs[0]
        if kl <= kls[0]:
            at = rs[0]
        elif kl >= kls[-1]:
            at = rs[-1] + ((kl - kls[-1]) * (rs[-1] - rs[-2]) / (kls[-1] - kls[-2]) if kind == "extrapolate" else 0)
        else:
            i = next(i for i in range(1, len(kls)) if kls[i] >= kl)
            w = (kl - kls[i - 1]) / (kls[i] - kls[i - 1])
            at = {"below": rs[i - 1], "above": rs[i],
                  "nearest": rs[i] if kls[i] - kl < kl - kls[i - 1] else rs[i - 1]}.get(kind, rs[i - 1] + w * (rs[i] - rs[i - 1]))
        if kind == "best":
            at = max(rs)
        if kind == "ratio":
            return reward / at
        if kind == "ratio_minus_ref":
            return (reward - ref) / at
        if kind == "gap":
            return at - reward
        if kind == "zero_division":
            return (reward - ref) / (at - ref)
        f = 0.0 if at - ref <= 1e-12 else (reward - ref) / (at - ref)
        return 1 - f if kind == "left" else f
    return fraction


def test_check_fraction_of_optimum_passes_a_right_answer_including_hidden_cases(capsys):
    checks.check_fraction_of_optimum(_fraction())
    checks.check_fraction_of_optimum(_fraction(), hidden=True)
    assert "fraction_of_optimum passed" in capsys.readouterr().out


def test_the_course_fraction_of_optimum_passes_its_own_check_and_interpolates_the_small_frontier():
    checks.check_fraction_of_optimum(fraction_of_optimum, hidden=True)
    at = 0.0 + (0.8 - 0.25) / 0.75 * 0.5
    assert frontier_reward(0.8, ch.SMALL_FRONTIER) == pytest.approx(at)
    assert fraction_of_optimum(0.2, 0.8, ch.SMALL_FRONTIER) == pytest.approx(0.7 / (at + 0.5))


@pytest.mark.parametrize("kind,words", [
    ("below", ["does not interpolate", "grid points"]),
    ("above", ["does not interpolate", "grid points"]),
    ("nearest", ["does not interpolate", "grid points"]),
    ("extrapolate", ["extrapolates beyond the frontier's last point"]),
    ("best", ["divides by the frontier's highest reward"]),
    ("ratio", ["is r / r*(kl)"]),
    ("ratio_minus_ref", ["subtracts pi_ref's reward from r only"]),
    ("left", ["the share left"]),
    ("gap", ["the gap below the frontier"]),
    ("zero_division", ["divides by zero", "return 0 there"]),
])
def test_check_fraction_of_optimum_names_each_mistake(kind, words):
    fails(checks.check_fraction_of_optimum, _fraction(kind), words)


def test_check_fraction_of_optimum_names_nan_at_kl_zero_and_a_stub():
    def fraction(reward, kl, frontier):
        return math.nan if kl <= frontier[0]["kl"] else _fraction()(reward, kl, frontier)
    fails(checks.check_fraction_of_optimum, fraction, ["returns nan", "return 0 there"])
    fails(checks.check_fraction_of_optimum, _stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# the method nearest the frontier

def test_check_nearest_frontier_accepts_the_trained_method_with_the_largest_fraction(capsys):
    table = summary(load_comparison("full"))
    right = max(ch.TRAINED, key=lambda m: table[m]["fraction_of_optimum"])
    checks.check_nearest_frontier(lambda: right)
    checks.check_nearest_frontier(right.upper())
    assert "nearest_frontier: correct" in capsys.readouterr().out


def test_check_nearest_frontier_explains_every_other_answer():
    table = summary(load_comparison("full"))
    right = max(ch.TRAINED, key=lambda m: table[m]["fraction_of_optimum"])
    highest = max(ch.TRAINED, key=lambda m: table[m]["enumerable_reward"])
    closest = min(ch.TRAINED, key=lambda m: table[m]["enumerable_kl"])
    for method in ch.TRAINED:
        if method == right:
            continue
        words = (["highest gold reward", "same kl"] if method == highest else
                 ["closest to pi_ref"] if method == closest else [f"{method} reaches", f"{right} reaches"])
        fails(checks.check_nearest_frontier, lambda method=method: method, words)
    fails(checks.check_nearest_frontier, lambda: "best_of_n", ["trains nothing"])
    fails(checks.check_nearest_frontier, lambda: "sft", ["not one of the comparison's trained methods"])
    fails(checks.check_nearest_frontier, lambda: 2, ["expected a method's name"])
    fails(checks.check_nearest_frontier, _stub, ["not implemented"])


def test_the_committed_comparison_separates_the_question_s_answers():
    """The question teaches something only while the nearest method is neither the highest nor the closest one."""
    table = summary(load_comparison("full"))
    right = max(ch.TRAINED, key=lambda m: table[m]["fraction_of_optimum"])
    assert right != max(ch.TRAINED, key=lambda m: table[m]["enumerable_reward"])
    assert right != min(ch.TRAINED, key=lambda m: table[m]["enumerable_kl"])


# ----------------------------------------------------------------------------------------------------------------
# choosing a method

RIGHT_CHOICE = {"offline_pairs": "dpo", "no_training": "best_of_n", "checkable_answers": "grpo",
                "custom_reward": "ppo"}


@pytest.mark.parametrize("changes", [{}, {"checkable_answers": "rloo"}, {"custom_reward": "grpo"},
                                     {"custom_reward": "RLOO", "offline_pairs": " DPO "}])
def test_check_choose_method_accepts_every_right_choice(changes, capsys):
    checks.check_choose_method(lambda: RIGHT_CHOICE | changes)
    assert "choose_method: correct" in capsys.readouterr().out


@pytest.mark.parametrize("key,method,words", [
    ("offline_pairs", "best_of_n", ["needs a reward model to choose"]),
    ("offline_pairs", "ppo", ["value model"]),
    ("offline_pairs", "grpo", ["preference pairs are not one"]),
    ("offline_pairs", "rloo", ["preference pairs are not one"]),
    ("no_training", "dpo", ["not yours to train"]),
    ("no_training", "ppo", ["not yours to train"]),
    ("no_training", "grpo", ["not yours to train"]),
    ("checkable_answers", "dpo", ["there are none", "verifiable rewards"]),
    ("checkable_answers", "ppo", ["value model is a third copy"]),
    ("checkable_answers", "best_of_n", ["scorer at inference"]),
    ("custom_reward", "dpo", ["fixed set of pairs"]),
    ("custom_reward", "best_of_n", ["serving must cost one"]),
])
def test_check_choose_method_names_why_each_wrong_method_does_not_fit(key, method, words):
    message = fails(checks.check_choose_method, lambda: RIGHT_CHOICE | {key: method}, [f"'{key}'", f"not {method}"]
                     + words)
    assert message.count("\n") == 0     # one situation wrong, one reason


def test_check_choose_method_lists_every_wrong_situation():
    wrong = {"offline_pairs": "ppo", "no_training": "dpo", "checkable_answers": "dpo", "custom_reward": "dpo"}
    message = fails(checks.check_choose_method, lambda: wrong, list(wrong))
    assert message.count("\n") == 3


@pytest.mark.parametrize("answer,words", [
    (lambda: list(RIGHT_CHOICE.values()), ["returns a list", "expected a dict"]),
    (lambda: {k: v for k, v in RIGHT_CHOICE.items() if k != "custom_reward"}, ["no answer for 'custom_reward'"]),
    (lambda: RIGHT_CHOICE | {"no_training": "rlhf"}, ["'rlhf' is not one of the methods"]),
    (_stub, ["not implemented"]),
])
def test_check_choose_method_names_a_malformed_answer(answer, words):
    fails(checks.check_choose_method, answer, words)


# ----------------------------------------------------------------------------------------------------------------
# over-optimisation

def _overopt(kind="right"):
    def overoptimisation(kl, gold, proxy):
        n = len(gold)
        best = max(gold)
        peak = gold.index(best)
        if kind == "proxy_peak":
            peak = proxy.index(max(proxy))
        if kind == "last":
            peak = n - 1
        steps = range(1, n)
        hacked = [i for i in steps if proxy[i] > proxy[i - 1] and gold[i] < gold[i - 1]]
        variants = {
            "gold_fell": [i for i in steps if gold[i] < gold[i - 1]],
            "proxy_rose": [i for i in steps if proxy[i] > proxy[i - 1]],
            "after_peak": list(range(peak + 1, n)),
            "vs_peak": [i for i in range(peak + 1, n) if proxy[i] > proxy[peak] and gold[i] < gold[peak]],
            "swapped": [i for i in steps if gold[i] > gold[i - 1] and proxy[i] < proxy[i - 1]],
            "one_based": [i + 1 for i in hacked],
            "previous": [i - 1 for i in hacked],
        }
        hacked = variants.get(kind, hacked)
        out = {"peak": peak + (kind == "one_based_peak"),
               "peak_kl": kl[peak + 1 if kind == "kl_next" and peak + 1 < n else peak], "hacked": hacked}
        if kind == "tensor_peak":
            out["peak"] = torch.tensor(peak)
        if kind == "missing":
            del out["hacked"]
        if kind == "set":
            out["hacked"] = set(hacked)
        return out
    return overoptimisation


def test_check_overoptimisation_passes_a_right_answer_including_hidden_cases(capsys):
    checks.check_overoptimisation(_overopt())
    checks.check_overoptimisation(_overopt(), hidden=True)
    assert "overoptimisation passed" in capsys.readouterr().out


def test_best_of_n_s_exact_curve_peaks_in_gold_while_its_proxy_keeps_rising():
    curve = load_comparison("full")["methods"]["best_of_n"]["enumerable_curve"]
    got = ch.reference_overoptimisation([p["kl"] for p in curve], [p["reward"] for p in curve],
                                        [p["proxy_reward"] for p in curve])
    assert 0 < got["peak"] < len(curve) - 1
    assert got["hacked"] == list(range(got["peak"] + 1, len(curve)))


@pytest.mark.parametrize("kind,words", [
    ("proxy_peak", ["where the proxy", "peaks"]),
    ("last", ["the last point"]),
    ("one_based_peak", ["'peak' counts from 1"]),
    ("kl_next", ["'peak_kl' is not the kl at the gold reward's peak"]),
    ("gold_fell", ["whatever the proxy did"]),
    ("proxy_rose", ["whatever the gold reward did"]),
    ("after_peak", ["every point after the gold reward's peak"]),
    ("vs_peak", ["compares each point with the peak"]),
    ("swapped", ["swapped"]),
    ("one_based", ["'hacked' counts from 1"]),
    ("previous", ["names the point before each step"]),
    ("tensor_peak", ["expected a python int"]),
    ("missing", ["has no 'hacked'"]),
    ("set", ["expected a list of python ints"]),
])
def test_check_overoptimisation_names_each_mistake(kind, words):
    fails(checks.check_overoptimisation, _overopt(kind), words)


def test_check_overoptimisation_reports_a_stub_and_a_non_dict():
    fails(checks.check_overoptimisation, _stub, ["not implemented"])
    fails(checks.check_overoptimisation, lambda kl, gold, proxy: (0, 0.0, []), ["returns a tuple", "expected a dict"])
