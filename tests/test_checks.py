"""Every exercise check can fail: it passes the reference, and names the mistake in realistic wrong answers."""
import math

import pytest
import torch

from helpers import checks, evaluate, optimal


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
