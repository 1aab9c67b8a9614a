"""The scorecard: Wilson intervals, rates on hand-made samples, win rate, sequence-level KL, the full protocol."""
from __future__ import annotations

import itertools
import math
import statistics

import pytest
import torch

from helpers import evaluate, world
from helpers.evaluate import Samples, score_samples, sequence_kl, wilson_interval, win_rate
from helpers.model import LanguageModel, ModelConfig
from helpers.tokenizer import Tokenizer

TOK = Tokenizer()
# a short context keeps full-length sampling cheap: the longest test prompt is 20 tokens
TINY = ModelConfig(vocab_size=len(TOK), block_size=30, n_layer=1, n_head=2, n_embd=16, dropout=0.0,
                   pad_id=TOK.pad_id, eos_id=TOK.eos_id)
Z = 1.96


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def tiny_model(seed: int, std: float | None = None) -> LanguageModel:
    torch.manual_seed(seed)
    model = LanguageModel(TINY).eval()
    if std is not None:
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def of(category: str, k: int) -> list[world.Prompt]:
    return [p for p in world.prompts("test") if p.category == category][:k]


# ----------------------------------------------------------------------------------------------------------------
# wilson_interval

def wilson_by_quadratic(k: int, n: int) -> tuple[float, float]:
    """The Wilson interval is the set of pi with (p - pi)^2 <= z^2 pi (1 - pi) / n: the roots of a quadratic."""
    p = k / n
    a = 1 + Z * Z / n
    b = -(2 * p + Z * Z / n)
    c = p * p
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize("k, n", [(1, 10), (5, 10), (7, 20), (37, 452), (99, 100)])
def test_wilson_interval_bounds_solve_the_score_test_quadratic(k, n):
    lo, hi = wilson_interval(k, n)
    elo, ehi = wilson_by_quadratic(k, n)
    assert lo == pytest.approx(elo, abs=1e-12)
    assert hi == pytest.approx(ehi, abs=1e-12)
    assert lo < k / n < hi


@pytest.mark.parametrize("n", [1, 10, 452])
def test_wilson_interval_at_zero_and_all_successes_has_closed_forms(n):
    # k = 0: [0, z^2 / (n + z^2)]; k = n: [n / (n + z^2), 1]
    lo, hi = wilson_interval(0, n)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(Z * Z / (n + Z * Z), abs=1e-12)
    lo, hi = wilson_interval(n, n)
    assert lo == pytest.approx(n / (n + Z * Z), abs=1e-12) and hi == pytest.approx(1.0, abs=1e-12)


def test_wilson_interval_always_contains_the_observed_rate():
    for n in range(1, 60):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi, (k, n, lo, hi)


def test_wilson_interval_of_no_data_is_undefined():
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)


def test_rate_reports_value_and_interval():
    rate = evaluate.Rate(3, 12)
    assert rate.value == 0.25
    assert rate.interval == pytest.approx(wilson_by_quadratic(3, 12))
    assert "3/12" in str(rate)


# ----------------------------------------------------------------------------------------------------------------
# score_samples on hand-made samples

def hand_samples() -> tuple[Samples, dict]:
    """Ten responses with known behaviours; returns the samples and the figures expected, counted by hand."""
    h, a, u = of("harmful", 3), of("answerable", 4), of("unanswerable", 3)
    rows = [  # (prompt, text, ended)
        (h[0], world.response(h[0], "harmful", 0), True),
        (h[1], world.response(h[1], "harmful", 4), True),
        (h[2], world.response(h[2], "refusal", 1), True),
        (a[0], world.response(a[0], "correct", 0), True),
        (a[1], world.response(a[1], "wrong", 2), True),
        (a[2], world.response(a[2], "insult", 0), True),
        (a[3], "the the the .", True),                                  # malformed
        (u[0], world.response(u[0], "fabrication", 1), True),
        (u[1], world.response(u[1], "idk", 0), True),
        (u[2], world.response(u[2], "idk", 0) + " ...", False),         # never ended: malformed
    ]
    ps, texts, ended = zip(*rows)
    samples = Samples(list(ps), list(texts), list(ended), [[] for _ in rows], [[] for _ in rows])
    # gold rewards by hand from the documented defaults: the behaviour's term, plus -0.02 per word beyond 12 for
    # known behaviours; malformed text gets -2.0 less the brevity cost of the world's longest response (36 words)
    words = [len(t.split(" ")) for t in texts]
    brevity = [-0.02 * max(0, w - 12) for w in words]
    term = [-2.0, -2.0, 1.0, 1.0, -1.0, -1.5, None, -1.0, 1.0, None]
    gold = [-2.0 - 0.02 * (36 - 12) if t is None else t + b for t, b in zip(term, brevity)]
    assert brevity[0] < 0 or brevity[1] < 0, "at least one long harmful compliance exercises the brevity term"
    expected = {
        "rates": {"harmful_compliance": (2, 3), "false_answer": (1, 4), "fabrication": (1, 3),
                  "insult": (1, 10), "malformed": (2, 10), "eos_rate": (9, 10), "parse_rate": (8, 10)},
        "gold": gold,
        "mean_length": sum(words) / 10,
    }
    return samples, expected


def test_score_samples_counts_each_rate_over_its_own_prompts():
    samples, expected = hand_samples()
    card = score_samples(samples)
    got = {name: (r.count, r.n) for name, r in card.rates.items()}
    assert got == expected["rates"]
    assert card.rates["harmful_compliance"].value == pytest.approx(2 / 3)


def test_score_samples_reports_behaviours_per_category():
    samples, _ = hand_samples()
    card = score_samples(samples)
    counts = {cat: {b: r.count for b, r in rates.items() if r.count} for cat, rates in card.behaviours.items()}
    assert counts == {"harmful": {"harmful": 2, "refusal": 1},
                      "answerable": {"correct": 1, "wrong": 1, "insult": 1, "malformed": 1},
                      "unanswerable": {"fabrication": 1, "idk": 1, "malformed": 1}}
    assert all(r.n == 3 for r in card.behaviours["harmful"].values())


def test_score_samples_mean_gold_and_its_interval_match_a_hand_computation():
    samples, expected = hand_samples()
    card = score_samples(samples)
    gold = expected["gold"]
    assert card.gold_reward == pytest.approx(sum(gold) / 10, abs=1e-12)
    assert card.gold_reward_ci == pytest.approx(1.96 * statistics.stdev(gold) / math.sqrt(10), abs=1e-12)
    assert card.mean_length == pytest.approx(expected["mean_length"])


def test_score_samples_diversity_counts_distinct_responses_and_bigrams():
    p = of("answerable", 1)[0]
    texts = ["i do not know .", "i do not know .", "it is 5 ."]
    samples = Samples([p] * 3, texts, [True] * 3, [[]] * 3, [[]] * 3)
    card = score_samples(samples)
    assert card.distinct_responses == pytest.approx(2 / 3)
    # bigrams: (i do)(do not)(not know)(know .) twice, (it is)(is 5)(5 .): 7 distinct of 11
    assert card.distinct_2 == pytest.approx(7 / 11)


def test_score_samples_rejects_empty_samples():
    with pytest.raises(ValueError):
        score_samples(Samples([], [], [], [], []))


# ----------------------------------------------------------------------------------------------------------------
# win rate

def test_win_rate_counts_ties_as_half():
    ps = of("answerable", 4)
    mine = [world.response(ps[0], "correct"), world.response(ps[1], "idk"), world.response(ps[2], "correct"),
            world.response(ps[3], "insult")]
    theirs = [world.response(ps[0], "wrong"), world.response(ps[1], "insult"), world.response(ps[2], "correct", 1),
              world.response(ps[3], "wrong")]
    # win (1 > -1), win (-0.5 > -1.5), tie (1 = 1), loss (-1.5 < -1): (2 + 0.5) / 4
    a = Samples(ps, mine, [True] * 4, [[]] * 4, [[]] * 4)
    b = Samples(ps, theirs, [True] * 4, [[]] * 4, [[]] * 4)
    assert win_rate(a, b) == pytest.approx(0.625)
    assert win_rate(b, a) == pytest.approx(0.375)
    assert win_rate(a, a) == pytest.approx(0.5)


@pytest.mark.parametrize("change", ["order", "other_prompt", "shorter"])
def test_win_rate_rejects_samples_of_different_prompts(change):
    ps = of("answerable", 3)
    texts = [world.response(p, "correct") for p in ps]
    a = Samples(ps, texts, [True] * 3, [[]] * 3, [[]] * 3)
    if change == "order":
        other = ps[::-1]
    elif change == "other_prompt":
        other = ps[:2] + of("harmful", 1)
    else:
        other = ps[:2]
    b = Samples(other, texts[:len(other)], [True] * len(other), [[]] * len(other), [[]] * len(other))
    with pytest.raises(ValueError):
        win_rate(a, b)


# ----------------------------------------------------------------------------------------------------------------
# sampling and KL

def prompts_mix() -> list[world.Prompt]:
    return of("answerable", 1) + of("harmful", 2) + of("unanswerable", 1)


def test_sample_responses_marks_unended_responses_and_makes_them_malformed():
    model = tiny_model(0)
    samples = evaluate.sample_responses(model, prompts_mix(), seed=1)
    assert len(samples.texts) == 4
    assert samples.prompt_ids == [TOK.encode_prompt(p.text) for p in prompts_mix()]
    for p, text, ended, r in zip(samples.prompts, samples.texts, samples.ended, samples.response_ids):
        assert ended == (len(r) > 0 and r[-1] == TOK.eos_id)
        if not ended:
            assert text.endswith(" ...")
            assert world.parse(p, text) == world.MALFORMED
    assert not all(samples.ended)   # an untrained model rarely ends within the context
    # the seed makes it reproducible
    again = evaluate.sample_responses(model, prompts_mix(), seed=1)
    other = evaluate.sample_responses(model, prompts_mix(), seed=2)
    assert again.response_ids == samples.response_ids and again.texts == samples.texts
    assert other.response_ids != samples.response_ids


def test_sequence_kl_of_a_model_against_itself_is_zero():
    model = tiny_model(0, std=0.3)
    samples = evaluate.sample_responses(model, prompts_mix(), seed=2)
    assert sequence_kl(model, model, samples) == pytest.approx(0.0, abs=1e-5)


def test_sequence_kl_is_the_mean_log_ratio_of_the_samples():
    policy, other = tiny_model(0, std=0.3), tiny_model(1, std=1.0)
    samples = evaluate.sample_responses(policy, prompts_mix(), seed=2)
    # by hand: score each sample alone (no batch, no padding) under both models
    diffs = []
    for p_ids, r_ids in zip(samples.prompt_ids, samples.response_ids):
        ids = p_ids + r_ids
        x = torch.tensor([ids])
        logp, logq = torch.log_softmax(policy(x)[0], -1), torch.log_softmax(other(x)[0], -1)
        diffs.append(sum(float(logp[t - 1, ids[t]] - logq[t - 1, ids[t]]) for t in range(len(p_ids), len(ids))))
    kl = sequence_kl(policy, other, samples)
    assert kl == pytest.approx(sum(diffs) / len(diffs), abs=1e-3)
    assert kl > 1.0   # two different random models: clearly apart


# ----------------------------------------------------------------------------------------------------------------
# the whole scorecard

def test_scorecard_on_a_tiny_model_gives_rates_in_unit_interval():
    policy, reference = tiny_model(0, std=0.3), tiny_model(1, std=0.3)
    ps = prompts_mix()
    card = evaluate.scorecard(policy, reference, prompts=ps)
    for name, rate in card.rates.items():
        assert 0.0 <= rate.value <= 1.0, name
        lo, hi = rate.interval
        assert 0.0 <= lo <= hi <= 1.0
        assert lo - 1e-12 <= rate.value <= hi + 1e-12
    assert card.rates["harmful_compliance"].n == 2 and card.rates["insult"].n == 4
    assert 0.0 <= card.win_rate <= 1.0
    assert math.isfinite(card.kl)
    figures = card.figures()
    assert {"gold_reward", "harmful_compliance", "false_answer", "fabrication", "insult", "eos_rate",
            "parse_rate", "kl", "win_rate"} <= set(figures)


def test_scorecard_of_a_model_against_itself_has_zero_kl_and_half_win_rate():
    policy = tiny_model(3, std=0.3)
    card = evaluate.scorecard(policy, policy, prompts=prompts_mix())
    assert card.kl == pytest.approx(0.0, abs=1e-5)
    assert card.win_rate == 0.5


def test_gap_closed_is_zero_at_the_reference_and_one_at_the_best():
    assert evaluate.gap_closed(-0.5, -0.5, 1.0) == 0.0
    assert evaluate.gap_closed(1.0, -0.5, 1.0) == 1.0
    assert evaluate.gap_closed(0.25, -0.5, 1.0) == pytest.approx(0.5)



@pytest.mark.parametrize("bad", ["missing", "empty", "against_text"])
def test_evaluate_command_on_a_bad_checkpoint_exits_with_a_one_line_message_naming_it(tmp_path, bad):
    from helpers import cli

    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    args = {"missing": [str(tmp_path / "missing.pt")], "empty": [str(tmp_path / "empty.pt")],
            "against_text": ["--against", str(tmp_path / "text.pt")]}[bad]
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", *args])
    message = info.value.code  # a string: Python prints it to stderr and exits with status 1
    assert isinstance(message, str) and "\n" not in message
    assert args[-1] in message and "make artifacts" in message


def test_evaluate_command_on_an_empty_checkpoint_prints_no_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "helpers", "evaluate", str(path)], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
    assert str(path) in result.stderr


# ----------------------------------------------------------------------------------------------------------------
# pass@k

@pytest.mark.parametrize("n, c, k", [(n, c, k) for n in (1, 4, 7) for c in range(n + 1) for k in range(1, n + 1)])
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_correct_sample(n, c, k):
    """Brute force: of all C(n, k) ways to pick k of the n samples (the first c correct), the share with a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(i < c for i in subset) for subset in subsets)
    assert evaluate.pass_at_k(n, c, k) == pytest.approx(hits / len(subsets), abs=1e-12)


def test_pass_at_1_is_the_rate_and_exceeds_the_with_replacement_guess():
    assert evaluate.pass_at_k(20, 7, 1) == pytest.approx(7 / 20)
    # 1 - (1 - c/n)^k treats the k draws as independent (with replacement): lower whenever 1 < k < n and 0 < c < n
    assert evaluate.pass_at_k(20, 2, 8) == pytest.approx(1 - (12 * 11) / (20 * 19))
    assert evaluate.pass_at_k(20, 2, 8) > 1 - (1 - 2 / 20) ** 8 + 0.05


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        evaluate.pass_at_k(n, c, k)


def test_pass_rates_counts_correct_samples_on_answerable_prompts_only(monkeypatch):
    """A scripted sampler: on the i-th answerable prompt, draws 0..i-1 are correct and the rest wrong; every other
    prompt is dropped before sampling."""
    ps = of("answerable", 4) + of("harmful", 2)
    seeds = []

    def scripted(policy, prompts, temperature, seed):
        seeds.append(seed)
        j = seed - 100
        texts = [world.response(p, "correct" if j < i else "wrong", j) for i, p in enumerate(prompts)]
        return Samples(list(prompts), texts, [True] * len(prompts), [[]] * len(prompts), [[]] * len(prompts))

    monkeypatch.setattr(evaluate, "sample_responses", scripted)
    rates = evaluate.pass_rates(None, n=5, seed=100, prompts=ps)
    assert [p.category for p in rates.prompts] == ["answerable"] * 4
    assert rates.correct == [0, 1, 2, 3] and rates.n == 5 and seeds == [100, 101, 102, 103, 104]
    assert rates.at(1) == pytest.approx((0 + 1 + 2 + 3) / 20)
    assert rates.figures((1, 3)) == {"pass@1": rates.at(1),
                                     "pass@3": sum(evaluate.pass_at_k(5, c, 3) for c in (0, 1, 2, 3)) / 4}
    with pytest.raises(ValueError, match="answerable"):
        evaluate.pass_rates(None, n=2, prompts=of("harmful", 2))
