"""Lesson 04's checks: the DPO loss and its metrics, the summed sequence log-prob, a DPO training loop, and the
conceptual questions on RLHF vs DPO. Tests: tests/test_checks_dpo.py.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .base import (ATOL_VALUE, QUESTIONS, Question, RTOL_VALUE, _call, _close, _fail, _first_match, _fmt,
                   _inputs_unchanged, _tensor_result, _tiny_preference_setup, check_choice)

# ================================================================================================================
# lesson 04: the DPO loss and its metrics, the summed sequence log-prob, a DPO training loop, RLHF vs DPO
# (one contiguous section; tests in tests/test_checks_dpo.py)

def _logps_cases(hidden: bool) -> list[tuple[str, tuple[torch.Tensor, ...], float]]:
    """(case, the four summed log-probs [B], beta): ordinary values, pi = pi_ref, and a huge margin."""
    gen = torch.Generator().manual_seed(40)
    four = tuple(-12 * torch.rand(6, generator=gen) for _ in range(4))
    same = -5 * torch.rand(3, generator=gen)
    cases = [("ordinary log-probs, beta 0.5", four, 0.5),
             ("pi = pi_ref (policy and reference log-probs equal), beta 0.1", (same, same - 1, same, same - 1), 0.1),
             ("a rejected response 400 nats likelier under pi than pi_ref, beta 1",
              (torch.tensor([-3.0, -2.0]), torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -2.0]),
               torch.tensor([-401.0, -5.0])), 1.0)]
    if hidden:
        cases.append(("random log-probs, beta 2", tuple(-30 * torch.rand(16, generator=gen) for _ in range(4)), 2.0))
    return cases


def check_dpo_loss(dpo_loss: Callable, hidden: bool = False) -> None:
    """Check ``dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    -> (losses, chosen_rewards, rejected_rewards)``, each [B]: losses = -log sigma(beta h) with h the difference of
    the log-ratios, implicit rewards beta * (log pi - log pi_ref), detached. Within ``ATOL_VALUE`` +
    ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: chosen and rejected swapped (sign flipped), beta missing, the reference left out,
    the reference term added instead of subtracted, log(sigmoid(x)) (infinite for a large margin), a mean instead
    of per-pair losses, rewards without beta, rewards that still carry gradient.
    """
    name = "dpo_loss"
    F = torch.nn.functional
    cases = _logps_cases(hidden)
    for case, four, beta in cases:
        args = tuple(t.clone().requires_grad_(i < 2) for i, t in enumerate(four))
        out = _call(dpo_loss, name, *args, beta)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            _fail(name, f"returns {type(out).__name__}; expected a tuple (losses, chosen_rewards, rejected_rewards)",
                  f"case: {case}")
        losses, chosen_rewards, rejected_rewards = out
        if type(losses) is torch.Tensor and losses.dim() == 0:
            _fail(name, "returns one loss: return the loss of every pair ([B]); the training loop takes the mean",
                  f"case: {case}")
        shape = four[0].shape
        got = _tensor_result(losses, name, shape, case)
        pc, pr, rc, rr = (t.double() for t in four)
        h = (pc - rc) - (pr - rr)
        want = -F.logsigmoid(beta * h)
        if not _close(got, want, ATOL_VALUE, RTOL_VALUE):
            if not bool(torch.isfinite(got).all()):
                _fail(name, "gives inf or nan for a large margin: log(sigmoid(x)) underflows once sigmoid(x) rounds "
                            "to 0; use torch.nn.functional.logsigmoid", f"case: {case}: expected {_fmt(want)}")
            variants = [
                ("chosen and rejected are swapped (the sign of h is flipped): the loss must be small when the "
                 "chosen response gained more probability than the rejected one", -F.logsigmoid(-beta * h)),
                ("beta is missing: the loss is -log sigma(beta * h), beta times the log-ratio difference",
                 -F.logsigmoid(h)),
                ("the reference is left out: h is (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))",
                 -F.logsigmoid(beta * (pc - pr))),
                ("the reference term has the wrong sign: it adds the reference's log-prob difference "
                 "(log pi_ref(y_w) - log pi_ref(y_l)) instead of subtracting it; each log-ratio is log pi - log pi_ref",
                 -F.logsigmoid(beta * ((pc - pr) + (rc - rr)))),
                ("divides by beta instead of multiplying", -F.logsigmoid(h / beta)),
                ("the minus sign is missing: the loss -log sigma(beta h) is >= 0", F.logsigmoid(beta * h)),
            ]
            mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE, want=want)
            _fail(name, mistake or "the losses differ from -log sigma(beta * h)",
                  f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
        for which, rewards, log_ratio in (("chosen", chosen_rewards, pc - rc), ("rejected", rejected_rewards, pr - rr)):
            got_r = _tensor_result(rewards, name, shape, case)
            if not _close(got_r, beta * log_ratio, ATOL_VALUE, RTOL_VALUE):
                hint = ("the implicit reward is beta * (log pi - log pi_ref): beta is missing"
                        if _close(got_r, log_ratio, ATOL_VALUE, RTOL_VALUE) else
                        f"the {which} implicit reward should be beta * (log pi - log pi_ref) of the {which} response")
                _fail(name, hint, f"case: {case}: expected {_fmt(beta * log_ratio)}, got {_fmt(got_r)}")
            if rewards.requires_grad:
                _fail(name, f"the {which} rewards carry gradient: they are for logging, so .detach() them (a metric "
                            f"must never become part of the loss by accident)", f"case: {case}")
    print(f"dpo_loss passed {len(cases)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |expected|)")


METRIC_NAMES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def check_dpo_metrics(dpo_metrics: Callable, hidden: bool = False) -> None:
    """Check ``dpo_metrics(losses, chosen_rewards, rejected_rewards) -> dict`` of plain floats under the
    practitioners' names: the batch means of the loss, of each implicit reward and of the margin, and the accuracy
    (share of pairs with chosen reward > rejected reward, ties count as wrong). Within ``ATOL_VALUE``.

    Known mistakes it names: missing or renamed keys, tensors instead of floats, ties counted as right, the margin
    with its sign flipped, sums instead of means.
    """
    name = "dpo_metrics"
    cases = [("ordinary rewards", torch.tensor([0.7, 0.4, 0.1, 0.9]), torch.tensor([0.2, 0.6, 0.1, -0.4])),
             ("all rewards 0 (pi = pi_ref): every pair is a tie", torch.zeros(3), torch.zeros(3))]
    if hidden:
        gen = torch.Generator().manual_seed(41)
        cases.append(("random rewards", torch.randn(32, generator=gen), torch.randn(32, generator=gen)))
    for case, chosen, rejected in cases:
        losses = -torch.nn.functional.logsigmoid(chosen - rejected)
        out = _call(dpo_metrics, name, losses.clone(), chosen.clone(), rejected.clone())
        if not isinstance(out, dict):
            _fail(name, f"returns {type(out).__name__}; expected a dict", f"case: {case}")
        missing = [k for k in METRIC_NAMES if k not in out]
        if missing:
            _fail(name, f"the dict lacks {missing}: use the names a production library logs, exactly "
                        f"{list(METRIC_NAMES)}", f"case: {case}; got keys {list(out)}")
        for k in METRIC_NAMES:
            if not isinstance(out[k], float):
                _fail(name, f"{k!r} is a {type(out[k]).__name__}: return plain Python floats (.item()), so that "
                            f"logging never holds on to tensors", f"case: {case}")
        want = {"loss": losses.mean().item(), "rewards/chosen": chosen.mean().item(),
                "rewards/rejected": rejected.mean().item(),
                "rewards/accuracies": (chosen > rejected).float().mean().item(),
                "rewards/margins": (chosen - rejected).mean().item()}
        for k, v in want.items():
            got = out[k]
            if abs(got - v) <= ATOL_VALUE:
                continue
            n = len(chosen)
            if k == "rewards/accuracies" and abs(got - (chosen >= rejected).float().mean().item()) <= ATOL_VALUE:
                _fail(name, "counts ties as right: a pair is right only when chosen reward > rejected reward (at the "
                            "start every reward is 0, and the accuracy must be 0, not 1)", f"case: {case}")
            if k == "rewards/margins" and abs(got + v) <= ATOL_VALUE:
                _fail(name, "the margin's sign is flipped: it is chosen - rejected", f"case: {case}")
            if abs(got - n * v) <= ATOL_VALUE * n:
                _fail(name, f"{k!r} is a sum over the batch: report the mean", f"case: {case}")
            _fail(name, f"{k!r} is wrong", f"case: {case}: expected {v:.6g}, got {got:.6g}")
    print(f"dpo_metrics passed {len(cases)} cases (tolerance {ATOL_VALUE})")


def _sequence_case(gen: torch.Generator, prompt_lens: list[int], response_lens: list[int], V: int = 7):
    """Right-padded ids [B, T], logits [B, T, V] and the response mask (1 on response tokens incl. <eos>)."""
    T = max(p + r for p, r in zip(prompt_lens, response_lens)) + 1
    B = len(prompt_lens)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        ids[b, :p + r] = torch.randint(1, V, (p + r,), generator=gen)
        mask[b, p:p + r] = 1
    logits = 2 * torch.randn(B, T, V, generator=gen)
    return logits, ids, mask


def check_sequence_logprob(sequence_logprob: Callable, hidden: bool = False) -> None:
    """Check ``sequence_logprob(logits, input_ids, response_mask) -> [B]``: log pi(response | prompt), the **sum**
    over response tokens of log softmax(logits[t])[input_ids[t + 1]], with the mask selecting response targets.
    Within ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|.

    Known mistakes it names: the mean instead of the sum, prompt tokens counted, padding counted, no shift to the
    next token, raw logits (or probabilities) instead of log-softmax, the mask applied to inputs instead of targets.
    """
    name = "sequence_logprob"
    gen = torch.Generator().manual_seed(42)
    shapes = [([3, 5, 2], [4, 2, 6]), ([4, 4], [3, 3])] + ([([2, 6, 3, 5], [5, 1, 4, 2])] if hidden else [])
    for prompt_lens, response_lens in shapes:
        logits, ids, mask = _sequence_case(gen, prompt_lens, response_lens)
        case = f"prompts of {prompt_lens} tokens, responses of {response_lens} tokens, right padded"
        args = (logits.clone(), ids.clone(), mask.clone())
        got = _tensor_result(_call(sequence_logprob, name, *args), name, torch.Size([len(prompt_lens)]), case)
        _inputs_unchanged(name, (logits, ids, mask), args, case)
        logp = torch.log_softmax(logits.double(), -1)
        per_token = logp[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)              # [B, T-1]
        target = mask[:, 1:].double()
        want = (per_token * target).sum(-1)
        if _close(got, want, ATOL_VALUE, RTOL_VALUE):
            continue
        real = (ids[:, 1:] != 0).double()
        unshifted = logp.gather(2, ids[:, :, None]).squeeze(2)                       # [B, T]
        raw = logits.double()[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
        probs = torch.softmax(logits.double(), -1)[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2)
        variants = [
            ("averages the token log-probs: log pi(y|x) is their sum (a mean makes long and short responses "
             "incomparable, and is not the probability of the response)", want / target.sum(-1)),
            ("counts the prompt tokens too: only response tokens (and <eos>) belong to log pi(response | prompt); "
             "multiply by the response mask", (per_token * real).sum(-1)),
            ("counts every position, padding included: multiply by the response mask", per_token.sum(-1)),
            ("does not shift: the logits at position t predict the token at t + 1, so compare logits[:, :-1] with "
             "input_ids[:, 1:] and use response_mask[:, 1:]", (unshifted * mask.double()).sum(-1)),
            ("applies the mask to the inputs instead of the targets: use response_mask[:, 1:] with the shifted "
             "targets", (per_token * mask[:, :-1].double()).sum(-1)),
            ("uses the raw logits: take log_softmax over the vocabulary first", (raw * target).sum(-1)),
            ("sums probabilities: take log_softmax, not softmax", (probs * target).sum(-1)),
        ]
        mistake = _first_match(got, variants, ATOL_VALUE, RTOL_VALUE)
        _fail(name, mistake or "the values differ from the summed log-probs of the response tokens",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(got)}")
    print(f"sequence_logprob passed {len(shapes)} cases (tolerance {ATOL_VALUE} + {RTOL_VALUE} * |expected|)")


def _loop_setup():
    """A tiny model and two batches of clean preference pairs (correct answer over insult)."""
    from ...model import LanguageModel
    return _tiny_preference_setup(LanguageModel)


def _reference_loop(policy, reference, batches, beta, lr, epochs, average=False, sign=1.0):
    """The course's loop, and the variants the check compares against."""
    from ...model import sequence_logprobs

    def logps(model, b):
        lp = sequence_logprobs(model(b.input_ids, b.attention_mask), b.input_ids, b.response_mask)
        return lp / b.response_mask.sum(-1) if average else lp

    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        for batch in batches:
            with torch.no_grad():
                rc, rr = logps(reference, batch.chosen), logps(reference, batch.rejected)
            h = (logps(policy, batch.chosen) - rc) - (logps(policy, batch.rejected) - rr)
            loss = -torch.nn.functional.logsigmoid(sign * beta * h).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def check_dpo_training_loop(train_dpo_loop: Callable, hidden: bool = False) -> None:
    """Check ``train_dpo_loop(policy, reference, batches, beta, lr, epochs) -> list[float]`` on a tiny model: one
    Adam step per batch per epoch, the loss of every step returned, the reference frozen, the policy trained.
    The first three losses must match the course's loop within 1e-4 (same model, data and optimiser).

    Known mistakes it names: a single epoch where several are asked for, gradients reaching the reference (or the
    reference changing), the policy not starting from the reference, averaging token log-probs, chosen and
    rejected swapped, a loss that does not fall.
    """
    import copy
    name = "train_dpo_loop"
    settings = [(0.5, 3e-3, 3)] + ([(1.0, 1e-3, 2)] if hidden else [])
    for beta, lr, epochs in settings:
        case = f"a tiny model, 2 batches of 8 pairs, beta {beta}, lr {lr}, {epochs} epochs"
        reference, batches = _loop_setup()
        reference.requires_grad_(True)     # as a learner would get it: nothing frozen yet
        before = {k: v.clone() for k, v in reference.state_dict().items()}
        policy = copy.deepcopy(reference)
        out = _call(train_dpo_loop, name, policy, reference, batches, beta, lr, epochs)
        if not isinstance(out, (list, tuple)) or not all(isinstance(x, float) for x in out):
            _fail(name, "should return the list of per-step losses as Python floats (loss.item())", f"case: {case}")
        losses = list(out)
        if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in reference.parameters()):
            _fail(name, "gradients reach the reference model: compute its log-probs under torch.no_grad() (the "
                        "reference must stay frozen)", f"case: {case}")
        if any(not torch.equal(v, before[k]) for k, v in reference.state_dict().items()):
            _fail(name, "the reference model changed: only the policy's parameters go to the optimiser",
                  f"case: {case}")
        if len(losses) == len(batches) and epochs > 1:
            _fail(name, f"ran a single epoch: {len(losses)} steps for {epochs} epochs of {len(batches)} batches; "
                        f"loop over the epochs (one epoch is often too few for DPO)", f"case: {case}")
        if len(losses) != epochs * len(batches):
            _fail(name, f"returned {len(losses)} losses; expected one per step, {epochs} x {len(batches)}",
                  f"case: {case}")
        if abs(losses[0] - math.log(2)) > 1e-4:
            _fail(name, f"the first loss is {losses[0]:.5f}, not log 2 = {math.log(2):.5f}: at the first step the "
                        f"policy equals the reference, so every implicit reward is 0 (is the policy trained from a "
                        f"copy of the reference, and is the loss -log sigma(beta h) averaged over the batch?)",
                  f"case: {case}")
        if all(abs(x - losses[0]) < 1e-6 for x in losses):
            _fail(name, "the loss does not fall at all: does the optimiser step the policy's parameters (zero_grad, "
                        "backward, step, in that order)?", f"case: {case}: losses {_fmt(losses)}")
        want = _reference_loop(_loop_setup()[0], _loop_setup()[0].requires_grad_(False), batches, beta, lr, 2)[:3]
        if all(abs(a - b) <= 1e-4 for a, b in zip(losses[:3], want)):
            if not losses[-1] < losses[0] - 0.05:
                _fail(name, "the loss does not fall: does the optimiser get the policy's parameters?",
                      f"case: {case}: losses {losses}")
            continue
        variants = [
            ("averages the token log-probs: DPO uses log pi(y|x), the sum over response tokens",
             dict(average=True)),
            ("chosen and rejected are swapped (the sign of h is flipped): the loss rises as the model learns",
             dict(sign=-1.0)),
        ]
        for mistake, kw in variants:
            other = _reference_loop(_loop_setup()[0], _loop_setup()[0].requires_grad_(False), batches, beta, lr, 2,
                                    **kw)[:3]
            if all(abs(a - b) <= 1e-4 for a, b in zip(losses[:3], other)):
                _fail(name, mistake, f"case: {case}: first losses {_fmt(losses[:3])}")
        _fail(name, "the first losses differ from the course's loop (Adam on the policy's parameters, one step per "
                    "batch, loss = mean over the batch of -log sigma(beta h) with summed log-probs)",
              f"case: {case}: expected {_fmt(want)}, got {_fmt(losses[:3])}")
    print(f"train_dpo_loop passed {len(settings)} case(s) (first losses within 1e-4 of the course's loop)")


QUESTIONS.update({
    "dpo_models_held": Question(
        "what DPO needs during training",
        answer="C",
        why_not=({
            "A": "that is RLHF with PPO: DPO has no reward model and no value function",
            "B": "DPO's implicit reward is beta * log(pi / pi_ref): without the reference there is nothing to "
                 "measure the policy against (reference-free variants such as SimPO and ORPO change the loss)",
            "D": "DPO never samples from the policy during training: it learns from a fixed set of pairs",
        },),
    ),
    "when_rlhf_wins": Question(
        "when RLHF beats DPO",
        answer="A",
        why_not=({
            "B": "a fixed set of good comparisons is DPO's home ground: it fits them directly, with no reward model "
                 "or RL loop to tune",
            "C": "DPO needs fewer models in memory (no reward model, no value function): a small budget favours DPO",
            "D": "both use a KL-style anchor to the reference; DPO's beta plays the role of RLHF's KL coefficient",
        },),
    ),
    "dpo_degenerates": Question(
        "what to do when DPO's samples degrade",
        answer="D",
        why_not=({
            "A": "the validation loss already looked fine while the samples broke: the loss does not see it, so "
                 "training longer on it makes things worse",
            "B": "a smaller beta makes implicit rewards cheaper and moves the policy further from the reference: "
                 "the failure gets worse",
            "C": "the learning rate changes how fast, not where the loss leads: the same degeneration comes later",
        },),
    ),
})


def check_dpo_models_held(answer) -> None:
    """Exercise: what DPO keeps in memory during training (one letter)."""
    check_choice("dpo_models_held", answer)


def check_when_rlhf_wins(answer) -> None:
    """Exercise: when RLHF is the better choice (one letter)."""
    check_choice("when_rlhf_wins", answer)


def check_dpo_degenerates(answer) -> None:
    """Exercise: the fixes for DPO's degeneration at small beta (one letter)."""
    check_choice("dpo_degenerates", answer)


def check_dpo_target_beta(target_beta: Callable) -> None:
    """Check ``target_beta(tau, beta_dpo) -> float``: DPO on Bradley-Terry labels with noise tau targets the
    KL-regularised optimum at beta = tau * beta_dpo. Exact to 1e-9.

    Known mistakes it names: beta_dpo alone (tau forgotten), beta_dpo / tau, tau / beta_dpo.
    """
    name = "target_beta"
    for tau, beta_dpo in ((0.5, 0.2), (2.0, 0.1), (0.25, 4.0)):
        got = _call(target_beta, name, tau, beta_dpo)
        if not isinstance(got, (int, float)):
            _fail(name, f"returns a {type(got).__name__}; expected a number")
        want = tau * beta_dpo
        if abs(got - want) <= 1e-9:
            continue
        for mistake, value in (("forgets the annotator's noise tau: the labels' log-odds are (r_1 - r_2) / tau",
                                beta_dpo),
                               ("divides by tau: beta_dpo * h = (r_1 - r_2) / tau, so r = tau * beta_dpo * h + ...",
                                beta_dpo / tau),
                               ("inverts the ratio", tau / beta_dpo)):
            if abs(got - value) <= 1e-9:
                _fail(name, mistake, f"case: tau {tau}, beta_dpo {beta_dpo}: expected {want}, got {got}")
        _fail(name, "wrong value", f"case: tau {tau}, beta_dpo {beta_dpo}: expected {want}, got {got}")
    print("target_beta passed 3 cases (exact)")


