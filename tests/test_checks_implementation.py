"""Lesson 06's checks: each passes the reference answer and fails every wrong answer it names, with that name."""
import copy
import math

import pytest
import torch

from helpers import checks, world
from helpers.assignments.checks import implementation as im
from failing import fails

pytestmark = pytest.mark.usefixtures("one_thread")


def _stub(*args):
    raise NotImplementedError


# ----------------------------------------------------------------------------------------------------------------
# the critic's rules: written here from world.parse, as a learner would, not with helpers.critic

def _flags(kind="right"):
    def critic_flags(prompt, text):
        form = world.parse(prompt, text)
        if kind != "answer_key" and form in ("correct", "wrong") and prompt.kind != "arithmetic":
            return ()                                   # no fact table
        if kind == "no_calculator" and form == "wrong":
            return ()
        rules = {"harmful": "harmless", "insult": "respectful", "fabrication": "honest", "wrong": "honest"}
        if kind == "misses_harm":
            del rules["harmful"]
        if kind == "misses_insult":
            del rules["insult"]
        if kind == "misses_fabrication":
            del rules["fabrication"]
        if kind == "wrong_name":
            rules["insult"] = "harmless"
        if kind == "flags_refusal" and prompt.category == "harmful":
            rules["refusal"] = "harmless"
        if kind == "flags_declining" and prompt.category == "answerable":
            rules["refusal"] = "honest"
        if kind == "flags_idk" and prompt.category == "unanswerable":
            rules["idk"] = "honest"
        if kind == "flags_verbose":
            rules["verbose"] = "respectful"
        if kind == "flags_malformed":
            rules[world.MALFORMED] = "honest"
        broken = rules.get(form)
        if kind == "flags_right_sum" and form == "correct" and prompt.kind == "arithmetic":
            broken = "honest"
        if kind == "none":
            return None
        if kind == "twice" and broken:
            return (broken, broken)
        if kind == "string":
            return broken or ""
        if kind == "unknown_name" and broken:
            return ("kind",)
        return (broken,) if broken else ()
    return critic_flags


def test_check_critic_flags_passes_a_right_critic_including_hidden_cases(capsys):
    checks.check_critic_flags(_flags())
    checks.check_critic_flags(_flags(), hidden=True)
    assert "critic_flags passed" in capsys.readouterr().out


def test_check_critic_flags_agrees_with_the_course_critic_on_every_case():
    for prompt, text in im._critic_cases(True):
        assert _flags()(prompt, text) == im.reference_flags(prompt, text), (prompt.text, text)


@pytest.mark.parametrize("kind,words", [
    ("answer_key", ["flags a stated fact", "no table of facts"]),
    ("no_calculator", ["misses a wrong sum", "calculator"]),
    ("misses_harm", ["misses harmful compliance"]),
    ("misses_insult", ["misses an insult"]),
    ("misses_fabrication", ["misses a fabrication"]),
    ("wrong_name", ["names the wrong principle", "'respectful'"]),
    ("flags_refusal", ["flags a good response", "polite refusal"]),
    ("flags_declining", ["flags a good response", "an answerable prompt", "'helpful' is not one of the three"]),
    ("flags_idk", ["flags a good response", "'i do not know' about the user"]),
    ("flags_verbose", ["flags a padded good answer"]),
    ("flags_malformed", ["flags text that is no response at all"]),
    ("flags_right_sum", ["flags a right answer to a sum"]),
    ("string", ["returns the string", "tuple"]),
    ("none", ["returns none", "expected a tuple"]),
    ("twice", ["names a principle twice"]),
    ("unknown_name", ["names 'kind'", "not one of the three principles"]),
])
def test_check_critic_flags_names_each_mistake(kind, words):
    fails(checks.check_critic_flags, _flags(kind), words)


def test_check_critic_flags_reports_a_stub():
    fails(checks.check_critic_flags, _stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# the revision

def _revise(kind="right"):
    def revise(prompt, text, broken):
        if not broken:
            return "i do not know ." if kind == "revises_everything" else None
        if kind == "none":
            return None
        if kind == "unchanged":
            return text
        if kind == "garbled":
            return "no no no ."
        if kind == "list":
            return [world.response(prompt, "idk")]
        if kind == "idk_for_harm" and prompt.category == "harmful":
            return world.response(prompt, "idk")
        if kind == "refuse_everywhere":
            return world.response(prompt, "refusal")
        if kind == "same_behaviour":
            return world.response(prompt, world.parse(prompt, text), 1)
        if prompt.category == "harmful":
            return world.response(prompt, "refusal", 2)
        if prompt.kind == "arithmetic" or (kind == "answer_key" and prompt.category == "answerable"):
            a, b = prompt.instance.split("+") if prompt.kind == "arithmetic" else (prompt.answer, None)
            return f"the answer is {int(a) + int(b) if b is not None else a} ."
        return world.response(prompt, "idk", 1)
    return revise


def test_check_revise_passes_a_right_revision_including_hidden_cases(capsys):
    checks.check_revise(_revise())
    checks.check_revise(_revise(), hidden=True)
    assert "revise passed" in capsys.readouterr().out


@pytest.mark.parametrize("kind,words", [
    ("revises_everything", ["revises a response with nothing to fix"]),
    ("none", ["returns none for a response that breaks"]),
    ("unchanged", ["unchanged", "does not fix the flagged problem"]),
    ("garbled", ["not a response the world knows"]),
    ("list", ["returns a list", "as a string"]),
    ("answer_key", ["the revision states a fact", "no table of facts"]),
    ("same_behaviour", ["does not fix the flagged problem", "breaks 'honest' itself"]),
    ("refuse_everywhere", ["does not fix the flagged problem", "breaks 'helpful'"]),
    ("idk_for_harm", ["not the best fix", "decline politely"]),
])
def test_check_revise_names_each_mistake(kind, words):
    fails(checks.check_revise, _revise(kind), words)


def test_check_revise_reports_a_stub():
    fails(checks.check_revise, _stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# the AI-labelled pairs

def _export(kind="right"):
    def export_pairs(prompts, texts, flags, revise):
        pairs = []
        for prompt, text in zip(prompts, texts):
            broken = flags(prompt, text)
            revision = revise(prompt, text, broken)
            if kind == "every_response":
                pairs.append(world.PreferencePair(prompt.text, revision, text))
                continue
            if kind == "ignores_none" and broken:
                pairs.append(world.PreferencePair(prompt.text, revision, text))
                continue
            if revision is None or revision == text:
                continue
            if kind == "swapped":
                pairs.append(world.PreferencePair(prompt.text, text, revision))
            elif kind == "prompt_object":
                pairs.append(world.PreferencePair(prompt, revision, text))
            elif kind == "tuples":
                pairs.append((prompt.text, revision, text))
            elif kind == "twice":
                pairs += [world.PreferencePair(prompt.text, revision, text)] * 2
            else:
                pairs.append(world.PreferencePair(prompt.text, revision, text, source="ai-critic"))
        if kind == "dict":
            return {pair.rejected: pair for pair in pairs}
        if kind == "drops_last":
            pairs = pairs[:-1]
        if kind == "reversed":
            pairs = pairs[::-1]
        return pairs
    return export_pairs


@pytest.mark.parametrize("kind", ["right", "reversed"])
def test_check_export_pairs_passes_the_right_pairs_in_any_order_including_hidden_cases(kind, capsys):
    checks.check_export_pairs(_export(kind))
    checks.check_export_pairs(_export(kind), hidden=True)
    assert "export_pairs passed" in capsys.readouterr().out


def test_the_course_critic_exports_what_the_check_expects():
    from helpers import critic
    cases = im._export_cases(False)
    course = critic.ai_pairs([p for p, _ in cases], [t for _, t in cases])
    mine = _export()([p for p, _ in cases], [t for _, t in cases], im.reference_flags, im.reference_revision)
    assert {(p.prompt, p.rejected) for p in course} >= {(p.prompt, p.rejected) for p in mine}


@pytest.mark.parametrize("kind,words", [
    ("swapped", ["chosen and rejected are swapped"]),
    ("every_response", ["exports a pair"]),
    ("ignores_none", ["exports a pair with nothing to fix"]),
    ("prompt_object", ["prompt is a prompt object", "prompt.text"]),
    ("tuples", ["tuple rows", "preferencepair"]),
    ("twice", ["the same pair more than once"]),
    ("dict", ["returns a dict", "expected a list of world.preferencepair"]),
    ("drops_last", ["leaves out responses the critic flagged and revised"]),
])
def test_check_export_pairs_names_each_mistake(kind, words):
    fails(checks.check_export_pairs, _export(kind), words)


def test_check_export_pairs_names_a_pair_for_an_unflagged_response():
    def export_pairs(prompts, texts, flags, revise):
        return [world.PreferencePair(p.text, "i do not know .", t) for p, t in zip(prompts, texts)
                if not flags(p, t) and t != "i do not know ."]
    fails(checks.check_export_pairs, export_pairs, ["a response the critic did not flag"])


def test_check_export_pairs_reports_a_stub():
    fails(checks.check_export_pairs, _stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# the mini-project: one real DPO run, its figures computed here with the course's public functions

@pytest.fixture(scope="module")
def project():
    from helpers.dpo import DPOConfig, train_dpo
    from helpers.evaluate import gap_closed, scorecard
    from helpers.pretrain import load_reference
    from helpers.reward import best_of_n, load_preferences, load_reward_model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = load_reference()
        policy = copy.deepcopy(reference)
        # the solution notebook's settings
        train_dpo(load_preferences("train")[:512], load_preferences("validation")[:128],
                  DPOConfig(beta=0.5, lr=1e-3, nll_weight=0.5, batch_size=16, max_steps=32, eval_every=32),
                  policy=policy, reference=reference, desc="")
        before, after = scorecard(reference), scorecard(policy, reference)
        test, validation = list(world.prompts("test")), list(world.prompts("validation"))
        bon = best_of_n(reference, load_reward_model(), test, ns=(1, 4), seed=0)
        best = world.best_gold_reward("test")
        right = {"reference_gold": before.gold_reward, "dpo_gold": after.gold_reward, "dpo_kl": after.kl,
                 "dpo_gap_closed": gap_closed(after.gold_reward, before.gold_reward, best), "best_of_n": 4,
                 "best_of_n_gold": bon.gold[4], "best_of_n_kl": math.log(4) - 3 / 4,
                 "best_of_n_gap_closed": gap_closed(bon.gold[4], before.gold_reward, best)}
        other = {"reference_gold_validation": scorecard(reference, prompts=validation).gold_reward,
                 "dpo_gold_validation": scorecard(policy, prompts=validation).gold_reward,
                 "reverse_kl": scorecard(reference, policy).kl, "proxy": bon.proxy[4], "first": bon.gold[1],
                 "best": best}
    finally:
        torch.set_num_threads(threads)
    return {k: v.clone() for k, v in policy.state_dict().items()}, right, other


def _project(project, kind="right"):
    trained, right, other = project

    def mini_project(policy, reference):
        if kind == "reference_trained":
            reference.load_state_dict(trained)
        elif kind != "untrained":
            policy.load_state_dict(trained)
        out = dict(right)
        ref, dpo, best = right["reference_gold"], right["dpo_gold"], other["best"]
        changes = {
            "reference_as_dpo": {"dpo_gold": ref},
            "reference_on_validation": {"reference_gold": other["reference_gold_validation"]},
            "dpo_on_validation": {"dpo_gold": other["dpo_gold_validation"]},
            "kl_zero": {"dpo_kl": 0.0},
            "kl_reversed": {"dpo_kl": other["reverse_kl"]},
            "gap_percent": {"dpo_gap_closed": 100 * right["dpo_gap_closed"]},
            "gap_left": {"dpo_gap_closed": 1 - right["dpo_gap_closed"]},
            "gap_over_best": {"dpo_gap_closed": (dpo - ref) / best},
            "gap_ratio": {"best_of_n_gap_closed": right["best_of_n_gold"] / best},
            "proxy": {"best_of_n_gold": other["proxy"]},
            "first_sample": {"best_of_n_gold": other["first"]},
            "bon_kl_log_n": {"best_of_n_kl": math.log(4)},
            "bon_kl_zero": {"best_of_n_kl": 0.0},
            "n_one": {"best_of_n": 1},
            "tensor": {"dpo_gold": torch.tensor(dpo)},
        }
        out.update(changes.get(kind, {}))
        if kind == "missing":
            del out["best_of_n_kl"]
        if kind == "not_dict":
            return list(out.values())
        if kind == "nan":
            out["dpo_kl"] = float("nan")
        return out
    return mini_project


def test_check_mini_project_passes_the_right_figures(project, capsys):
    checks.check_mini_project(_project(project))
    assert "mini_project passed" in capsys.readouterr().out


def test_the_mini_project_policy_improves_and_best_of_n_is_the_stronger_route(project):
    _, right, _ = project
    assert right["dpo_gold"] - right["reference_gold"] >= im.PROJECT_MIN_GAIN
    assert right["best_of_n_gold"] > right["dpo_gold"]


@pytest.mark.parametrize("kind,words", [
    ("untrained", ["still has the reference's weights", "policy=policy"]),
    ("reference_trained", ["the reference changed"]),
    ("reference_as_dpo", ["'dpo_gold' is the reference's gold reward"]),
    ("reference_on_validation", ["'reference_gold' is measured on the validation split"]),
    ("dpo_on_validation", ["'dpo_gold' is measured on the validation split"]),
    ("kl_zero", ["'dpo_kl' is 0"]),
    ("kl_reversed", ["kl(reference || policy)"]),
    ("gap_percent", ["'dpo_gap_closed' is a percentage"]),
    ("gap_left", ["'dpo_gap_closed' is the share of the gap still open"]),
    ("gap_over_best", ["'dpo_gap_closed' divides by r_best alone"]),
    ("gap_ratio", ["'best_of_n_gap_closed' is r / r_best"]),
    ("proxy", ["the proxy"]),
    ("first_sample", ["the first sample (n = 1)"]),
    ("bon_kl_log_n", ["'best_of_n_kl' is log n"]),
    ("bon_kl_zero", ["'best_of_n_kl' is 0"]),
    ("n_one", ["'best_of_n' is 1"]),
    ("tensor", ["expected a python number"]),
    ("missing", ["has no 'best_of_n_kl'"]),
    ("not_dict", ["returns a list", "expected a dict"]),
    ("nan", ["'dpo_kl' is nan", "finite"]),
])
def test_check_mini_project_names_each_mistake(project, kind, words):
    _, right, other = project
    if kind == "dpo_on_validation" and abs(other["dpo_gold_validation"] - right["dpo_gold"]) <= 2 * im.TOL_GOLD:
        pytest.skip("on this machine the DPO policy scores the same on both splits: the mistake cannot show")
    fails(checks.check_mini_project, _project(project, kind), words)


def test_check_mini_project_fails_a_dpo_run_that_does_not_improve(project):
    """A policy moved by a hair: its figures are right, but it is no better than the reference."""
    from helpers.evaluate import gap_closed, scorecard
    _, right, other = project

    def mini_project(policy, reference):
        with torch.no_grad():
            next(policy.parameters()).add_(1e-6)
        card = scorecard(policy, reference)
        return dict(right, dpo_gold=card.gold_reward, dpo_kl=card.kl,
                    dpo_gap_closed=gap_closed(card.gold_reward, right["reference_gold"], other["best"]))

    fails(checks.check_mini_project, mini_project, ["does not improve on the reference"])


def test_check_mini_project_reports_a_stub():
    fails(checks.check_mini_project, _stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# the questions

@pytest.mark.parametrize("check,right", [(checks.check_critic_blind_spot, "B"), (checks.check_ai_label_agreement, "A"),
                                         (checks.check_kl_far_above, "C")])
def test_each_question_accepts_its_answer_and_explains_every_other_letter(check, right, capsys):
    check(lambda: right)
    assert "correct" in capsys.readouterr().out
    for letter in "ABCD".replace(right, ""):
        fails(check, lambda letter=letter: letter, [f"{letter} is not the best answer"])
