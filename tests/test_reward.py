"""Bradley-Terry reward modeling: analytic truths of the loss, and the training loop's bookkeeping."""
import math

import pytest
import torch

from helpers import reward, world
from helpers.model import ScalarModel
from tiny import clean_pairs, tiny_language_model, tiny_scalar_model


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


def test_bradley_terry_loss_rejects_an_empty_batch_instead_of_a_nan_mean():
    with pytest.raises(ValueError, match="at least one pair"):
        reward.bradley_terry_loss(torch.zeros(0), torch.zeros(0))


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


def test_reward_training_keeps_the_weights_with_the_best_validation_loss():
    train, val = clean_pairs("train", 64), clean_pairs("validation", 32)
    cfg = reward.RewardTrainConfig(batch_size=16, lr=3e-3, eval_every=2, max_steps=12, patience=100)
    result = reward.train_reward_model(train, val, cfg, init=tiny_scalar_model())
    best = min(result.history, key=lambda h: h["val_loss"])
    assert result.best_step == best["step"]
    loss, acc = reward._mean_loss(result.model, val)
    assert loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert acc > 0.9, "an easy, noiseless preference set should be learned in a few steps"
    assert not result.model.training


def test_early_stopping_ends_training_after_patience_checks_without_improvement():
    train, val = clean_pairs("train", 64), clean_pairs("validation", 32)
    cfg = reward.RewardTrainConfig(batch_size=16, lr=0.0, eval_every=1, max_steps=50, patience=3)
    result = reward.train_reward_model(train, val, cfg, init=tiny_scalar_model())
    assert len(result.history) == 4  # the first check sets the best; three more without improvement stop it


def test_pairwise_accuracy_counts_chosen_scored_above_rejected():
    model = tiny_scalar_model()
    pairs = clean_pairs("test", 20)
    chosen = reward.score_texts(model, [p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = reward.score_texts(model, [p.prompt for p in pairs], [p.rejected for p in pairs])
    expected = sum(float(c > r) for c, r in zip(chosen, rejected)) / len(pairs)
    assert reward.pairwise_accuracy(model, pairs) == pytest.approx(expected)
    swapped = [world.PreferencePair(p.prompt, p.rejected, p.chosen) for p in pairs]
    ties = float((chosen == rejected).sum())
    assert reward.pairwise_accuracy(model, swapped) == pytest.approx(1 - expected - ties / len(pairs))


# ---------------------------------------------------------------------------------------------------------------
# the course reward model: head at <eos> plus the gated surprise of the frozen reference

def _batch(pairs):
    from helpers.tokenizer import Tokenizer, encode_pairs
    return encode_pairs(Tokenizer(), [p.prompt for p in pairs], [p.chosen for p in pairs], 64)


def test_a_fresh_reward_model_scores_exactly_like_a_plain_one_since_the_gate_starts_at_zero():
    lm = tiny_language_model(1)
    model, plain = reward.RewardModel.from_language_model(lm), ScalarModel.from_language_model(lm)
    plain.head.load_state_dict(model.head.state_dict())
    batch = _batch(clean_pairs("train", 6))
    with torch.no_grad():
        assert torch.equal(model.score(batch.input_ids, batch.attention_mask),
                           plain.score(batch.input_ids, batch.attention_mask))


def test_the_surprise_term_is_the_references_log_prob_of_each_response_token_and_nothing_else():
    from helpers.model import token_logprobs
    lm = tiny_language_model(1)
    model = reward.RewardModel.from_language_model(lm)
    batch = _batch(clean_pairs("train", 6))
    surprise = model.surprise(batch.input_ids, batch.attention_mask)
    # the tokenizer's response mask marks the same tokens: the response and its <eos>, no prompt, <sep> or padding
    assert torch.equal(model.response_mask(batch.input_ids, batch.attention_mask), batch.response_mask.bool())
    with torch.no_grad():
        expected = token_logprobs(lm(batch.input_ids, batch.attention_mask), batch.input_ids)
    expected = expected.clamp(min=model.surprise_floor) * batch.response_mask[:, 1:]
    assert torch.allclose(surprise[:, 1:], expected, atol=1e-6)
    assert torch.all(surprise[:, 0] == 0)
    # with the gate's bias at 1 and weights at 0, the knowledge term is the summed (floored) log-prob of the response
    with torch.no_grad():
        model.gate.bias.fill_(1.0)
        _, knowledge = model.score_parts(batch.input_ids, batch.attention_mask)
    assert torch.allclose(knowledge, expected.sum(-1), atol=1e-5)


def test_training_the_reward_model_leaves_its_reference_frozen_and_moves_the_gate():
    lm = tiny_language_model(1)
    model = reward.RewardModel.from_language_model(lm)
    frozen = {k: v.clone() for k, v in model.reference.state_dict().items()}
    train, val = clean_pairs("train", 64), clean_pairs("validation", 16)
    cfg = reward.RewardTrainConfig(batch_size=16, lr=3e-3, eval_every=4, max_steps=8, patience=100)
    result = reward.train_reward_model(train, val, cfg, init=model)
    assert all(torch.equal(v, result.model.reference.state_dict()[k]) for k, v in frozen.items())
    assert all(not p.requires_grad for p in result.model.reference.parameters())
    assert result.model.gate.weight.abs().sum() > 0
    result.model.train()
    assert not result.model.reference.training  # dropout could never switch on inside the frozen reference


def test_the_committed_reward_model_loads_and_checks_answers_on_unseen_test_prompts():
    model = reward.load_reward_model()
    assert isinstance(model, reward.RewardModel) and not model.training
    ps = [p for p in world.prompts("test") if p.category == "answerable"][::4]
    right = reward.score_texts(model, [p.text for p in ps], [world.response(p, "correct") for p in ps])
    wrong = reward.score_texts(model, [p.text for p in ps], [world.response(p, "wrong") for p in ps])
    assert (right > wrong).float().mean() > 0.95


def test_best_of_n_proxy_never_falls_as_n_grows_and_n_equal_1_is_the_first_sample():
    from helpers.evaluate import sample_responses
    lm = tiny_language_model(1)
    scorer = tiny_scalar_model()
    ps = list(world.prompts("test"))[:12]
    curve = reward.best_of_n(lm, scorer, ps, ns=(1, 2, 4), seed=3)
    first = sample_responses(lm, ps, 1.0, seed=3 * 7919)
    assert curve.chosen[1] == first.texts
    assert curve.proxy[1] <= curve.proxy[2] + 1e-6 <= curve.proxy[4] + 2e-6
    lo, hi = curve.gold_interval[4]
    assert lo <= curve.gold[4] <= hi


def test_relabel_keeps_the_responses_and_lets_the_new_annotator_choose():
    pairs = clean_pairs("train", 20)
    swapped = [world.PreferencePair(p.prompt, p.rejected, p.chosen) for p in pairs]
    again = reward.relabel(swapped, world.Annotator(tau=1e-3, seed=0))  # a near-perfect annotator
    assert [(p.chosen, p.rejected) for p in again] == [(p.chosen, p.rejected) for p in pairs]


def test_reliability_is_symmetric_and_on_the_diagonal_for_labels_drawn_from_the_models_own_probabilities():
    gen = torch.Generator().manual_seed(0)
    a, b = 2 * torch.randn(40_000, generator=gen), 2 * torch.randn(40_000, generator=gen)
    first_chosen = torch.rand(40_000, generator=gen) < torch.sigmoid(a - b)   # a Bradley-Terry annotator
    chosen, rejected = torch.where(first_chosen, a, b), torch.where(first_chosen, b, a)
    rows = reward.reliability(chosen, rejected, bins=10)
    assert len(rows) == 10 and sum(r["count"] for r in rows) == 80_000
    for low, high in zip(rows, reversed(rows)):  # each pair counted both ways round
        assert low["count"] == high["count"] and low["observed"] == pytest.approx(1 - high["observed"])
    assert all(abs(r["predicted"] - r["observed"]) < 0.03 for r in rows)
    # a model that is sure of everything it gets right is not calibrated: the check can fail
    overconfident = reward.reliability(4 * chosen, 4 * rejected, bins=10)
    assert max(abs(r["predicted"] - r["observed"]) for r in overconfident) > 0.1


def test_gold_agreement_counts_only_pairs_whose_gold_gap_exceeds_min_gap():
    model = tiny_scalar_model()
    p = [q for q in world.prompts("test") if q.category == "answerable"][0]
    a = [world.response(p, "correct"), world.response(p, "correct"), world.response(p, "correct")]
    b = [world.response(p, "wrong"), world.response(p, "verbose"), world.response(p, "correct")]
    gaps = [abs(world.gold_reward(p, x) - world.gold_reward(p, y)) for x, y in zip(a, b)]
    assert gaps[0] == 2.0 and 0 < gaps[1] < 1.0 and gaps[2] == 0
    assert reward.gold_agreement(model, [p] * 3, a, b)["n"] == 2
    assert reward.gold_agreement(model, [p] * 3, a, b, min_gap=1.0)["n"] == 1
