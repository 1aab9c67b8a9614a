"""The controlled comparison (helpers/comparison.py): the distance to the exact frontier, the frontier check, the
lines-of-code count, and that a run reproduces itself from its seed."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pytest
import torch

from helpers import comparison, optimal


def toy_view(seed: int = 0, prompts: int = 6, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Random reference probabilities and rewards, one prompt with a padded (probability 0) candidate."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(prompts, k, generator=g)
    logits[0, -1] = float("-inf")
    rewards = torch.randn(prompts, k, generator=g).masked_fill(torch.isinf(logits), 0.0)
    return torch.softmax(logits, -1).double(), rewards.double()     # float64: the frontier's own precision


def point(probs: torch.Tensor, ref_probs: torch.Tensor, rewards: torch.Tensor) -> dict:
    return {"reward": float((probs * rewards).sum(-1).mean()),
            "kl": float(optimal.kl_divergence(probs, ref_probs).mean())}


def test_fraction_of_optimum_is_zero_for_the_reference_and_one_for_the_exact_optimum():
    ref_probs, rewards = toy_view()
    frontier = comparison.exact_frontier(ref_probs, rewards)
    ref = point(ref_probs, ref_probs, rewards)
    assert ref["kl"] == pytest.approx(0.0, abs=1e-7)
    assert comparison.fraction_of_optimum(ref["reward"], ref["kl"], frontier) == 0.0
    for beta in (frontier[100]["beta"], frontier[400]["beta"]):        # betas on the grid: exact
        p = point(optimal.optimal_policy(ref_probs, rewards, beta), ref_probs, rewards)
        assert comparison.fraction_of_optimum(p["reward"], p["kl"], frontier) == pytest.approx(1.0, abs=1e-6)
    # between grid points the chord of the concave frontier is within a hair of it
    p = point(optimal.optimal_policy(ref_probs, rewards, 0.377), ref_probs, rewards)
    assert comparison.fraction_of_optimum(p["reward"], p["kl"], frontier) == pytest.approx(1.0, abs=1e-3)


def test_fraction_of_optimum_is_half_for_half_the_optimal_gain_at_the_same_kl():
    ref_probs, rewards = toy_view(1)
    frontier = comparison.exact_frontier(ref_probs, rewards)
    star = point(optimal.optimal_policy(ref_probs, rewards, 0.5), ref_probs, rewards)
    half = (star["reward"] + frontier[0]["reward"]) / 2
    assert comparison.fraction_of_optimum(half, star["kl"], frontier) == pytest.approx(0.5, abs=1e-4)


def test_the_frontier_runs_from_the_reference_to_the_best_reachable_reward():
    ref_probs, rewards = toy_view(2)
    frontier = comparison.exact_frontier(ref_probs, rewards)
    kls, rs = [p["kl"] for p in frontier], [p["reward"] for p in frontier]
    assert kls == sorted(kls) and all(b >= a - 1e-6 for a, b in zip(rs, rs[1:]))   # more KL buys more reward
    assert rs[0] == pytest.approx(float((ref_probs * rewards).sum(-1).mean()))
    best = rewards.masked_fill(ref_probs == 0, -math.inf).amax(-1).mean()
    assert rs[-1] == pytest.approx(float(best), abs=1e-6)
    assert comparison.frontier_reward(kls[-1] + 10.0, frontier) == rs[-1]


def test_no_policy_lies_above_the_exact_frontier():
    ref_probs, rewards = toy_view(3)
    frontier = comparison.exact_frontier(ref_probs, rewards)
    g = torch.Generator().manual_seed(0)
    points = []
    for i in range(200):
        logits = torch.log(ref_probs.clamp_min(1e-30)) + torch.randn(ref_probs.shape, generator=g) * (i % 7)
        probs = torch.softmax(logits.masked_fill(ref_probs == 0, -math.inf), -1)
        points.append({"name": f"random {i}", **point(probs, ref_probs, rewards)})
    scores = torch.randn(ref_probs.shape, generator=g)                  # a noisy proxy, as a reward model is
    for n in (1, 2, 4, 16, 256):
        bon = optimal.best_of_n_policy(ref_probs, scores, n)
        points.append({"name": f"best of {n}", **point(bon, ref_probs, rewards)})
    check = comparison.frontier_check(points, frontier)
    assert check["all_below"], check


def test_the_frontier_check_flags_a_point_above_the_frontier():
    ref_probs, rewards = toy_view(4)
    frontier = comparison.exact_frontier(ref_probs, rewards)
    star = point(optimal.optimal_policy(ref_probs, rewards, 0.3), ref_probs, rewards)
    on = {"name": "optimum", **star}
    above = {"name": "too good", "reward": star["reward"] + 0.01, "kl": star["kl"]}
    undercounted = {"name": "KL halved", "reward": star["reward"], "kl": star["kl"] / 2}   # the bookkeeping bug
    check = comparison.frontier_check([on, above, undercounted], frontier)
    assert check["above"] == ["KL halved", "too good"] and not check["all_below"]
    assert comparison.frontier_check([on], frontier)["all_below"]


def documented_example(x):
    """A docstring of
    three lines."""
    # a comment line

    y = (x +      # a trailing comment does not make a line
         1)
    text = """a string over
two lines is code"""
    return y, text


class DocumentedClass:
    """One line."""

    def method(self):
        return 1


def test_lines_of_code_counts_code_not_blank_lines_comments_or_docstrings():
    # def, y = ..., 1), text = ..., two lines..., return
    assert comparison.lines_of_code(documented_example) == 6
    assert comparison.lines_of_code(DocumentedClass) == 3          # class, def, return
    assert comparison.lines_of_code(documented_example, DocumentedClass) == 9


@pytest.mark.parametrize("method", comparison.METHODS)
def test_every_method_implementation_is_found_and_counted(method):
    lines = comparison.implementation_lines(method)
    assert 10 < lines["lines_of_code"] <= lines["lines_of_code_with_reward_model"]
    assert (lines["lines_of_code"] == lines["lines_of_code_with_reward_model"]) == (method == "dpo")


def test_differences_ignore_timings_and_name_changed_figures():
    a = {"gold_reward": 0.5, "train_s": 3.0, "runs": [{"kl": 0.1, "seconds": 1.0}], "n": 4, "lines_of_code": 80}
    b = {"gold_reward": 0.5, "train_s": 9.0, "runs": [{"kl": 0.1, "seconds": 2.0}], "n": 4, "lines_of_code": 90}
    assert comparison.differences(a, b) == []
    b["runs"][0]["kl"] = 0.2
    b["n"] = 8
    assert sorted(comparison.differences(a, b)) == ["n: 4 != 8", "runs.0.kl: 0.1 != 0.2"]


TINY = comparison.ComparisonBudget(iterations=1, check_every=1, grpo_betas=(0.04,), enumerable_stride=64,
                                   every_strength_on_test=False, trajectories=False)


@pytest.mark.slow
def test_a_run_reproduces_itself_from_its_seed():
    """Two tiny runs of one method (about 8 s of CPU each) give identical figures."""
    first = comparison.run_comparison(TINY, methods=("grpo",), log=lambda _: None)
    second = comparison.run_comparison(TINY, methods=("grpo",), log=lambda _: None)
    assert comparison.differences(first, second, atol=0, rtol=0) == []
    grpo = first["methods"]["grpo"]
    assert [c["step"] for c in grpo["runs"][0]["checks"]] == [0, 1]
    assert grpo["costs"]["responses_sampled"] in (0, comparison.BATCH)
    assert first["frontier_check"]["all_below"]
    assert set(comparison.summary(first)["grpo"]) >= {"gold_reward", "kl", "gap_closed", "fraction_of_optimum",
                                                      *comparison.COST_KEYS}


def test_the_committed_comparison_holds_both_settings_and_every_bench_key():
    try:
        stored = comparison.load_comparison(None)
    except FileNotFoundError:
        pytest.skip("no committed comparison yet: python -m helpers build comparison")
    # the lesson reruns the short setting and compares: it must be the one committed
    assert stored["short"]["budget"] == json.loads(json.dumps(asdict(comparison.SETTINGS["short"])))
    assert set(stored) == {"short", "full", "live"}
    assert set(stored["live"]["methods"]) == set(comparison.METHODS)
    for name in ("short", "full"):
        result = stored[name]
        figures = comparison.summary(result)
        assert set(figures) == set(comparison.METHODS), name
        for method, row in figures.items():
            assert {"gold_reward", "kl", "gap_closed", "fraction_of_optimum", *comparison.COST_KEYS} <= set(row)
        assert result["frontier_check"]["all_below"], result["frontier_check"]


def test_the_live_slice_reproduces_the_committed_one_and_a_changed_seed_does_not():
    """What lesson 05 asserts, for two methods (a few seconds each); and the check can fail: another seed differs."""
    committed = comparison.load_comparison("live")
    fresh = comparison.run_live(methods=("best_of_n", "grpo"), log=lambda _: None)
    assert comparison.differences({m: committed["methods"][m] for m in fresh["methods"]}, fresh["methods"],
                                  atol=1e-5, rtol=1e-5) == []
    point = fresh["methods"]["grpo"]["point"]
    assert 0 < point["kl"] and point["fraction_of_optimum"] <= 1 + 1e-3     # trained a little, below the optimum
    other = dict(comparison.SETTINGS)
    try:
        comparison.SETTINGS["short"] = replace(other["short"], seed=1)
        reseeded = comparison.run_live(methods=("grpo",), log=lambda _: None)
    finally:
        comparison.SETTINGS.update(other)
    assert comparison.differences(committed["methods"]["grpo"], reseeded["methods"]["grpo"], atol=1e-5, rtol=1e-5)
