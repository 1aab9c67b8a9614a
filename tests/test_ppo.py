"""Tests of helpers/ppo.py and helpers/rlhf.py: every expected value is computed independently here, from the
closed forms."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import random

import pytest
import torch

from helpers import ppo, rlhf, world
from helpers.pretrain import load_reference
from helpers.model import LanguageModel, ModelConfig
from helpers.optimal import gain_fraction, optimal_policy
from helpers.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTHS = [5, 3, 1, 4]   # response lengths of the rows of the small batches below


def _batch(seed: int = 0):
    """Random rewards and values [4, 5] with a prefix mask of LENGTHS; garbage (999) on padding."""
    gen = torch.Generator().manual_seed(seed)
    B, L = len(LENGTHS), max(LENGTHS)
    mask = torch.zeros(B, L)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = 1
    rewards = torch.randn(B, L, generator=gen).masked_fill(mask == 0, 999.0)
    values = torch.randn(B, L, generator=gen).masked_fill(mask == 0, 999.0)
    return rewards, values, mask


# ----------------------------------------------------------------------------------------------------------------
# GAE

@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_gae_with_lambda_one_is_discounted_return_minus_value(gamma):
    rewards, values, mask = _batch()
    advantages, returns = ppo.gae(rewards, values, mask, gamma=gamma, lam=1.0)
    for i, n in enumerate(LENGTHS):
        for t in range(n):
            discounted_return = sum(gamma ** (k - t) * float(rewards[i, k]) for k in range(t, n))
            assert advantages[i, t].item() == pytest.approx(discounted_return - float(values[i, t]), abs=1e-5)
            assert returns[i, t].item() == pytest.approx(discounted_return, abs=1e-5)
    assert bool((advantages[mask == 0] == 0).all()) and bool((returns[mask == 0] == 0).all())


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_gae_with_lambda_zero_is_the_one_step_td_error(gamma):
    rewards, values, mask = _batch(seed=1)
    advantages, _ = ppo.gae(rewards, values, mask, gamma=gamma, lam=0.0)
    for i, n in enumerate(LENGTHS):
        for t in range(n):
            next_value = float(values[i, t + 1]) if t + 1 < n else 0.0   # the episode ends after the last token
            td_error = float(rewards[i, t]) + gamma * next_value - float(values[i, t])
            assert advantages[i, t].item() == pytest.approx(td_error, abs=1e-5)


def test_gae_in_between_is_the_lambda_weighted_sum_of_td_errors():
    rewards, values, mask = _batch(seed=2)
    gamma, lam = 0.95, 0.7
    advantages, _ = ppo.gae(rewards, values, mask, gamma, lam)
    for i, n in enumerate(LENGTHS):
        v = [float(values[i, t]) for t in range(n)] + [0.0]
        deltas = [float(rewards[i, t]) + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            expected = sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, n))
            assert advantages[i, t].item() == pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# the clipped policy loss

EPS = 0.2


@pytest.mark.parametrize("advantage", [1.5, -1.5])
@pytest.mark.parametrize("ratio", [0.5, 0.9, 1.0, 1.1, 1.6])
def test_clipped_loss_gradient_on_both_sides_of_the_clip_range(advantage, ratio):
    """d loss / d log pi = -A * ratio where the unclipped term is active, 0 where the clip removed the incentive:
    above 1 + eps for A > 0 and below 1 - eps for A < 0. Moves the wrong way are never clipped."""
    old = torch.tensor([[-1.0]])
    logprobs = (old + math.log(ratio)).requires_grad_(True)
    mask = torch.ones(1, 1)
    loss, _ = ppo.clipped_policy_loss(logprobs, old, torch.tensor([[advantage]]), mask, EPS)
    loss.backward()
    clipped = (advantage > 0 and ratio > 1 + EPS) or (advantage < 0 and ratio < 1 - EPS)
    closed_form = 0.0 if clipped else -advantage * ratio
    assert logprobs.grad.item() == pytest.approx(closed_form, abs=1e-6)
    # and the value: -min(r A, clip(r) A)
    assert loss.item() == pytest.approx(-min(ratio * advantage, min(max(ratio, 1 - EPS), 1 + EPS) * advantage))


def test_clipped_loss_gradient_matches_autograd_of_the_paper_objective_and_ignores_padding():
    gen = torch.Generator().manual_seed(3)
    old = torch.randn(4, 5, generator=gen)
    logprobs = (old + 0.4 * torch.randn(4, 5, generator=gen)).requires_grad_(True)
    advantages = torch.randn(4, 5, generator=gen)
    _, _, mask = _batch()
    loss, metrics = ppo.clipped_policy_loss(logprobs, old, advantages, mask, EPS)
    loss.backward()
    # the paper's objective, written out token by token and differentiated separately
    x = logprobs.detach().clone().requires_grad_(True)
    terms = []
    for i in range(4):
        for t in range(5):
            if mask[i, t]:
                r = torch.exp(x[i, t] - old[i, t])
                terms.append(torch.min(r * advantages[i, t], torch.clamp(r, 1 - EPS, 1 + EPS) * advantages[i, t]))
    (-torch.stack(terms).mean()).backward()
    assert torch.allclose(logprobs.grad, x.grad, atol=1e-6)
    assert bool((logprobs.grad[mask == 0] == 0).all())
    ratio = torch.exp(logprobs.detach() - old)
    clipped = ((advantages > 0) & (ratio > 1 + EPS)) | ((advantages < 0) & (ratio < 1 - EPS))
    assert metrics["policy/clipfrac"] == pytest.approx(float(clipped[mask == 1].float().mean()))
    assert metrics["policy/approxkl"] == pytest.approx(
        float(0.5 * ((logprobs.detach() - old)[mask == 1] ** 2).mean()), rel=1e-5)


def test_clipped_loss_at_ratio_one_is_minus_the_mean_advantage():
    _, _, mask = _batch()
    advantages = torch.randn(4, 5, generator=torch.Generator().manual_seed(4))
    old = torch.zeros(4, 5)
    loss, metrics = ppo.clipped_policy_loss(old.clone(), old, advantages, mask, EPS)
    assert loss.item() == pytest.approx(-float(advantages[mask == 1].mean()), abs=1e-6)
    assert metrics["policy/clipfrac"] == 0.0 and metrics["policy/approxkl"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# the clipped value loss

@pytest.mark.parametrize("new_value, expected_grad", [
    (0.1, 0.1 - 1.0),   # moved less than the clip range: ordinary squared error, grad V - R
    (0.5, 0.0),         # moved past the clip towards R: the clipped error (0.3 - 1)^2 is larger and flat in V
    (-0.5, -0.5 - 1.0),  # moved past the clip away from R: the unclipped error is larger, so it is corrected
])
def test_clipped_value_loss_gradient(new_value, expected_grad):
    values = torch.tensor([[new_value]], requires_grad=True)
    loss, _ = ppo.clipped_value_loss(values, torch.tensor([[0.1]]), torch.tensor([[1.0]]), torch.ones(1, 1), 0.2)
    loss.backward()
    assert values.grad.item() == pytest.approx(expected_grad, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# rewards, KL, whitening

def test_kl_penalised_reward_puts_the_score_on_the_last_real_token():
    _, _, mask = _batch()
    gen = torch.Generator().manual_seed(5)
    logprobs, ref_logprobs = -torch.rand(4, 5, generator=gen), -torch.rand(4, 5, generator=gen)
    scores = torch.tensor([10.0, 20.0, 30.0, 40.0])
    beta = 0.3
    rewards, kl = ppo.kl_penalised_rewards(logprobs, ref_logprobs, scores, mask, beta)
    for i, n in enumerate(LENGTHS):
        for t in range(5):
            penalty = -beta * float(logprobs[i, t] - ref_logprobs[i, t])
            expected = 0.0 if t >= n else penalty + (float(scores[i]) if t == n - 1 else 0.0)
            assert rewards[i, t].item() == pytest.approx(expected, abs=1e-5)
    # summed over the response, the penalty is -beta * log pi(y|x)/pi_ref(y|x)
    assert torch.allclose(kl.sum(-1), ((logprobs - ref_logprobs) * mask).sum(-1))


def test_kl_is_zero_for_identical_policies():
    _, _, mask = _batch()
    logprobs = -torch.rand(4, 5, generator=torch.Generator().manual_seed(6))
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0])
    rewards, kl = ppo.kl_penalised_rewards(logprobs, logprobs.clone(), scores, mask, beta=0.5)
    assert bool((kl == 0).all())
    assert torch.allclose(rewards.sum(-1), scores)   # only the scores are left


def test_whitening_keeps_the_mean_when_asked_and_ignores_padding():
    rewards, _, mask = _batch(seed=7)
    real = rewards[mask == 1]
    kept = ppo.whiten(rewards, mask, shift_mean=False)[mask == 1]
    centred = ppo.whiten(rewards, mask)[mask == 1]
    assert float(kept.mean()) == pytest.approx(float(real.mean()), abs=1e-5)
    assert float(centred.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(centred.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(kept.std()) == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(centred, (real - real.mean()) / real.std(), atol=1e-5)


def test_reward_whitening_that_keeps_the_mean_adds_one_constant_to_every_token():
    """whiten(r, shift_mean=False) = r/std + mean*(1 - 1/std): the same constant on every real token (with gamma = 1,
    a response of T tokens collects T times it: a length term)."""
    rewards, _, mask = _batch(seed=3)
    rewards = rewards + 2.0 * mask                       # a clearly non-zero mean
    real = rewards[mask == 1]
    mean, std = real.mean(), real.std()                 # unbiased, as whiten
    added = ppo.whiten(rewards, mask, shift_mean=False)[mask == 1] - real / std
    assert torch.allclose(added, torch.full_like(added, float(mean * (1 - 1 / std))), atol=1e-5)
    assert float(rlhf.reward_whitening_constant(rewards, mask)) == pytest.approx(float(mean * (1 - 1 / std)), abs=1e-5)


def _rollout_stub(cfg):
    """A Rollouts with random log-probs, values and scores (no model): enough for compute_advantages."""
    gen = torch.Generator().manual_seed(11)
    _, values, mask = _batch(seed=5)
    logprobs = -torch.rand(mask.shape, generator=gen) * mask
    return rlhf.Rollouts(prompts=[], texts=[], ended=torch.tensor([True, False, True, True]), input_ids=None,
                         attention_mask=None, context=0, mask=mask, logprobs=logprobs, ref_logprobs=logprobs * 1.1,
                         values=values * mask, entropy=mask, scores=torch.tensor([2.0, -1.0, 0.5, 3.0]))


@pytest.mark.parametrize("keep_mean", [True, False])
def test_compute_advantages_whitens_rewards_with_or_without_the_constant(keep_mean):
    cfg = dataclasses.replace(rlhf.PPOConfig(), whiten_rewards_keep_mean=keep_mean)
    batch = rlhf.compute_advantages(_rollout_stub(cfg), 0.1, cfg)
    raw = rlhf.compute_advantages(_rollout_stub(cfg), 0.1, dataclasses.replace(cfg, whiten_rewards=False)).rewards
    m = batch.mask == 1
    real = raw[m]
    expected = real / real.std() + (real.mean() * (1 - 1 / real.std()) if keep_mean else 0.0)
    assert torch.allclose(batch.rewards[m], expected, atol=1e-5)
    # the missing-<eos> penalty came off the score of row 1 (not ended) before the whitening
    assert float(raw[1, LENGTHS[1] - 1]) == pytest.approx(-1.0 - 1.0 - 0.1 * float(batch.kl[1, LENGTHS[1] - 1]), abs=1e-5)


def test_compute_advantages_leaves_advantages_raw_when_whitening_is_off():
    cfg = rlhf.PPOConfig()
    white = rlhf.compute_advantages(_rollout_stub(cfg), 0.1, cfg)
    raw = rlhf.compute_advantages(_rollout_stub(cfg), 0.1, dataclasses.replace(cfg, whiten_advantages=False))
    expected, _ = ppo.gae(raw.rewards, raw.values, raw.mask, cfg.gamma, cfg.lam)
    assert torch.allclose(raw.advantages, expected)
    assert float(white.advantages[white.mask == 1].std()) == pytest.approx(1.0, abs=1e-4)
    assert not torch.allclose(raw.advantages, white.advantages)


# ----------------------------------------------------------------------------------------------------------------
# the KL controllers

@pytest.mark.parametrize("kl, factor", [(12.0, 1 + 0.1 * 0.2), (6.6, 1 + 0.1 * 0.1), (6.0, 1.0),
                                        (5.4, 1 - 0.1 * 0.1), (1.0, 1 - 0.1 * 0.2)])
def test_adaptive_controller_moves_beta_towards_the_kl_target(kl, factor):
    controller = ppo.AdaptiveKLController(beta=0.1, target=6.0, k_beta=0.1)
    assert controller.update(kl) == pytest.approx(0.1 * factor)


def test_fixed_controller_keeps_beta():
    controller = ppo.FixedKLController(0.2)
    assert controller.update(100.0) == 0.2 and controller.update(0.0) == 0.2


# ----------------------------------------------------------------------------------------------------------------
# the enumerable setting

def test_enumerable_ppo_gains_most_of_the_way_to_the_optimum():
    """A shortened run on a synthetic view (N = 48 prompts, K = 5 candidates): PPO from samples closes most of the
    objective gap to beta log Z, and lands near pi* = pi_ref exp(r / beta) / Z."""
    gen = torch.Generator().manual_seed(8)
    ref_probs = torch.softmax(torch.randn(48, 5, generator=gen), -1)
    rewards = torch.randint(-4, 3, (48, 5), generator=gen).float() / 2   # steps of 0.5, like the gold reward
    cfg = ppo.EnumerablePPOConfig(iterations=40, batch_size=256)
    result = ppo.enumerable_ppo(ref_probs, rewards, cfg)
    assert result.history[0]["gain_fraction"] < 0.7
    assert result.history[-1]["gain_fraction"] > 0.95
    assert gain_fraction(result.probs, ref_probs, rewards, 1.0) == pytest.approx(result.history[-1]["gain_fraction"])
    assert float((result.probs - optimal_policy(ref_probs, rewards, 1.0)).abs().max()) < 0.15


# ----------------------------------------------------------------------------------------------------------------
# the loop on the language model

@pytest.fixture(scope="module")
def reference():
    return load_reference()


TINY = rlhf.PPOConfig(iterations=2, batch_size=16, minibatch_size=8, epochs=2, max_new_tokens=12, eval_every=0)


def test_train_ppo_starts_at_zero_kl_and_logs_the_practitioners_metrics(reference):
    prompts = list(world.prompts("train"))[:32]
    result = rlhf.train_ppo(None, reference, rlhf.gold_reward_function, prompts, [], TINY)
    first, second = result.history
    assert first["objective/kl"] == 0.0            # the first batch is sampled by pi = pi_ref
    assert second["objective/kl"] != 0.0           # and then the policy has moved
    assert first["policy/approxkl"] > 0.0 and 0.0 <= first["policy/clipfrac"] <= 1.0
    # with the gold reward as the reward function, the proxy score is the gold reward
    assert first["objective/scores"] == pytest.approx(first["objective/gold"])
    for name in ("objective/entropy", "loss/value", "response/length", "response/eos_rate", "beta"):
        assert name in first
    assert all(not p.requires_grad for p in reference.parameters())


def test_train_ppo_keeps_the_check_with_the_best_validation_win_rate_not_the_best_gold(reference):
    """The selection rule: the kept iteration has the highest val/win_rate (the judged win rate against the
    reference, helpers.selection), iteration 0 (the reference itself) scores exactly 0.5, and the figure is the one
    selection.validation_win_rate gives on the same prompts."""
    from helpers import selection
    prompts, val = list(world.prompts("train"))[::20], list(world.prompts("validation"))[::15]
    cfg = dataclasses.replace(TINY, iterations=3, eval_every=1, eval_prompts=len(val), lr=3e-3,
                              clip_range_value=None, max_grad_norm=None)      # the switches off run too
    result = rlhf.train_ppo(None, reference, rlhf.gold_reward_function, prompts, val, cfg)
    checks = {h["iteration"]: h["val/win_rate"] for h in result.history if "val/win_rate" in h}
    assert checks[0] == pytest.approx(0.5)
    assert result.best_iteration == max(checks, key=lambda i: (checks[i], -i))
    pool = random.Random(cfg.seed).sample(val, len(val))
    assert selection.validation_win_rate(result.policy, reference, pool).value == pytest.approx(checks[result.best_iteration])


def test_ppo_update_asserts_ratio_one_when_dropout_is_on(reference):
    cfg = TINY
    policy = LanguageModel(ModelConfig(**{**reference.cfg.__dict__, "dropout": 0.3}))
    policy.load_state_dict(reference.state_dict())
    value_model = rlhf.make_value_model(reference)
    prompts = list(world.prompts("train"))[:16]
    gen = torch.Generator().manual_seed(0)
    batch = rlhf.rollout(policy.eval(), reference, value_model, rlhf.gold_reward_function, prompts, cfg, gen,
                        Tokenizer())
    batch = rlhf.compute_advantages(batch, 0.1, cfg)
    opts = [torch.optim.Adam(m.parameters()) for m in (policy, value_model)]
    rlhf.ppo_update(copy.deepcopy(policy), value_model, batch, *opts, cfg, gen)   # eval mode: passes
    with pytest.raises(AssertionError, match="ratio is not 1"):
        rlhf.ppo_update(policy.train(), value_model, batch, *opts, cfg, gen)


class _SamplesAtTemperatureOne(LanguageModel):
    def generate(self, prompts, max_new_tokens=None, temperature=1.0, top_k=None, generator=None):
        return super().generate(prompts, max_new_tokens, 1.0, top_k, generator)


def test_rollout_refuses_scores_at_another_temperature_than_sampling(reference):
    policy = _SamplesAtTemperatureOne(reference.cfg)
    policy.load_state_dict(reference.state_dict())
    policy.eval()
    cfg = rlhf.PPOConfig(temperature=0.7, max_new_tokens=12)
    with pytest.raises(RuntimeError, match="same temperature"):
        rlhf.rollout(policy, reference, rlhf.make_value_model(reference), rlhf.gold_reward_function,
                    list(world.prompts("train"))[:8], cfg, torch.Generator().manual_seed(0), Tokenizer())


def test_the_committed_ablation_was_built_by_the_current_recipe():
    """helpers/artifacts/ppo_ablation.json (make artifacts) holds one row per entry of ABLATIONS, in order, each
    trained with today's PPOConfig plus its changes: a changed default makes the stored table stale, and this fails."""
    from helpers.bench import ppo as ppo_bench
    table = ppo_bench.load_ablation()
    assert [r["name"] for r in table["rows"]] == [name for name, _ in ppo_bench.ABLATIONS]
    assert [r["changes"] for r in table["rows"]] == [changes for _, changes in ppo_bench.ABLATIONS]
    assert table["config"] == json.loads(json.dumps(dataclasses.asdict(ppo_bench.ablation_config({}))))
    assert table["enumerable"]["config"] == json.loads(json.dumps(dataclasses.asdict(ppo.EnumerablePPOConfig())))
    for row in table["rows"]:
        assert len([h for h in row["history"] if "objective/kl" in h]) == ppo_bench.ABLATION_BASE.iterations
