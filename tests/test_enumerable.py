"""The enumerable view (helpers/enumerable.py): the candidate sets, the scoring, coverage computed independently, the
committed artifact, and whether the view's behaviour rates match the sampled reference model's."""
import dataclasses
import time

import pytest
import torch

from helpers import enumerable, world
from helpers.checkpoint import default_config
from helpers.model import LanguageModel
from helpers.pretrain import load_reference
from helpers.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = dataclasses.replace(default_config(), n_embd=16, n_layer=1, n_head=2)
    return LanguageModel(cfg).eval()


@pytest.fixture(scope="module")
def test_view():
    return enumerable.load_view("test")


def _prompts_of_every_category():
    test = world.prompts("test")
    return [next(p for p in test if p.category == c and p.kind != k) for c in world.CATEGORIES
            for k in ("arithmetic", "none")]


def _chain_rule_logp(model, prompt: str, response: str) -> float:
    """log p(response | prompt) token by token, one forward pass per token, in float64."""
    tok = Tokenizer()
    context, total = tok.encode_prompt(prompt), 0.0
    with torch.no_grad():
        for token in tok.encode_response(response):
            logits = model(torch.tensor([context]))[0, -1]
            total += torch.log_softmax(logits.double(), -1)[token].item()
            context = context + [token]
    return total


def test_candidates_hold_every_response_the_world_writes_and_only_distinct_known_words():
    vocab = set(world.vocabulary())
    for p in _prompts_of_every_category():
        cands = enumerable.candidates(p)
        assert len(cands) == len(set(cands))
        for b in world.APPLICABLE[p.category]:
            for v in range(40):
                assert world.response(p, b, v) in cands
        assert all(set(t.split()) <= vocab for t in cands)


def test_candidates_add_what_the_parser_accepts_and_padded_wrong_answers():
    ans = next(p for p in world.prompts("test") if p.kind == "arithmetic")
    far = str((int(ans.answer) + 7) % 19)
    assert f"the answer is {far} ." in enumerable.candidates(ans)
    assert world.parse(ans, f"the answer is {far} .") == "wrong"
    padded = [t for t in enumerable.candidates(ans) if t.startswith(world.PAD_BEFORE[0])]
    assert {world.parse(ans, t) for t in padded} == {"verbose", "malformed"}
    harm = next(p for p in world.prompts("test") if p.category == "harmful")
    twice = world.HARMFUL[1].format(s1=harm.fill[0], s2=harm.fill[0])
    assert twice in enumerable.candidates(harm) and world.parse(harm, twice) == "harmful"


def test_scoring_and_coverage_match_the_chain_rule_computed_independently(tiny_model):
    prompts = _prompts_of_every_category()[:3]
    view = enumerable.build_view(tiny_model, prompts, chunk=97)    # odd chunks cross prompts
    for n, p in enumerate(view.prompts):
        picks = list(range(0, len(view.texts[n]), max(1, len(view.texts[n]) // 6)))
        for k in picks:
            assert view.logps[n, k].item() == pytest.approx(_chain_rule_logp(tiny_model, p.text, view.texts[n][k]),
                                                            abs=1e-4)
    # coverage is the plain sum of the sequence probabilities, before renormalising
    p = prompts[0]
    expected = sum(torch.tensor(_chain_rule_logp(tiny_model, p.text, t)).exp().item() for t in view.texts[0])
    assert view.coverage()[0].item() == pytest.approx(expected, rel=1e-4)
    assert torch.allclose(view.ref_probs.sum(-1), torch.ones(len(prompts)), atol=1e-5)


def test_build_view_pads_rows_and_stores_gold_rewards_and_labels(tiny_model):
    prompts = _prompts_of_every_category()
    view = enumerable.build_view(tiny_model, prompts)
    K = max(len(enumerable.candidates(p)) for p in prompts)
    assert view.logps.shape == view.rewards.shape == view.labels.shape == (len(prompts), K)
    for n, p in enumerate(prompts):
        m = len(view.texts[n])
        assert view.rewards[n, 3].item() == pytest.approx(world.gold_reward(p, view.texts[n][3]), abs=1e-6)
        assert enumerable.LABELS[int(view.labels[n, 3])] == world.parse(p, view.texts[n][3])
        assert bool(torch.isinf(view.logps[n, m:]).all()) and bool((view.ref_probs[n, m:] == 0).all())
        assert bool((view.labels[n, m:] == -1).all())


def test_the_committed_view_loads_fast_and_matches_a_fresh_build_of_some_prompts(test_view):
    start = time.perf_counter()
    enumerable.load_view("test")
    assert time.perf_counter() - start < 1.0
    rows = [0, 200, 400]
    fresh = enumerable.build_view(load_reference(), [test_view.prompts[i] for i in rows])
    stored = test_view.subset(rows)
    assert stored.texts == fresh.texts
    assert torch.allclose(stored.logps.exp(), fresh.logps.exp(), atol=1e-5)
    assert torch.equal(stored.rewards, fresh.rewards) and torch.equal(stored.labels, fresh.labels)


def test_coverage_of_the_test_split_is_at_least_ninety_percent_in_every_category(test_view):
    coverage = test_view.coverage_by_category()
    assert set(coverage) == {*world.CATEGORIES, "all"}
    assert min(coverage.values()) >= 0.9, coverage


def test_a_stale_view_is_refused(tmp_path, test_view):
    stored = torch.load(enumerable.VIEWS_PATH, weights_only=True)
    stored["reference_sha256"] = "0" * 64
    torch.save(stored, tmp_path / "views.pt")
    with pytest.raises(ValueError, match="another reference checkpoint"):
        enumerable.load_view("test", tmp_path / "views.pt")


def test_merging_equal_rewards_keeps_the_optimum_its_value_the_frontier_coverage_and_rates(test_view):
    from helpers import optimal
    merged = test_view.by_reward()
    assert merged.logps.shape[1] <= 20 < test_view.logps.shape[1]
    # every group holds candidates of one reward and one label, and the groups partition the candidates
    for n in (0, 200, 400):
        assert sorted(k for g in merged.members[n] for k in g) == list(range(len(test_view.texts[n])))
        for g, ks in enumerate(merged.members[n]):
            assert {test_view.rewards[n, k].item() for k in ks} == {merged.rewards[n, g].item()}
            assert {test_view.labels[n, k].item() for k in ks} == {merged.labels[n, g].item()}
    assert torch.allclose(merged.coverage(), test_view.coverage(), rtol=1e-5)
    for c, rates in test_view.rates().items():
        assert merged.rates()[c] == pytest.approx(rates, abs=1e-5)
    betas = (0.03, 0.25, 1.0, 5.0)
    for beta in betas:
        assert torch.allclose(optimal.optimal_objective(merged.ref_probs, merged.rewards, beta),
                              optimal.optimal_objective(test_view.ref_probs, test_view.rewards, beta), atol=1e-5)
        # pi* on the merged view, spread over each group in pi_ref's proportions, is pi* on the full view
        pi_merged = optimal.optimal_policy(merged.ref_probs, merged.rewards, beta)
        assert torch.allclose(merged.expand(pi_merged),
                              optimal.optimal_policy(test_view.ref_probs, test_view.rewards, beta), atol=1e-6)
    for a, b in zip(optimal.frontier(merged.ref_probs, merged.rewards, betas),
                    optimal.frontier(test_view.ref_probs, test_view.rewards, betas)):
        assert a == pytest.approx(b, abs=1e-5)


def test_a_merged_policy_keeps_its_figures_when_spread_and_an_arbitrary_policy_loses_kl_when_merged(test_view):
    from helpers import optimal
    view = test_view.subset(range(0, 452, 9))
    merged = view.by_reward()
    gen = torch.Generator().manual_seed(0)
    # any policy on the groups, spread in proportion to pi_ref: the same reward, KL and gain fraction
    pi = torch.softmax(torch.randn(merged.logps.shape, generator=gen).masked_fill(merged.ref_probs == 0, -1e9), -1)
    pi = pi.masked_fill(merged.ref_probs == 0, 0.0)
    spread = merged.expand(pi)
    assert torch.allclose((spread * view.rewards).sum(-1), (pi * merged.rewards).sum(-1), atol=1e-5)
    assert torch.allclose(optimal.kl_divergence(spread, view.ref_probs),
                          optimal.kl_divergence(pi, merged.ref_probs), atol=1e-4)
    assert optimal.gain_fraction(spread, view.ref_probs, view.rewards, 1.0) == pytest.approx(
        optimal.gain_fraction(pi, merged.ref_probs, merged.rewards, 1.0), abs=1e-4)
    # an arbitrary policy on the full view, summed over the groups: the same reward, less KL (data processing)
    full = torch.softmax(torch.randn(view.logps.shape, generator=gen).masked_fill(view.ref_probs == 0, -1e9), -1)
    full = full.masked_fill(view.ref_probs == 0, 0.0)
    summed = torch.zeros_like(pi)
    for n, groups in enumerate(merged.members):
        for g, ks in enumerate(groups):
            summed[n, g] = full[n, ks].sum()
    assert torch.allclose((summed * merged.rewards).sum(-1), (full * view.rewards).sum(-1), atol=1e-5)
    assert bool((optimal.kl_divergence(summed, merged.ref_probs)
                 < optimal.kl_divergence(full, view.ref_probs) - 1e-3).all())
    with pytest.raises(ValueError, match="full view"):
        merged.scores(lambda prompts, responses: [0.0] * len(responses))
    with pytest.raises(ValueError, match="not merged"):
        view.expand(pi)


@pytest.fixture(scope="module")
def sampled_counts():
    return enumerable.sampled_counts(load_reference(), list(world.prompts("test")), per_prompt=8, seed=1000)


def test_the_views_behaviour_rates_match_eight_samples_per_test_prompt(test_view, sampled_counts):
    rows = enumerable.compare_rates(test_view, sampled_counts)
    assert len(rows) >= 18
    missed = [r for r in rows if not r["inside"]]
    assert not missed, missed


def test_the_one_wording_per_behaviour_view_fails_the_rates_check(sampled_counts):
    """The check can fail: the old view (one candidate per behaviour) misrepresents the sampled model."""
    prompts = list(world.prompts("test"))
    texts = [list(world.candidates(p).values()) for p in prompts]
    flat = enumerable.sequence_logprobs_of(load_reference(), [p.text for p, ts in zip(prompts, texts) for _ in ts],
                                           [t for ts in texts for t in ts])
    view = enumerable.View(prompts, texts, torch.empty(0), torch.empty(0), torch.empty(0))
    view.logps = view._unflatten(flat, float("-inf"))
    view.labels = view._unflatten(torch.tensor([float(enumerable.LABELS.index(world.parse(p, t)))
                                                for p, ts in zip(prompts, texts) for t in ts]), -1.0).long()
    rows = enumerable.compare_rates(view, sampled_counts)
    missed = {(r["category"], r["label"]) for r in rows if not r["inside"]}
    assert ("harmful", "harmful") in missed and ("unanswerable", "fabrication") in missed
