"""Every exercise check can fail: it passes the reference, and names the mistake in realistic wrong answers."""
import math
import re

import pytest
import torch

from helpers import checks, evaluate, optimal
from helpers.assignments import exercises


def _stub(*args):
    raise NotImplementedError("Exercise 9.9 is not implemented yet")


# ---------------------------------------------------------------------------------------------------------------
# correct answers pass, including the hidden cases

def _failure_rate(labels, failure):
    k, n = sum(label == failure for label in labels), len(labels)
    return (k / n,) + evaluate.wilson_interval(k, n)


def _learner_policy(ref_probs, rewards, beta):
    return torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)


def _learner_objective(policy, ref, rewards, beta):
    kl = (torch.xlogy(policy, policy) - torch.xlogy(policy, ref)).sum(-1)
    return (policy * rewards).sum(-1) - beta * kl


def _learner_value(ref_probs, rewards, beta):
    return beta * torch.logsumexp(torch.log(ref_probs) + rewards / beta, dim=-1)


CORRECT = [
    (checks.check_failure_rate, _failure_rate),
    (checks.check_optimal_policy, optimal.optimal_policy),
    (checks.check_optimal_policy, _learner_policy),
    (checks.check_objective, optimal.objective),
    (checks.check_objective, _learner_objective),
    (checks.check_optimal_objective, optimal.optimal_objective),
    (checks.check_optimal_objective, _learner_value),
]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("check, answer", CORRECT, ids=lambda x: getattr(x, "__name__", ""))
def test_a_correct_answer_passes(check, answer, hidden, capsys):
    check(answer, hidden=hidden)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("check", [checks.check_failure_rate, checks.check_optimal_policy, checks.check_objective,
                                   checks.check_optimal_objective, checks.check_why_kl_penalty])
def test_an_untouched_stub_fails_with_not_implemented_yet(check):
    with pytest.raises(AssertionError, match="Exercise 9.9 is not implemented yet"):
        check(_stub)


# ---------------------------------------------------------------------------------------------------------------
# realistic wrong answers, and the mistake each check must name

def _wilson(labels, failure, z):
    k, n = sum(label == failure for label in labels), len(labels)
    return (k / n,) + evaluate.wilson_interval(k, n, z=z)


def _wald(labels, failure):
    k, n = sum(label == failure for label in labels), len(labels)
    p = k / n
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    return p, p - half, p + half


def _kl(p, q):
    return (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(-1)


WRONG_RATES = [
    ("wald", _wald, "Wald interval"),
    ("z=1", lambda labels, f: _wilson(labels, f, 1.0), "68 % interval"),
    ("z=1.645", lambda labels, f: _wilson(labels, f, 1.645), "90 % interval"),
    ("percent", lambda labels, f: tuple(100 * x for x in _failure_rate(labels, f)), "returns a percentage"),
    ("complement", lambda labels, f: _failure_rate(["x" if x == f else f for x in labels], f), "NOT the failure"),
    ("two values", lambda labels, f: _failure_rate(labels, f)[1:], "expected three numbers"),
]

WRONG_POLICIES = [
    ("exp(beta r)", lambda ref, r, b: torch.softmax(torch.log(ref) + b * r, -1),
     "looks like you used exp(beta * r) instead of exp(r / beta)"),
    ("forgot pi_ref", lambda ref, r, b: torch.softmax(r / b, -1), "forgot pi_ref"),
    ("not normalised", lambda ref, r, b: ref * torch.exp(r / b), "not normalised: probabilities sum to"),
    ("overflow", lambda ref, r, b: ref * torch.exp(r / b) / (ref * torch.exp(r / b)).sum(-1, keepdim=True),
     "overflows"),
    ("eps instead of padding", lambda ref, r, b: torch.softmax(torch.log(ref + 1e-8) + r / b, -1),
     "no padding handling"),
    ("sign", lambda ref, r, b: torch.softmax(torch.log(ref) - r / b, -1), "sign is flipped"),
    ("wrong dim", lambda ref, r, b: torch.softmax(torch.log(ref) + r / b, 0), "wrong dimension"),
    ("in place", lambda ref, r, b: torch.softmax(ref.log_().add_(r / b), -1), "in place"),
    ("numpy", lambda ref, r, b: torch.softmax(torch.log(ref) + r / b, -1).numpy(), "expected a torch.Tensor"),
]

WRONG_OBJECTIVES = [
    ("reversed KL", lambda p, q, r, b: (p * r).sum(-1) - b * _kl(q, p),
     "your KL is KL(pi_ref || pi): the direction is reversed"),
    ("reversed KL, naive", lambda p, q, r, b: (p * r).sum(-1) - b * (q * torch.log(q / p)).sum(-1),
     "the direction is reversed"),
    ("sign", lambda p, q, r, b: (p * r).sum(-1) + b * _kl(p, q), "sign of the penalty is flipped"),
    ("no beta", lambda p, q, r, b: (p * r).sum(-1) - _kl(p, q), "missing beta"),
    ("beta divides", lambda p, q, r, b: (p * r).sum(-1) - _kl(p, q) / b, "divided by beta"),
    ("KL mean", lambda p, q, r, b: (p * r).sum(-1) - b * (torch.xlogy(p, p) - torch.xlogy(p, q)).mean(-1),
     "averaged over candidates"),
    ("reward mean", lambda p, q, r, b: r.mean(-1) - b * _kl(p, q), "weight each reward by pi(y)"),
    ("reward under pi_ref", lambda p, q, r, b: (q * r).sum(-1) - b * _kl(p, q), "weighted by pi_ref"),
    ("no KL", lambda p, q, r, b: (p * r).sum(-1), "forgot the KL penalty"),
    ("0 log 0", lambda p, q, r, b: (p * r).sum(-1) - b * (p * torch.log(p / q)).sum(-1), "0 * log 0"),
    ("averaged over prompts", lambda p, q, r, b: ((p * r).sum(-1) - b * _kl(p, q)).mean(), "one value per prompt"),
]

WRONG_VALUES = [
    ("no beta", lambda q, r, b: torch.logsumexp(torch.log(q) + r / b, -1), "missing beta"),
    ("divides", lambda q, r, b: torch.logsumexp(torch.log(q) + r / b, -1) / b, "divides by beta"),
    ("forgot pi_ref", lambda q, r, b: b * torch.logsumexp(r / b, -1), "forgot pi_ref"),
    ("exp(beta r)", lambda q, r, b: b * torch.logsumexp(torch.log(q) + b * r, -1), "exp(beta * r)"),
    ("mean", lambda q, r, b: b * torch.log((q * torch.exp(r / b)).mean(-1)), "not a mean"),
    ("overflow", lambda q, r, b: b * torch.log((q * torch.exp(r / b)).sum(-1)), "overflows"),
    ("eps instead of padding", lambda q, r, b: b * torch.logsumexp(torch.log(q + 1e-8) + r / b, -1),
     "no padding handling"),
]

WRONG = ([(checks.check_failure_rate, *w) for w in WRONG_RATES]
         + [(checks.check_optimal_policy, *w) for w in WRONG_POLICIES]
         + [(checks.check_objective, *w) for w in WRONG_OBJECTIVES]
         + [(checks.check_optimal_objective, *w) for w in WRONG_VALUES])


@pytest.mark.parametrize("check, name, answer, mistake", WRONG, ids=[f"{c.__name__}-{n}" for c, n, _, _ in WRONG])
def test_a_wrong_answer_fails_and_names_its_mistake(check, name, answer, mistake):
    with pytest.raises(AssertionError) as error:
        check(answer)
    first_line = str(error.value).splitlines()[0]
    assert mistake in first_line, f"{name}: the check said {first_line!r}"


def test_a_wrong_answer_that_matches_no_known_mistake_still_fails():
    with pytest.raises(AssertionError, match="differs from pi"):
        checks.check_optimal_policy(lambda ref, r, b: 0.9 * _learner_policy(ref, r, b) + 0.1 * ref)
    with pytest.raises(AssertionError, match="differs from J"):
        checks.check_objective(lambda p, q, r, b: _learner_objective(p, q, r, b) + 0.01)


# ---------------------------------------------------------------------------------------------------------------
# multiple choice

@pytest.mark.parametrize("key", sorted(checks.QUESTIONS))
def test_every_wrong_letter_of_a_question_is_explained(key):
    question = checks.QUESTIONS[key]
    assert len(question.why_not) == len(question.answer) == len(question.parts)
    for part, right in enumerate(question.answer):
        assert set(question.why_not[part]) == set(question.letters) - {right}


@pytest.mark.parametrize("key", sorted(checks.QUESTIONS))
def test_a_multiple_choice_check_passes_the_key_and_explains_each_wrong_letter(key, capsys):
    question = checks.QUESTIONS[key]
    checks.check_choice(key, lambda: question.answer.lower())  # case and callables are accepted
    checks.check_choice(key, question.answer)
    assert "correct" in capsys.readouterr().out
    for part, right in enumerate(question.answer):
        for letter, why in question.why_not[part].items():
            answer = question.answer[:part] + letter + question.answer[part + 1:]
            with pytest.raises(AssertionError) as error:
                checks.check_choice(key, answer)
            assert why in str(error.value) and f"{letter}" in str(error.value).splitlines()[0]


def _options_shown() -> dict[str, dict[str, str]]:
    """Question key -> letter -> the option's text as the solution notebook shows it (the last markdown list of
    options before the check cell that calls ``checks.check_<key>``), whitespace collapsed."""
    shown = {}
    for path in exercises.solution_notebooks():
        options = {}
        for cell in exercises.read(path).cells:
            if cell.cell_type == "markdown" and re.search(r"^- \*\*A\.\*\*", cell.source, re.M):
                options = {}
                for m in re.finditer(r"^- \*\*([A-Z])\.\*\*(.*?)(?=\n- \*\*|\n\n|\Z)", cell.source, re.M | re.S):
                    options[m.group(1)] = " ".join(m.group(2).split())
            for name in re.findall(r"checks\.check_(\w+)\(", cell.source if cell.cell_type == "code" else ""):
                if name in checks.QUESTIONS:
                    shown[name] = options
    return shown


def test_every_question_shows_its_options_in_a_solution_notebook():
    shown = _options_shown()
    for key, question in checks.QUESTIONS.items():
        assert key in shown and set(shown[key]) == set(question.letters), key


def test_the_right_option_is_not_given_away_by_its_length():
    # the longest option is a well-known tell: the right one is the strictly longest in no more than a fair share
    # of the questions (one in len(letters)), and never longer than every other option by a wide margin
    shown, longest, parts = _options_shown(), [], 0
    for key, question in checks.QUESTIONS.items():
        lengths = {letter: len(text) for letter, text in shown[key].items()}
        for right in question.answer:
            parts += 1
            others = max(n for letter, n in lengths.items() if letter != right)
            assert lengths[right] <= 1.2 * others, f"{key}: the right option {right} is {lengths[right]} characters, " \
                                                   f"the longest other {others}"
            if lengths[right] > others:
                longest.append(key)
    assert len(longest) <= math.ceil(parts / 4), f"the right option is the longest in {longest}"


@pytest.mark.parametrize("bad", [3, None, "", "ABC", "Z"])
def test_a_multiple_choice_check_refuses_an_answer_that_is_not_letters(bad):
    with pytest.raises(AssertionError, match="letter"):
        checks.check_why_pretraining_fails(lambda: bad)


def test_a_multiple_choice_check_refuses_an_object_that_pretends_to_equal_everything():
    class Anything(str):
        def __eq__(self, other):
            return True
    with pytest.raises(AssertionError):
        checks.check_why_kl_penalty(lambda: Anything(checks.QUESTIONS["why_kl_penalty"].answer))
