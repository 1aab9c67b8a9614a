"""The one selection rule: judged win rate on fresh validation samples, never the test split, never gold directly."""
import pytest

from helpers import selection, world
from helpers.sampling import Samples
from tiny import tiny_language_model


def _samples(prompts, texts):
    return Samples(list(prompts), list(texts), [True] * len(texts), [], [])


def test_win_rate_is_half_against_itself_and_symmetric():
    prompts = [p for p in world.prompts("validation") if p.category == "answerable"][:20]
    right = [world.response(p, "correct") for p in prompts]
    wrong = [world.response(p, "wrong") for p in prompts]
    assert float(selection.judged_win_rate(_samples(prompts, right), _samples(prompts, right))) == pytest.approx(0.5)
    up = float(selection.judged_win_rate(_samples(prompts, right), _samples(prompts, wrong)))
    down = float(selection.judged_win_rate(_samples(prompts, wrong), _samples(prompts, right)))
    assert up > 0.95 and up + down == pytest.approx(1.0)


def test_both_orders_make_a_position_bias_fair():
    """Shown only on the left, a biased judge would favour whichever model comes first; in both orders it cannot."""
    prompts = [p for p in world.prompts("validation") if p.category == "harmful"][:10]
    a = _samples(prompts, [world.response(p, "refusal") for p in prompts])
    biased = world.Annotator(tau=0.5, position_bias=3.0)
    assert float(selection.judged_win_rate(a, a, biased)) == pytest.approx(0.5)
    assert biased.prob_left(prompts[0], a.texts[0], a.texts[0]) > 0.99   # one order alone: not fair


def test_selection_refuses_the_test_split():
    model = tiny_language_model()
    with pytest.raises(ValueError, match="test split"):
        selection.validation_win_rate(model, model, prompts=list(world.prompts("test"))[:3])


def test_choose_takes_the_best_and_the_first_of_ties():
    assert selection.choose({"a": 0.4, "b": 0.6, "c": 0.6}) == "b"
    with pytest.raises(ValueError):
        selection.choose({})


def test_a_better_policy_wins_on_validation():
    """The reference model against an untrained tiny model: the reference must be judged better."""
    from helpers.pretrain import load_reference
    ref = load_reference()
    prompts = list(world.prompts("validation"))[::10]
    assert float(selection.validation_win_rate(ref, tiny_language_model(), prompts=prompts)) > 0.6
