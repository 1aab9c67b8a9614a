"""Analytic truths of the KL-regularised optimum (helpers/optimal.py).

Expected values are computed here, independently of the module: plain float64 sums and closed forms.
"""
import math

import pytest
import torch

from helpers import optimal

BETAS = (0.05, 0.3, 1.0, 4.0)


def _random_problem(seed: int, n: int = 5, k: int = 6):
    """ref_probs and rewards [n, k] in float64, every reference probability > 0."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.softmax(2 * torch.randn(n, k, generator=g, dtype=torch.float64), -1)
    rewards = torch.randn(n, k, generator=g, dtype=torch.float64)
    return ref, rewards


def _random_policy(seed: int, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.softmax(3 * torch.randn(*shape, generator=g, dtype=torch.float64), -1)


def _kl_by_hand(p, q) -> list[float]:
    """sum_k p_k log(p_k / q_k) per row, with 0 log 0 = 0, in a plain Python loop."""
    out = []
    for prow, qrow in zip(p.tolist(), q.tolist()):
        out.append(sum(a * math.log(a / b) for a, b in zip(prow, qrow) if a > 0))
    return out


def _objective_by_hand(pi, ref, rewards, beta) -> list[float]:
    kls = _kl_by_hand(pi, ref)
    return [sum(a * r for a, r in zip(prow, rrow)) - beta * kl
            for prow, rrow, kl in zip(pi.tolist(), rewards.tolist(), kls)]


def _optimum_by_hand(ref, rewards, beta):
    """pi* = ref exp(r / beta) / Z and beta log Z, row by row in plain Python."""
    policies, values = [], []
    for prow, rrow in zip(ref.tolist(), rewards.tolist()):
        weights = [p * math.exp(r / beta) for p, r in zip(prow, rrow)]
        z = sum(weights)
        policies.append([w / z for w in weights])
        values.append(beta * math.log(z))
    return torch.tensor(policies, dtype=torch.float64), torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("beta", BETAS)
def test_objective_equals_beta_log_z_minus_beta_kl_to_the_optimum(beta):
    ref, rewards = _random_problem(0)
    pi_star, beta_log_z = _optimum_by_hand(ref, rewards, beta)
    for seed in range(5):
        pi = _random_policy(seed, ref.shape)
        expected = beta_log_z - beta * torch.tensor(_kl_by_hand(pi, pi_star), dtype=torch.float64)
        assert torch.allclose(optimal.objective(pi, ref, rewards, beta), expected, atol=1e-10)
        assert torch.allclose(torch.tensor(_objective_by_hand(pi, ref, rewards, beta), dtype=torch.float64),
                              expected, atol=1e-10)


@pytest.mark.parametrize("beta", BETAS)
def test_optimal_policy_and_value_match_the_closed_form(beta):
    ref, rewards = _random_problem(1)
    pi_star, beta_log_z = _optimum_by_hand(ref, rewards, beta)
    assert torch.allclose(optimal.optimal_policy(ref, rewards, beta), pi_star, atol=1e-12)
    assert torch.allclose(optimal.optimal_objective(ref, rewards, beta), beta_log_z, atol=1e-10)
    # the optimum attains its value: J(pi*) = beta log Z
    assert torch.allclose(optimal.objective(pi_star, ref, rewards, beta), beta_log_z, atol=1e-10)


@pytest.mark.parametrize("beta", BETAS)
def test_random_perturbations_of_the_optimal_policy_never_beat_it(beta):
    ref, rewards = _random_problem(2)
    pi_star = optimal.optimal_policy(ref, rewards, beta)
    best = torch.tensor(_objective_by_hand(pi_star, ref, rewards, beta), dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for scale in (1e-3, 1e-2, 0.1, 1.0):
        for _ in range(50):
            logits = torch.log(pi_star) + scale * torch.randn(pi_star.shape, generator=g, dtype=torch.float64)
            pi = torch.softmax(logits, -1)
            value = torch.tensor(_objective_by_hand(pi, ref, rewards, beta), dtype=torch.float64)
            assert bool((value <= best + 1e-12).all()), f"a perturbation of size {scale} beat pi*"


def test_two_candidates_by_hand():
    # pi_ref = (1/4, 3/4), r = (1, 0), beta = 1/2: pi*(y1) = (e^2 / 4) / (e^2 / 4 + 3 / 4) = e^2 / (e^2 + 3)
    ref = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    rewards = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    e2 = math.exp(2.0)
    pi = optimal.optimal_policy(ref, rewards, 0.5)
    assert pi[0, 0].item() == pytest.approx(e2 / (e2 + 3), abs=1e-12)
    assert pi[0, 1].item() == pytest.approx(3 / (e2 + 3), abs=1e-12)
    # beta log Z = 0.5 * log(e^2 / 4 + 3 / 4)
    assert optimal.optimal_objective(ref, rewards, 0.5).item() == pytest.approx(0.5 * math.log((e2 + 3) / 4),
                                                                                abs=1e-12)


def test_large_beta_gives_the_reference_policy():
    ref, rewards = _random_problem(4)
    assert torch.allclose(optimal.optimal_policy(ref, rewards, 1e6), ref, atol=1e-5)


def test_small_beta_gives_the_argmax_of_the_reward():
    ref, rewards = _random_problem(5)
    pi = optimal.optimal_policy(ref, rewards, 1e-3)
    one_hot = torch.nn.functional.one_hot(rewards.argmax(-1), rewards.shape[-1]).to(pi)
    assert torch.allclose(pi, one_hot, atol=1e-6)


def test_padding_candidates_with_zero_reference_probability_stay_zero():
    # the last candidate is padding: whatever its reward, it gets no probability and does not change Z
    ref = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    rewards = torch.tensor([[0.0, 1.0, 100.0], [1.0, 0.0, -1.0]], dtype=torch.float64)
    for beta in BETAS:
        pi = optimal.optimal_policy(ref, rewards, beta)
        assert pi[0, 2].item() == 0.0
        assert torch.allclose(pi.sum(-1), torch.ones(2, dtype=torch.float64))
        expected = beta * math.log(0.5 + 0.5 * math.exp(1.0 / beta))
        assert optimal.optimal_objective(ref, rewards, beta)[0].item() == pytest.approx(expected, abs=1e-10)
        assert math.isfinite(optimal.objective(pi, ref, rewards, beta)[0].item())


@pytest.mark.parametrize("beta", BETAS)
def test_gain_fraction_is_one_at_the_optimum_and_zero_at_the_reference(beta):
    ref, rewards = _random_problem(6)
    pi_star = optimal.optimal_policy(ref, rewards, beta)
    assert optimal.gain_fraction(pi_star, ref, rewards, beta) == pytest.approx(1.0, abs=1e-9)
    assert optimal.gain_fraction(ref, ref, rewards, beta) == pytest.approx(0.0, abs=1e-9)
    halfway = 0.5 * ref + 0.5 * pi_star
    assert 0.0 < optimal.gain_fraction(halfway, ref, rewards, beta) < 1.0


def test_kl_divergence_matches_a_hand_written_sum():
    p = _random_policy(7, (4, 5))
    q = _random_policy(8, (4, 5))
    expected = torch.tensor(_kl_by_hand(p, q), dtype=torch.float64)
    assert torch.allclose(optimal.kl_divergence(p, q), expected, atol=1e-12)
    assert torch.allclose(optimal.kl_divergence(p, p), torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_kl_divergence_counts_zero_log_zero_as_zero():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    assert optimal.kl_divergence(p, q).item() == pytest.approx(math.log(2), abs=1e-12)
    # and mass where q has none makes it infinite
    assert optimal.kl_divergence(q, p).item() == math.inf


def test_frontier_kl_and_reward_fall_as_beta_rises():
    ref, rewards = _random_problem(9, n=8)
    betas = [10 ** (e / 4) for e in range(-8, 9)]  # 0.01 .. 100, log-spaced
    points = optimal.frontier(ref, rewards, betas)
    kls = [p["kl"] for p in points]
    rs = [p["reward"] for p in points]
    assert all(a > b for a, b in zip(kls, kls[1:])), kls
    assert all(a > b for a, b in zip(rs, rs[1:])), rs
    for p in points:
        # each point is the optimum for its beta: reward - beta * KL = beta log Z
        assert p["reward"] - p["beta"] * p["kl"] == pytest.approx(p["objective"], abs=1e-9)
    # the ends: near the argmax's reward at small beta, near the reference's at large beta
    assert rs[0] == pytest.approx(rewards.max(-1).values.mean().item(), abs=1e-3)
    assert rs[-1] == pytest.approx((ref * rewards).sum(-1).mean().item(), abs=1e-2)


ref_, rewards_ = _random_problem(10, n=2, k=3)
BAD_INPUTS = {
    "beta zero": (ref_, rewards_, 0.0),
    "beta negative": (ref_, rewards_, -1.0),
    "shape mismatch": (ref_, rewards_[:, :2], 1.0),
    "probs not summing to one": (ref_ * 0.9, rewards_, 1.0),
    "negative probs": (torch.tensor([[1.5, -0.5, 0.0]], dtype=torch.float64), rewards_[:1], 1.0),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
@pytest.mark.parametrize("function", ["optimal_policy", "optimal_objective", "objective", "gain_fraction",
                                      "frontier"])
def test_bad_inputs_raise_value_error(name, function):
    ref, rewards, beta = BAD_INPUTS[name]
    with pytest.raises(ValueError):
        if function in ("objective", "gain_fraction"):
            getattr(optimal, function)(torch.full_like(ref, 1 / ref.shape[-1]), ref, rewards, beta)
        elif function == "frontier":
            optimal.frontier(ref, rewards, [beta])
        else:
            getattr(optimal, function)(ref, rewards, beta)


# ----------------------------------------------------------------------------------------------------------------
# Best-of-N on the enumerable view

def _best_of_n_monte_carlo(ref: torch.Tensor, scores: torch.Tensor, n: int, draws: int, seed: int) -> torch.Tensor:
    """Frequencies of Best-of-n picks over ``draws`` rounds: n draws from ref, the highest score wins, ties broken
    by a uniformly random draw among the tied ones. ref, scores: [K] -> [K]."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.multinomial(ref.expand(draws, -1), n, replacement=True, generator=g)       # [draws, n]
    s = scores[picks] + 1e-9 * torch.rand(draws, n, generator=g, dtype=torch.float64)          # random tie-break
    winner = picks.gather(1, s.argmax(1, keepdim=True)).squeeze(1)
    return torch.bincount(winner, minlength=len(ref)).double() / draws


@pytest.mark.parametrize("n", (1, 2, 4, 16))
def test_best_of_n_closed_form_matches_monte_carlo_with_ties(n):
    ref = torch.tensor([0.3, 0.1, 0.2, 0.15, 0.25, 0.0], dtype=torch.float64)
    scores = torch.tensor([0.5, 1.0, 0.5, -1.0, 1.0, 9.0], dtype=torch.float64)   # two ties; padding scores high
    exact = optimal.best_of_n_policy(ref, scores, n)
    mc = _best_of_n_monte_carlo(ref, scores, n, 200_000, seed=n)
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert exact[-1].item() == 0.0
    assert torch.allclose(exact, mc, atol=4e-3), (exact, mc)


def test_best_of_one_is_the_reference_and_large_n_the_best_candidates_in_reference_proportion():
    ref, scores = _random_problem(3)
    assert torch.allclose(optimal.best_of_n_policy(ref, scores, 1), ref)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    big = optimal.best_of_n_policy(ref, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), 400)
    assert torch.allclose(big, torch.tensor([0.4, 0.0, 0.6], dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("n", (2, 4, 16, 64))
def test_best_of_n_kl_meets_the_bound_with_equality_without_ties_and_below_it_with_ties(n):
    ref, scores = _random_problem(7, n=4, k=200)      # distinct scores, many candidates: the bound is nearly tight
    kl = optimal.kl_divergence(optimal.best_of_n_policy(ref, scores, n), ref)
    bound = optimal.best_of_n_kl_bound(n)
    assert bool((kl <= bound + 1e-9).all())
    # without ties KL = log n - (n-1)/n up to the discreteness of K = 200 candidates (Beirami et al. 2024)
    assert kl.max().item() > bound - 0.05
    tied = torch.round(scores)                       # a handful of score levels: strictly below the bound
    assert bool((optimal.kl_divergence(optimal.best_of_n_policy(ref, tied, n), ref) < bound - 0.01).all())


def test_a_best_of_n_that_ignores_ties_fails_the_monte_carlo_check():
    """The check can fail: breaking ties by the lowest index (argmax) is not what Best-of-n does."""
    ref = torch.tensor([0.5, 0.5], dtype=torch.float64)
    scores = torch.tensor([1.0, 1.0], dtype=torch.float64)
    wrong = torch.tensor([1 - 0.5 ** 4, 0.5 ** 4], dtype=torch.float64)      # index 0 wins whenever it is drawn
    mc = _best_of_n_monte_carlo(ref, scores, 4, 100_000, seed=0)
    assert not torch.allclose(wrong, mc, atol=4e-3)
    assert torch.allclose(optimal.best_of_n_policy(ref, scores, 4), mc, atol=4e-3)
