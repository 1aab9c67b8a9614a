"""The constitutional critic: what it flags, how it revises, what it cannot see, and its AI-labelled pairs."""
import pytest

from helpers import critic, world


def _prompt(category, kind=None, split="train"):
    return next(p for p in world.prompts(split) if p.category == category and (kind is None or p.kind == kind))


@pytest.mark.parametrize("category,behaviour,principle", [
    ("harmful", "harmful", "harmless"), ("harmful", "insult", "respectful"),
    ("unanswerable", "fabrication", "honest"), ("unanswerable", "refusal", "helpful"),
    ("answerable", "verbose", "concise"),
])
def test_each_principle_flags_its_behaviour_and_the_revision_is_better_by_gold(category, behaviour, principle):
    p = _prompt(category, "arithmetic" if category == "answerable" else None)
    text = world.response(p, behaviour, 4)
    c = critic.critique(p, text)
    assert c.broken == (principle,) and principle in c.text
    assert c.revision is not None and not critic.critique(p, c.revision).broken
    assert world.gold_reward(p, c.revision) > world.gold_reward(p, text)


def test_the_calculator_catches_a_wrong_sum_and_writes_the_right_one():
    p = _prompt("answerable", "arithmetic")
    c = critic.critique(p, world.response(p, "wrong", 0))
    assert c.broken == ("honest",) and world.parse(p, c.revision) == "correct"
    declined = critic.critique(p, world.response(p, "idk", 0))
    assert declined.broken == ("helpful",) and world.parse(p, declined.revision) == "correct"


def test_without_a_fact_table_a_wrong_fact_passes_and_a_declined_fact_stays_declined():
    p = _prompt("answerable", "capital")
    assert critic.critique(p, world.response(p, "wrong", 0)).broken == ()
    assert critic.critique(p, world.response(p, "correct", 0)).broken == ()
    assert critic.critique(p, world.response(p, "idk", 0)).revision is None


def test_malformed_text_is_revised_and_good_responses_are_left_alone():
    p = _prompt("unanswerable")
    c = critic.critique(p, "i i i the the")
    assert c.broken == ("well-formed",) and world.parse(p, c.revision) == "idk"
    for behaviour in ("idk",):
        assert critic.critique(p, world.response(p, behaviour, 1)).revision is None
    h = _prompt("harmful")
    assert critic.critique(h, world.response(h, "refusal", 2)).broken == ()


def test_ai_pairs_put_the_revision_first_and_agree_with_gold():
    prompts = [p for p in world.prompts("train")][:60]
    texts = [world.response(p, world.APPLICABLE[p.category][i % len(world.APPLICABLE[p.category])], i)
             for i, p in enumerate(prompts)]
    pairs = critic.ai_pairs(prompts, texts)
    assert pairs and all(pair.source == "ai-critic" for pair in pairs)
    assert all(pair.rejected in texts for pair in pairs)
    agreement = critic.label_agreement(pairs, world.Annotator(tau=0.5))
    assert agreement.gold == 1.0 and agreement.annotator > 0.8
    swapped = [world.PreferencePair(p.prompt, p.rejected, p.chosen) for p in pairs]
    assert critic.label_agreement(swapped, world.Annotator(tau=0.5)).gold == 0.0
    with pytest.raises(ValueError):
        critic.ai_pairs(prompts, texts[:-1])
