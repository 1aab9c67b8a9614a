"""Tests of lesson 05's false-answer measurements (helpers/rlvr.py): exact rates from the enumerable view agree
with sampling, the temperature and wording options mean what they say, and the committed runs hold the targets."""
from __future__ import annotations

import pytest
import torch

from helpers import enumerable, evaluate, rlvr, world
from helpers.pretrain import load_reference

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference():
    return load_reference()


def test_the_control_wording_puts_test_instances_in_training_frames():
    test, reworded = world.prompts("test"), world.prompts("test", wording="train")
    assert {p.instance for p in test} == {p.instance for p in reworded}
    assert not {p.text for p in reworded} & {p.text for p in test}
    train_texts = {p.text for p in world.prompts("train")}
    assert not {p.text for p in reworded} & train_texts          # new sentences: train wording, test instances
    assert all(p.split == "test" for p in reworded)
    with pytest.raises(ValueError):
        world.prompts("test", wording="exam")


def test_temperature_scores_are_those_of_the_scaled_logits(reference):
    """At temperature t every token's logits are divided by t: the same as temperature 1 on a model whose logits are
    already divided (the first response token included)."""
    prompt = next(p for p in world.prompts("test") if p.category == "answerable")
    texts = enumerable.candidates(prompt)[:5]
    for t in (1.0, 0.5):
        fast = enumerable.sequence_logprobs_of(reference, [prompt.text] * len(texts), texts, temperature=t)
        divided = enumerable.sequence_logprobs_of(_scaled(reference, t), [prompt.text] * len(texts), texts)
        assert torch.allclose(fast, divided, atol=1e-5), t
    hot = enumerable.sequence_logprobs_of(reference, [prompt.text] * len(texts), texts, temperature=2.0)
    assert not torch.allclose(hot, fast)
    with pytest.raises(ValueError):
        enumerable.sequence_logprobs_of(reference, [prompt.text], texts[:1], temperature=0.0)


def _scaled(model, t):
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.cfg = model, model.cfg

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs) / t
    return Scaled()


def test_exact_rates_sum_to_one_and_lie_inside_the_sampled_interval(reference):
    prompts = rlvr.answerable(world.prompts("test"))[::4]
    exact = rlvr.exact_rates(reference, prompts)
    assert sum(exact[k] for k in ("right", "wrong", "decline", "other")) == pytest.approx(1.0, abs=1e-5)
    assert exact["attempt"] == pytest.approx(exact["right"] + exact["wrong"])
    passes = evaluate.pass_rates(reference, prompts=prompts, n=16)
    low, high = evaluate.wilson_interval(sum(passes.correct), 16 * len(prompts), z=3.3)
    assert low <= exact["right"] <= high
    colder = rlvr.exact_rates(reference, prompts, temperature=0.25)
    assert colder["wrong"] < exact["wrong"]                      # sampling colder favours the likeliest answer


def test_the_committed_runs_meet_the_targets():
    runs = rlvr.load_verifiable()
    main = runs["runs"]["grpo"]
    at = {c["iteration"]: c for c in main["checks"]}
    cut = max(1 - c["practised"]["wrong"] / at[0]["practised"]["wrong"] for c in main["checks"])
    assert cut >= 0.8
    assert main["chosen"] in at and "test_pass" in at[main["chosen"]]
    # chosen on validation by the checker's score: no other check has a higher validation right rate
    assert at[main["chosen"]]["validation"]["right"] == max(c["validation"]["right"] for c in main["checks"])
    assert set(runs["temperatures"]) == {str(t) for t in rlvr.TEMPERATURES}
    assert runs["runs"]["control"]["run"]["practise"] == "test"


@pytest.mark.slow
def test_the_live_slice_reproduces_the_committed_one(reference):
    from helpers.comparison import differences
    fresh = rlvr.run_verifiable(reference, rlvr.LIVE, live=True)
    assert differences(rlvr.load_verifiable()["live"], fresh, atol=1e-5, rtol=1e-5) == []
    assert fresh["checks"][-1]["practised"]["wrong"] < fresh["checks"][0]["practised"]["wrong"]
