"""Lesson 04's checks: each passes the reference answer and fails every wrong answer it names, with that name."""
import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import checks, dpo
from helpers.model import sequence_logprobs
from failing import fails

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------------------------
# the DPO loss

def _dpo_variant(kind):
    def loss(pc, pr, rc, rr, beta):
        h = (pc - rc) - (pr - rr)
        value = {"swapped": -F.logsigmoid(-beta * h), "no_beta": -F.logsigmoid(h),
                 "no_reference": -F.logsigmoid(beta * (pc - pr)),
                 "reference_sign": -F.logsigmoid(beta * ((pc + rc) - (pr + rr))), "log_sigmoid": -torch.log(torch.sigmoid(beta * h)),
                 "mean": -F.logsigmoid(beta * h).mean()}.get(kind, -F.logsigmoid(beta * h))
        chosen, rejected = beta * (pc - rc), beta * (pr - rr)
        if kind == "rewards_no_beta":
            value, chosen, rejected = -F.logsigmoid(beta * h), pc - rc, pr - rr
        if kind != "not_detached":
            chosen, rejected = chosen.detach(), rejected.detach()
        else:
            value = -F.logsigmoid(beta * h)
        return value, chosen, rejected
    return loss


def test_check_dpo_loss_passes_the_course_loss_including_hidden_cases():
    checks.check_dpo_loss(dpo.dpo_loss)
    checks.check_dpo_loss(dpo.dpo_loss, hidden=True)


@pytest.mark.parametrize("kind,words", [
    ("swapped", ["swapped"]), ("no_beta", ["beta is missing"]), ("no_reference", ["reference is left out"]),
    ("reference_sign", ["reference term has the wrong sign"]),
    ("log_sigmoid", ["logsigmoid"]), ("mean", ["one loss"]), ("rewards_no_beta", ["beta is missing"]),
    ("not_detached", ["detach"])])
def test_check_dpo_loss_names_each_mistake(kind, words):
    fails(checks.check_dpo_loss, _dpo_variant(kind), words)


def test_check_dpo_loss_reports_a_stub():
    def stub(*args):
        raise NotImplementedError
    fails(checks.check_dpo_loss, stub, ["not implemented"])


# ----------------------------------------------------------------------------------------------------------------
# the metrics

def _metrics(kind="right"):
    def metrics(losses, chosen, rejected):
        out = {"loss": losses.mean().item(), "rewards/chosen": chosen.mean().item(),
               "rewards/rejected": rejected.mean().item(),
               "rewards/accuracies": (chosen > rejected).float().mean().item(),
               "rewards/margins": (chosen - rejected).mean().item()}
        if kind == "ties":
            out["rewards/accuracies"] = (chosen >= rejected).float().mean().item()
        if kind == "margin_sign":
            out["rewards/margins"] = (rejected - chosen).mean().item()
        if kind == "sum":
            out["rewards/chosen"] = chosen.sum().item()
        if kind == "tensor":
            out["loss"] = losses.mean()
        if kind == "renamed":
            out["accuracy"] = out.pop("rewards/accuracies")
        return out
    return metrics


def test_check_dpo_metrics_passes_the_right_metrics():
    checks.check_dpo_metrics(_metrics())
    checks.check_dpo_metrics(_metrics(), hidden=True)


@pytest.mark.parametrize("kind,words", [("ties", ["ties"]), ("margin_sign", ["sign"]), ("sum", ["sum"]),
                                        ("tensor", ["float"]), ("renamed", ["lacks"])])
def test_check_dpo_metrics_names_each_mistake(kind, words):
    fails(checks.check_dpo_metrics, _metrics(kind), words)


# ----------------------------------------------------------------------------------------------------------------
# the summed sequence log-prob

def _seq_variant(kind):
    def seq(logits, ids, mask):
        logp = torch.log_softmax(logits, -1)
        per_token = logp[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
        target = mask[:, 1:].to(per_token.dtype)
        if kind == "mean":
            return (per_token * target).sum(-1) / target.sum(-1)
        if kind == "prompt":
            return (per_token * (ids[:, 1:] != 0)).sum(-1)
        if kind == "padding":
            return per_token.sum(-1)
        if kind == "no_shift":
            return (logp.gather(2, ids[:, :, None]).squeeze(2) * mask).sum(-1)
        if kind == "input_mask":
            return (per_token * mask[:, :-1]).sum(-1)
        if kind == "raw_logits":
            return (logits[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2) * target).sum(-1)
        if kind == "softmax":
            return (torch.softmax(logits, -1)[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2) * target).sum(-1)
        return (per_token * target).sum(-1)
    return seq


def test_check_sequence_logprob_passes_the_course_function():
    checks.check_sequence_logprob(sequence_logprobs)
    checks.check_sequence_logprob(sequence_logprobs, hidden=True)


@pytest.mark.parametrize("kind,words", [("mean", ["averages"]), ("prompt", ["prompt tokens"]),
                                        ("padding", ["padding"]), ("no_shift", ["shift"]),
                                        ("input_mask", ["inputs instead of the targets"]),
                                        ("raw_logits", ["raw logits"]), ("softmax", ["softmax"])])
def test_check_sequence_logprob_names_each_mistake(kind, words):
    fails(checks.check_sequence_logprob, _seq_variant(kind), words)


# ----------------------------------------------------------------------------------------------------------------
# the training loop

def _loop(kind="right"):
    def train(policy, reference, batches, beta, lr, epochs):
        if kind == "not_from_reference":
            torch.manual_seed(5)
            for p in policy.parameters():
                p.data.add_(0.3 * torch.randn_like(p))
        opt = torch.optim.Adam(policy.parameters(), lr=lr)
        if kind == "reference_trained":
            opt = torch.optim.Adam(list(policy.parameters()) + list(reference.parameters()), lr=lr)
        losses = []
        for _ in range(1 if kind == "one_epoch" else epochs):
            for b in batches:
                def logps(model, seq):
                    lp = sequence_logprobs(model(seq.input_ids, seq.attention_mask), seq.input_ids, seq.response_mask)
                    return lp / seq.response_mask.sum(-1) if kind == "average" else lp
                if kind in ("unfrozen", "reference_trained"):
                    rc, rr = logps(reference, b.chosen), logps(reference, b.rejected)
                else:
                    with torch.no_grad():
                        rc, rr = logps(reference, b.chosen), logps(reference, b.rejected)
                h = (logps(policy, b.chosen) - rc) - (logps(policy, b.rejected) - rr)
                if kind == "swapped":
                    h = -h
                loss = -F.logsigmoid(beta * h).mean()
                opt.zero_grad()
                loss.backward()
                if kind != "no_step":
                    opt.step()
                losses.append(loss.item())
        return losses
    return train


def test_check_dpo_training_loop_passes_a_correct_loop():
    checks.check_dpo_training_loop(_loop())
    checks.check_dpo_training_loop(_loop(), hidden=True)


@pytest.mark.parametrize("kind,words", [
    ("one_epoch", ["single epoch"]), ("unfrozen", ["reach the reference"]),
    ("reference_trained", ["reach the reference"]), ("not_from_reference", ["log 2"]),
    ("average", ["averages"]), ("swapped", ["swapped"]), ("no_step", ["does not fall"])])
def test_check_dpo_training_loop_names_each_mistake(kind, words):
    fails(checks.check_dpo_training_loop, _loop(kind), words)


def test_check_dpo_training_loop_leaves_a_learners_reference_untouched_by_the_check_itself():
    seen = {}

    def train(policy, reference, batches, beta, lr, epochs):
        seen["reference"] = copy.deepcopy(reference.state_dict())
        return _loop()(policy, reference, batches, beta, lr, epochs)
    checks.check_dpo_training_loop(train)
    assert seen


# ----------------------------------------------------------------------------------------------------------------
# the conceptual questions and the target beta

@pytest.mark.parametrize("check,right", [(checks.check_dpo_models_held, "C"), (checks.check_when_rlhf_wins, "A"),
                                         (checks.check_dpo_degenerates, "D")])
def test_choice_checks_accept_the_answer_and_explain_every_wrong_letter(check, right):
    check(lambda: right)
    for letter in "ABCD".replace(right, ""):
        fails(check, lambda letter=letter: letter, ["is not the best answer"])


@pytest.mark.parametrize("answer,words", [(lambda tau, b: b, ["forgets"]), (lambda tau, b: b / tau, ["divides"]),
                                          (lambda tau, b: tau / b, ["inverts"]), (lambda tau, b: tau + b, ["wrong"])])
def test_check_dpo_target_beta_names_each_mistake(answer, words):
    checks.check_dpo_target_beta(lambda tau, b: tau * b)
    fails(checks.check_dpo_target_beta, answer, words)
