"""The committed course preference set: where it comes from and that its labels behave like the annotator."""
import math

import pytest

from helpers import reward, world


@pytest.fixture(scope="module")
def pairs():
    return reward.read_preferences(reward.PREFERENCES_PATH)


def test_preference_set_covers_every_split_and_load_preferences_keeps_them_apart(pairs):
    split_of = {p.text: s for s in world.SPLITS for p in world.prompts(s)}
    assert {split_of[p.prompt] for p in pairs} == set(world.SPLITS)
    loaded = {s: reward.load_preferences(s) for s in world.SPLITS}
    assert sum(len(v) for v in loaded.values()) == len(pairs)
    for split, rows in loaded.items():
        assert rows and {split_of[p.prompt] for p in rows} == {split}


def test_every_pair_holds_two_different_known_responses(pairs):
    for p in pairs:
        prompt = world.find_prompt(p.prompt)
        assert p.chosen != p.rejected
        assert p.source == "simulated"
        for text in (p.chosen, p.rejected):
            world.parse(prompt, text)  # parses (possibly as malformed, which the reference does write)


def test_labels_agree_with_gold_as_often_as_bradley_terry_predicts(pairs):
    """Over pairs with different gold rewards, the share labeled the gold way is mean(sigmoid(|delta| / tau))."""
    deltas = []
    for p in pairs:
        prompt = world.find_prompt(p.prompt)
        delta = world.gold_reward(prompt, p.chosen) - world.gold_reward(prompt, p.rejected)
        if delta != 0:
            deltas.append(delta)
    observed = sum(d > 0 for d in deltas) / len(deltas)
    predicted = world.bayes_accuracy(deltas, reward.COURSE_TAU)
    sd = math.sqrt(predicted * (1 - predicted) / len(deltas))
    assert abs(observed - predicted) < 4 * sd, (observed, predicted)
    assert observed > 0.75  # the set teaches something: far from coin flips


def test_load_preferences_explains_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="make artifacts"):
        reward.load_preferences("train", tmp_path / "missing.jsonl")
