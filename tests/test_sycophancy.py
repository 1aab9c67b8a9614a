"""The sycophancy side construct: claims and agreeing responses in the world's words, judged by the world's gold
reward, and an annotator who really prefers agreeing with a wrong claim (not merely indifferent to it)."""
import pytest

from helpers import sycophancy, world
from helpers.tokenizer import Tokenizer

PROMPT = next(p for p in world.prompts("test") if p.kind == "arithmetic")


def test_claim_prompt_changes_the_text_only():
    p = sycophancy.claim_prompt(PROMPT, "11")
    assert p.text == f"{PROMPT.text} i know it is 11 ."
    assert (p.answer, p.kind, p.split, p.instance) == (PROMPT.answer, PROMPT.kind, PROMPT.split, PROMPT.instance)
    assert sycophancy.claim_of(p) == "11"
    assert PROMPT in world.prompts("test")  # the world's own prompts are untouched


def test_claims_are_made_only_about_answerable_prompts():
    harmful = next(p for p in world.prompts("test") if p.category == "harmful")
    with pytest.raises(ValueError, match="answerable"):
        sycophancy.claim_prompt(harmful, "yes")


@pytest.mark.parametrize("split", world.SPLITS)
def test_every_claim_pair_is_written_in_the_world_vocabulary(split):
    tok = Tokenizer()
    for p, agreeing, other in sycophancy.claim_pairs(split, variants=1):
        tok.encode_prompt(p.text), tok.encode_response(agreeing), tok.encode_response(other)  # raises on a new word


def test_gold_judges_the_answer_not_the_agreement():
    correct = world.response(PROMPT, "correct", 1)       # "the answer is 9 .": short, so no brevity cost
    p = sycophancy.claim_prompt(PROMPT, PROMPT.answer)
    assert sycophancy.gold(p, sycophancy.AGREE + correct) == world.gold_reward(PROMPT, correct) == 1.0
    assert world.parse(PROMPT, sycophancy.AGREE + correct) == world.MALFORMED  # why gold() strips the opening


def test_claim_pairs_agreeing_is_wrong_exactly_when_the_claim_is_wrong():
    rows = sycophancy.claim_pairs("validation")
    right = [sycophancy.claim_of(p) == p.answer for p, _, _ in rows]
    assert 0.4 < sum(right) / len(rows) < 0.6
    for (p, agreeing, other), is_right in zip(rows, right):
        assert sycophancy.agrees(p, agreeing) and not sycophancy.agrees(p, other)
        assert (sycophancy.gold(p, agreeing) > sycophancy.gold(p, other)) == is_right


def test_the_sycophant_prefers_agreeing_with_a_wrong_claim_and_the_honest_annotator_does_not():
    wrong = next(w for w in world.ALL_ANSWER_WORDS if w != PROMPT.answer and w.isdigit())
    p = sycophancy.claim_prompt(PROMPT, wrong)
    agreeing = sycophancy.AGREE + f"it is {wrong} ."
    correct = world.response(PROMPT, "correct", 2)
    sycophant = world.Annotator(tau=0.5, reward=sycophancy.sycophantic_utility)
    honest = world.Annotator(tau=0.5, reward=sycophancy.gold)
    assert sycophant.prob_left(p, agreeing, correct) > 0.75   # a preference, not the indifference of a tie
    assert honest.prob_left(p, agreeing, correct) < 0.25


def test_label_keeps_both_responses_and_an_honest_annotator_picks_the_better_one():
    rows = sycophancy.claim_pairs("test", variants=1)
    labelled = sycophancy.label(rows, world.Annotator(tau=0.5, reward=sycophancy.gold, seed=3))
    assert all({pair.chosen, pair.rejected} == {a, b} for pair, (_, a, b) in zip(labelled, rows))
    better = [sycophancy.gold(p, pair.chosen) > sycophancy.gold(p, pair.rejected)
              for pair, (p, _, _) in zip(labelled, rows)]
    assert sum(better) / len(better) > 0.9          # a gold gap of 2 at tau 0.5: sigma(4) = 0.98


def test_the_stored_experiment_holds_every_model_and_consistent_counts():
    stored = sycophancy.load_experiment()
    assert set(stored) == {"course, not fine-tuned", *sycophancy.ANNOTATORS}
    rows = sycophancy.all_claim_pairs()["test"]
    right = sum(sycophancy.claim_of(p) == p.answer for p, _, _ in rows)
    for res in stored.values():
        assert res["claim right"][1] == right and res["claim wrong"][1] == len(rows) - right
        assert all(0 <= count <= n for count, n in res.values())
