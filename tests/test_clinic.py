"""Tests of helpers/clinic.py: the committed clinic runs hold the signals lesson 05 reads from them, logged under
TRL's names, with the settings the module states."""
from __future__ import annotations

import math

from helpers import clinic


def test_the_dpo_run_shows_the_chosen_reward_falling_while_accuracy_rises():
    run = clinic.load_clinic()["dpo"]
    assert run["config"]["beta"] == clinic.DPO_CLINIC.beta == 0.1 and run["config"]["nll_weight"] == 0.0
    rows = [r for r in run["history"] if r["step"] > 0 and not math.isnan(r["rewards/chosen"])]
    assert len(rows) >= 10
    first, last = rows[0], rows[-1]
    assert last["rewards/chosen"] < 0 and last["rewards/chosen"] < first["rewards/chosen"]
    assert last["rewards/rejected"] < last["rewards/chosen"]                    # the rejected falls faster
    assert last["rewards/accuracies"] > first["rewards/accuracies"]
    for r in rows:                                                              # the margin is the difference
        assert math.isclose(r["rewards/margins"], r["rewards/chosen"] - r["rewards/rejected"], abs_tol=1e-6)


def test_the_short_limit_run_clips_completions_at_its_limit():
    run = clinic.load_clinic()["short_limit"]
    assert run["config"]["max_new_tokens"] == clinic.SHORT_LIMIT.max_new_tokens == 6
    history = run["history"]
    assert len(history) == clinic.SHORT_LIMIT.iterations
    assert all(r["completions/mean_length"] <= 6 for r in history)
    assert history[0]["completions/clipped_ratio"] > 0.3                        # responses longer than five words are cut off
