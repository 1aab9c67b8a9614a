"""Bradley-Terry reward modeling: analytic truths of the loss, and the training loop's bookkeeping."""
import dataclasses
import math

import pytest
import torch

from helpers import reward, world
from helpers.checkpoint import default_config
from helpers.model import ScalarModel


def test_bradley_terry_loss_is_log2_when_rewards_are_equal():
    r = torch.tensor([0.0, 1.5, -3.0])
    assert torch.allclose(reward.bradley_terry_loss(r, r), torch.full((3,), math.log(2.0)))


def test_bradley_terry_gradient_on_the_margin_is_sigmoid_minus_one():
    margin = torch.linspace(-6, 6, 13, dtype=torch.float64, requires_grad=True)
    reward.bradley_terry_loss(margin, torch.zeros_like(margin)).sum().backward()
    expected = 1.0 / (1.0 + torch.exp(-margin.detach())) - 1.0
    assert torch.allclose(margin.grad, expected, atol=1e-12)


def test_bradley_terry_loss_stays_finite_where_log_of_sigmoid_underflows():
    chosen, rejected = torch.tensor([-200.0]), torch.tensor([0.0])
    naive = -torch.log(torch.sigmoid(chosen - rejected))
    assert torch.isinf(naive).all()  # the mistake the stable form avoids
    assert reward.bradley_terry_loss(chosen, rejected).item() == pytest.approx(200.0)


def test_bradley_terry_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        reward.bradley_terry_loss(torch.zeros(3), torch.zeros(4))


def test_bradley_terry_mle_on_a_tournament_satisfies_the_stationarity_condition():
    """At the maximum-likelihood scores, every player's wins equal its expected wins: sum_j n_ij (w_ij - sigma(s_i - s_j)) = 0."""
    wins = torch.tensor([[0, 7, 9, 5], [3, 0, 6, 8], [1, 4, 0, 6], [5, 2, 4, 0]], dtype=torch.float64)
    i, j = torch.nonzero(wins, as_tuple=True)
    weight = wins[i, j]
    scores = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([scores], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * reward.bradley_terry_loss(scores[i], scores[j])).sum()
        loss.backward()
        return loss
    for _ in range(3):
        opt.step(closure)
    s = scores.detach()
    p = torch.sigmoid(s[:, None] - s[None, :])
    n = wins + wins.T
    residual = (wins - n * p).sum(1)  # observed wins minus expected wins, per player
    assert torch.allclose(residual, torch.zeros(4, dtype=torch.float64), atol=1e-6)
    assert s.argmax() == 0  # player 0 won the most games


def _tiny_scalar_model(seed=0):
    torch.manual_seed(seed)
    return ScalarModel(dataclasses.replace(default_config(), n_embd=16, n_head=2, n_layer=1))


def _clean_pairs(split, n):
    """Correct answer preferred to an insult: an easy, noiseless preference set."""
    ps = [p for p in world.prompts(split) if p.category == "answerable"][:n]
    return [world.PreferencePair(p.text, world.response(p, "correct"), world.response(p, "insult")) for p in ps]


def test_reward_training_keeps_the_weights_with_the_best_validation_loss():
    train, val = _clean_pairs("train", 64), _clean_pairs("validation", 32)
    cfg = reward.RewardTrainConfig(batch_size=16, lr=3e-3, eval_every=2, max_steps=12, patience=100)
    result = reward.train_reward_model(train, val, cfg, init=_tiny_scalar_model())
    best = min(result.history, key=lambda h: h["val_loss"])
    assert result.best_step == best["step"]
    loss, acc = reward._mean_loss(result.model, val)
    assert loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert acc > 0.9, "an easy, noiseless preference set should be learned in a few steps"
    assert not result.model.training


def test_early_stopping_ends_training_after_patience_checks_without_improvement():
    train, val = _clean_pairs("train", 64), _clean_pairs("validation", 32)
    cfg = reward.RewardTrainConfig(batch_size=16, lr=0.0, eval_every=1, max_steps=50, patience=3)
    result = reward.train_reward_model(train, val, cfg, init=_tiny_scalar_model())
    assert len(result.history) == 4  # the first check sets the best; three more without improvement stop it


def test_pairwise_accuracy_counts_chosen_scored_above_rejected():
    model = _tiny_scalar_model()
    pairs = _clean_pairs("test", 20)
    chosen = reward.score_texts(model, [p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = reward.score_texts(model, [p.prompt for p in pairs], [p.rejected for p in pairs])
    expected = sum(float(c > r) for c, r in zip(chosen, rejected)) / len(pairs)
    assert reward.pairwise_accuracy(model, pairs) == pytest.approx(expected)
    swapped = [world.PreferencePair(p.prompt, p.rejected, p.chosen) for p in pairs]
    ties = float((chosen == rejected).sum())
    assert reward.pairwise_accuracy(model, swapped) == pytest.approx(1 - expected - ties / len(pairs))
