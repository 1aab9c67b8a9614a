"""Tests of helpers/combinations.py: the committed figures agree with the comparison's where both measured the same
policy by two code paths, and say what each policy is."""
from __future__ import annotations

import math

from helpers import combinations, comparison


def test_dpo_alone_and_the_reference_are_the_comparisons_figures():
    """The same DPO run (same function, settings and seed) and the same scorecard protocol: the same numbers."""
    combined, full = combinations.load_combinations(), comparison.load_comparison("full")
    assert math.isclose(combined["dpo"]["gold_reward"], full["methods"]["dpo"]["test"]["gold_reward"], abs_tol=1e-9)
    assert math.isclose(combined["dpo"]["kl"], full["methods"]["dpo"]["test"]["kl"], rel_tol=1e-5)
    assert math.isclose(combined["reference"]["gold_reward"], full["reference"]["gold_reward"], abs_tol=1e-9)
    assert combined["reference"]["kl"] == 0.0


def test_every_policy_is_scored_with_the_scorecards_keys():
    combined = combinations.load_combinations()
    assert set(combined) == {"reference", "sft", "dpo", "sft_then_dpo"}
    for figures in combined.values():
        assert {"gold_reward", "gold_reward_ci", "kl", "false_answer", "harmful_compliance", "fabrication",
                "malformed"} <= set(figures)
        assert -1.5 <= figures["gold_reward"] <= 1.0
