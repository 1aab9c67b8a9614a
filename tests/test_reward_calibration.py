"""Temperature scaling, expected calibration error and exact Best-of-N (helpers/reward.py), against closed forms."""
import math

import pytest
import torch

from helpers import reward


def test_fit_temperature_recovers_the_factor_that_made_scores_over_confident():
    g = torch.Generator().manual_seed(0)
    true_margin = 2 * torch.randn(20000, generator=g)
    first_wins = torch.rand(20000, generator=g) < torch.sigmoid(true_margin)
    # listed as (chosen, rejected): the margin of the winner over the loser, scores 3x too confident
    margin = torch.where(first_wins, true_margin, -true_margin)
    assert reward.fit_temperature(3 * margin, torch.zeros_like(margin)) == pytest.approx(3.0, rel=0.05)
    assert reward.fit_temperature(margin, torch.zeros_like(margin)) == pytest.approx(1.0, rel=0.05)


def test_expected_calibration_error_weights_bins_by_count():
    rows = [{"predicted": 0.3, "observed": 0.4, "count": 3}, {"predicted": 0.7, "observed": 0.7, "count": 1}]
    assert reward.expected_calibration_error(rows) == pytest.approx(0.075)


def test_best_of_one_is_the_reference_and_the_kl_bound_is_the_closed_form():
    ref = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    gold = torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, -2.0]])
    rows = reward.best_of_n_exact(ref, gold, gold, [1, 4])
    assert rows[0]["gold"] == pytest.approx(float((ref * gold).sum(-1).mean()))
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert rows[1]["kl_bound"] == pytest.approx(math.log(4) - 3 / 4)
    assert rows[1]["kl"] <= rows[1]["kl_bound"] + 1e-6


def test_best_of_n_with_the_gold_reward_as_proxy_never_loses_gold():
    g = torch.Generator().manual_seed(1)
    ref = torch.softmax(torch.randn(50, 12, generator=g), -1)
    gold = torch.randn(50, 12, generator=g)
    rows = reward.best_of_n_exact(ref, gold, gold, [1, 2, 8, 64, 512])
    assert all(b["gold"] >= a["gold"] - 1e-6 for a, b in zip(rows, rows[1:]))
    assert rows[-1]["gold"] == pytest.approx(float(gold.max(-1).values.mean()), abs=1e-3)


def test_best_of_n_with_a_wrong_proxy_can_lose_gold():
    ref = torch.tensor([[0.6, 0.3, 0.1]])
    gold = torch.tensor([[0.0, 1.0, -3.0]])
    proxy = torch.tensor([[0.0, 1.0, 2.0]])   # ranks the worst response first
    rows = reward.best_of_n_exact(ref, proxy, gold, [1, 64])
    assert rows[0]["gold"] == pytest.approx(0.0)
    assert rows[1]["gold"] == pytest.approx(-3.0, abs=1e-2)   # almost always keeps the worst response
    assert rows[1]["proxy"] > rows[0]["proxy"]
