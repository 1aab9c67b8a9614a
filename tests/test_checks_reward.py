"""The lesson 02 checks can fail: each passes correct answers and names the mistake in realistic wrong ones."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import checks, reward


def _stub(*args):
    raise NotImplementedError("Exercise 9.9 is not implemented yet")


# ---------------------------------------------------------------------------------------------------------------
# correct answers

def _pad_batch(seqs, pad_id):
    T = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (T - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    return ids, mask


def _score_at_last_token(values, mask):
    return values[torch.arange(len(values)), mask.sum(-1) - 1]


def _gradient(m):
    return -torch.sigmoid(-m)  # the same function as sigmoid(m) - 1, written another way


def _slope(scores, lengths):
    x, y = lengths - lengths.mean(), scores - scores.mean()
    return float((x * y).sum() / (x * x).sum())


CORRECT = [
    (checks.check_pad_batch, _pad_batch),
    (checks.check_score_at_last_token, _score_at_last_token),
    (checks.check_bradley_terry_loss, reward.bradley_terry_loss),
    (checks.check_bradley_terry_loss, lambda c, r: F.softplus(r - c)),
    (checks.check_bradley_terry_gradient, _gradient),
    (checks.check_length_slope, _slope),
]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("check, answer", CORRECT, ids=lambda x: getattr(x, "__name__", ""))
def test_a_correct_answer_passes(check, answer, hidden, capsys):
    check(answer, hidden=hidden)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("check", [c for c, _ in CORRECT[::2]] + [checks.check_over_optimisation])
def test_an_untouched_stub_fails_with_not_implemented_yet(check):
    with pytest.raises(AssertionError, match="Exercise 9.9 is not implemented yet"):
        check(_stub)


# ---------------------------------------------------------------------------------------------------------------
# wrong answers, each named

def _left_pad(seqs, pad_id):
    T = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (T - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (T - len(s)) + [1] * len(s) for s in seqs])
    return ids, mask


def _fixed_length(seqs, pad_id):
    ids = torch.tensor([s + [pad_id] * (10 - len(s)) for s in seqs])
    return ids, (ids != pad_id).long()


WRONG = [
    (checks.check_pad_batch, "left padding", _left_pad, "pads on the left"),
    (checks.check_pad_batch, "inverted mask", lambda s, p: (_pad_batch(s, p)[0], 1 - _pad_batch(s, p)[1]),
     "inverted"),
    (checks.check_pad_batch, "pads with 0", lambda s, p: _pad_batch(s, 0), "pads with 0"),
    (checks.check_pad_batch, "fixed length", _fixed_length, "padded to the longest"),
    (checks.check_pad_batch, "bool mask", lambda s, p: (_pad_batch(s, p)[0], _pad_batch(s, p)[1].bool()), "dtype"),
    (checks.check_score_at_last_token, "last position", lambda v, m: v[:, -1], "padding token"),
    (checks.check_score_at_last_token, "one past", lambda v, m: v.gather(1, m.sum(-1).clamp(max=v.shape[1] - 1)[:, None])
     .squeeze(1), "one position past"),
    (checks.check_score_at_last_token, "one past, unclamped", lambda v, m: v[torch.arange(len(v)), m.sum(-1)],
     "one position past"),
    (checks.check_score_at_last_token, "first token", lambda v, m: v[:, 0], "first token"),
    (checks.check_score_at_last_token, "mean", lambda v, m: (v * m).sum(-1) / m.sum(-1), "averages"),
    (checks.check_bradley_terry_loss, "swapped", lambda c, r: -F.logsigmoid(r - c), "swapped"),
    (checks.check_bradley_terry_loss, "log of sigmoid", lambda c, r: -torch.log(torch.sigmoid(c - r)), "logsigmoid"),
    (checks.check_bradley_terry_loss, "no minus", lambda c, r: F.logsigmoid(c - r), "minus sign"),
    (checks.check_bradley_terry_loss, "mean", lambda c, r: -F.logsigmoid(c - r).mean(), "one number"),
    (checks.check_bradley_terry_loss, "sigmoid only", lambda c, r: -torch.sigmoid(c - r), "without the log"),
    (checks.check_bradley_terry_loss, "log1p of exp", lambda c, r: torch.log1p(torch.exp(r - c)),
     r"exp\(-m\) overflows .* log\(1 \+ exp\(-m\)\) is log\(inf\)"),
    (checks.check_bradley_terry_loss, "log of sigmoid in float64",
     lambda c, r: -torch.log(torch.sigmoid((c - r).double())).float(), "in float64 only moves the overflow"),
    (checks.check_bradley_terry_loss, "log1p of exp in float64",
     lambda c, r: torch.log1p(torch.exp((r - c).double())), "in float64 only moves the overflow"),
    (checks.check_bradley_terry_loss, "epsilon in the log", lambda c, r: -torch.log(torch.sigmoid(c - r) + 1e-8),
     "adds an epsilon inside the log"),
    (checks.check_bradley_terry_loss, "clamped sigmoid", lambda c, r: -torch.log(torch.sigmoid(c - r).clamp(min=1e-6)),
     "adds an epsilon inside the log"),
    (checks.check_bradley_terry_loss, "detached", lambda c, r: -F.logsigmoid(c - r).detach(), "carries no gradient"),
    (checks.check_bradley_terry_loss, "plain Python",
     lambda c, r: torch.tensor([math.log1p(math.exp(b - a)) if b - a < 30 else b - a
                                for a, b in zip(c.tolist(), r.tolist())]), "carries no gradient"),
    (checks.check_bradley_terry_loss, "rejected detached", lambda c, r: -F.logsigmoid(c - r.detach()),
     "gradient with respect to the rejected rewards"),
    (checks.check_bradley_terry_gradient, "sign", lambda m: 1 - torch.sigmoid(m), "sign is flipped"),
    (checks.check_bradley_terry_gradient, "no -1", lambda m: torch.sigmoid(m), "-1 is missing"),
    (checks.check_bradley_terry_gradient, "the loss", lambda m: -F.logsigmoid(m), "not its derivative"),
    (checks.check_length_slope, "correlation", lambda s, l: float(torch.corrcoef(torch.stack([l, s]))[0, 1]),
     "correlation"),
    (checks.check_length_slope, "through origin", lambda s, l: float((s * l).sum() / (l * l).sum()), "origin"),
    (checks.check_length_slope, "reversed", lambda s, l: _slope(l, s), "lengths on scores"),
]


@pytest.mark.parametrize("check, name, answer, mistake", WRONG, ids=[w[1] for w in WRONG])
def test_a_wrong_answer_fails_and_names_its_mistake(check, name, answer, mistake):
    with pytest.raises(AssertionError, match=mistake):
        check(answer)


@pytest.mark.parametrize("check, answer", [
    (checks.check_pad_batch, lambda s, p: (_pad_batch(s, p)[0] + 1, _pad_batch(s, p)[1])),
    (checks.check_score_at_last_token, lambda v, m: 2 * _score_at_last_token(v, m)),
    (checks.check_bradley_terry_loss, lambda c, r: 0.5 * F.softplus(r - c)),
    (checks.check_bradley_terry_gradient, lambda m: torch.sigmoid(m) - 0.9),
    (checks.check_length_slope, lambda s, l: 2 * _slope(s, l)),
])
def test_a_wrong_answer_that_matches_no_known_mistake_still_fails(check, answer):
    with pytest.raises(AssertionError):
        check(answer)


@pytest.mark.parametrize("key", ["scores_shift", "pairs_vs_ratings", "overfitting_curves", "over_optimisation"])
def test_each_lesson_02_question_passes_its_key_and_fails_every_other_letter(key, capsys):
    question = checks.QUESTIONS[key]
    checks.check_choice(key, question.answer)
    assert "correct" in capsys.readouterr().out
    for letter in set(question.letters) - set(question.answer):
        with pytest.raises(AssertionError, match="not the best answer"):
            checks.check_choice(key, letter)


# ---------------------------------------------------------------------------------------------------------------
# the preference batch (chosen and rejected paired row by row, with a response mask) and the reward-model loop

def _preference_batch(prompt_ids, chosen_ids, rejected_ids, pad_id, resp_span=lambda p, n: (p, n), left=False,
                      with_prompt=True, order=lambda rows: rows):
    def side(responses):
        prompts = prompt_ids if with_prompt else [[] for _ in prompt_ids]
        rows = order([(p, p + r) for p, r in zip(prompts, responses)])
        T = max(len(row) for _, row in rows)
        ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
        attn, resp = torch.zeros_like(ids), torch.zeros_like(ids)
        for i, (p, row) in enumerate(rows):
            shift = T - len(row) if left else 0
            ids[i, shift:shift + len(row)] = torch.tensor(row)
            attn[i, shift:shift + len(row)] = 1
            a, b = resp_span(len(p), len(row))
            resp[i, max(a, 0):min(b, T)] = 1
        return ids, attn, resp
    return side(chosen_ids), side(rejected_ids)


def _reward_loop(model, batches, lr, epochs, read_last_column=False, sign=1.0, reduce="mean", zero_grad=True,
                 step=True, as_tensor=False, one_epoch=False):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(1 if one_epoch else epochs):
        for b in batches:
            def score(s):
                v = model(s.input_ids, s.attention_mask)
                return v[:, -1] if read_last_column else v[torch.arange(len(v)), s.attention_mask.sum(-1) - 1]
            per_pair = -F.logsigmoid(sign * (score(b.chosen) - score(b.rejected)))
            loss = per_pair.sum() if reduce == "sum" else per_pair.mean()
            if zero_grad:
                opt.zero_grad()
            loss.backward()
            if step:
                opt.step()
            losses.append(loss.detach() if as_tensor else loss.item())
    return losses


def _sorted_by_length(rows):
    return sorted(rows, key=lambda pr: len(pr[1]))


BATCH_AND_LOOP_WRONG = [
    ("swapped sides", lambda p, c, r, pad: _preference_batch(p, c, r, pad)[::-1], "swapped"),
    ("sorted by length", lambda p, c, r, pad: _preference_batch(p, c, r, pad, order=_sorted_by_length),
     "breaks the pairing"),
    ("no prompt", lambda p, c, r, pad: _preference_batch(p, c, r, pad, with_prompt=False), "leaves the prompt out"),
    ("mask covers the prompt", lambda p, c, r, pad: _preference_batch(p, c, r, pad, resp_span=lambda a, n: (0, n)),
     "covers the prompt"),
    ("mask starts at sep", lambda p, c, r, pad: _preference_batch(p, c, r, pad, resp_span=lambda a, n: (a - 1, n)),
     "one token early"),
    ("mask without eos", lambda p, c, r, pad: _preference_batch(p, c, r, pad, resp_span=lambda a, n: (a, n - 1)),
     "leaves out <eos>"),
    ("mask one late", lambda p, c, r, pad: _preference_batch(p, c, r, pad, resp_span=lambda a, n: (a + 1, n)),
     "misses the first response token"),
    ("mask covers padding", lambda p, c, r, pad: _preference_batch(p, c, r, pad, resp_span=lambda a, n: (a, 99)),
     "covers padding"),
    ("left padding", lambda p, c, r, pad: _preference_batch(p, c, r, pad, left=True), "pads on the left"),
    ("inverted attention mask",
     lambda p, c, r, pad: tuple((i, 1 - a, m) for i, a, m in _preference_batch(p, c, r, pad)), "inverted"),
    ("pads with 0", lambda p, c, r, pad: _preference_batch(p, c, r, 0), "pads with 0"),
    ("bool masks", lambda p, c, r, pad: tuple((i, a.bool(), m.bool()) for i, a, m in _preference_batch(p, c, r, pad)),
     "dtype=torch.long"),
    ("one tensor for both sides", lambda p, c, r, pad: torch.cat([_preference_batch(p, c, r, pad)[0][0]]),
     "expected two tuples"),
]


@pytest.mark.parametrize("name, answer, mistake", BATCH_AND_LOOP_WRONG, ids=[w[0] for w in BATCH_AND_LOOP_WRONG])
def test_a_wrong_preference_batch_fails_and_names_its_mistake(name, answer, mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_preference_batch(answer)


LOOP_WRONG = [
    ("swapped", dict(sign=-1.0), "swapped"),
    ("last column", dict(read_last_column=True), "last column"),
    ("sum over pairs", dict(reduce="sum"), "sums the per-pair losses"),
    ("no zero_grad", dict(zero_grad=False), "zero_grad"),
    ("no step", dict(step=False), "did not change"),
    ("tensor losses", dict(as_tensor=True), "Python floats"),
    ("one epoch", dict(one_epoch=True), "single epoch"),
]


@pytest.mark.parametrize("name, kwargs, mistake", LOOP_WRONG, ids=[w[0] for w in LOOP_WRONG])
def test_a_wrong_reward_model_loop_fails_and_names_its_mistake(name, kwargs, mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_reward_model_training(lambda m, b, lr, e: _reward_loop(m, b, lr, e, **kwargs))


@pytest.mark.parametrize("hidden", [False, True])
def test_a_correct_preference_batch_and_reward_model_loop_pass(hidden, capsys):
    checks.check_preference_batch(_preference_batch, hidden=hidden)
    checks.check_reward_model_training(_reward_loop, hidden=hidden)
    assert capsys.readouterr().out.count("passed") == 2


@pytest.mark.parametrize("check", [checks.check_preference_batch, checks.check_reward_model_training])
def test_an_untouched_batch_or_loop_stub_fails_with_not_implemented_yet(check):
    with pytest.raises(AssertionError, match="Exercise 9.9 is not implemented yet"):
        check(_stub)
