"""Lesson 03's checks: each passes the reference answer and fails every wrong answer it names, with that name."""
import pytest
import torch

from helpers import checks, ppo, rlhf
from failing import fails

pytestmark = pytest.mark.usefixtures("one_thread")


def _stub(*args):
    raise NotImplementedError("Exercise 3.1 is not implemented yet")


# ----------------------------------------------------------------------------------------------------------------
# GAE

def _gae_variant(kind):
    def gae(rewards, values, mask, gamma, lam):
        m = mask if kind != "no_mask" else torch.ones_like(mask)
        B, L = rewards.shape
        adv = torch.zeros_like(rewards)
        next_v, next_a = torch.zeros(B), torch.zeros(B)
        steps = range(L) if kind == "forward" else reversed(range(L))
        for t in steps:
            if kind == "forward":
                nv = values[:, t + 1] * m[:, t + 1] if t + 1 < L else torch.zeros(B)
                delta = rewards[:, t] + gamma * nv - values[:, t]
                adv[:, t] = (delta + (gamma * lam * adv[:, t - 1] if t else 0)) * m[:, t]
                continue
            if kind == "padding_value":  # V_{t+1} straight from the tensor: padding after the last real token
                next_v = values[:, t + 1] if t + 1 < L else torch.zeros(B)
            delta = rewards[:, t] + gamma * (lam if kind == "lambda_in_delta" else 1.0) * next_v - values[:, t]
            weight = {"no_lambda": gamma, "no_gamma": lam, "td": 0.0}.get(kind, gamma * lam)
            adv[:, t] = (delta + weight * next_a) * (m[:, t] if kind != "padding_advantages" else 1.0)
            next_v, next_a = values[:, t] * m[:, t], adv[:, t] * m[:, t]
        returns = {"returns_no_v": adv * mask, "returns_padding": adv + values}.get(kind, (adv + values) * mask)
        return adv * mask if kind in ("no_mask",) else adv, returns
    return gae


def test_check_gae_passes_the_course_gae_including_hidden_cases():
    checks.check_gae(ppo.gae)
    checks.check_gae(ppo.gae, hidden=True)


@pytest.mark.parametrize("kind,words", [
    ("no_mask", ["padding leaks in"]), ("no_lambda", ["ignores lambda"]), ("no_gamma", ["gamma is missing"]),
    ("td", ["td errors"]), ("forward", ["forwards"]), ("returns_no_v", ["returns equal the advantages"]),
    ("returns_padding", ["returns are not 0 on padding"]), ("padding_advantages", ["not 0 on padding"]),
    ("padding_value", ["takes v_{t+1} from a padding position"]),
    ("lambda_in_delta", ["applies lambda to v_{t+1} inside delta"])])
def test_check_gae_names_each_mistake(kind, words):
    fails(checks.check_gae, _gae_variant(kind), words)


def test_check_gae_reports_a_stub():
    fails(checks.check_gae, _stub, ["Exercise 3.1 is not implemented yet"])


# ----------------------------------------------------------------------------------------------------------------
# advantage normalisation

def _normalise_variant(kind):
    def normalise(adv, mask):
        m = mask if kind != "padding" else torch.ones_like(mask)
        if kind == "unchanged":
            return adv * mask
        if kind == "per_row":
            n = m.sum(-1, keepdim=True)
            mean = (adv * m).sum(-1, keepdim=True) / n
            std = (((adv - mean) ** 2 * m).sum(-1, keepdim=True) / (n - 1)).sqrt()
            return (adv - mean) / (std + 1e-8) * mask
        mean = (adv * m).sum() / m.sum()
        std = (((adv - mean) ** 2 * m).sum() / (m.sum() - (0 if kind == "biased" else 1))).sqrt()
        out = {"no_centre": adv / std, "no_scale": adv - mean}.get(kind, (adv - mean) / std)
        return out if kind == "no_zero" else out * mask
    return normalise


def test_check_normalise_advantages_passes_the_course_whiten_and_the_biased_spread():
    checks.check_normalise_advantages(ppo.whiten)
    checks.check_normalise_advantages(ppo.whiten, hidden=True)
    checks.check_normalise_advantages(_normalise_variant("biased"), hidden=True)


@pytest.mark.parametrize("kind,words", [
    ("unchanged", ["advantages not normalised"]), ("padding", ["counts the padding"]),
    ("no_centre", ["does not remove the mean"]), ("no_scale", ["standard deviation"]),
    ("per_row", ["each response on its own"]), ("no_zero", ["does not zero the padding"])])
def test_check_normalise_advantages_names_each_mistake(kind, words):
    fails(checks.check_normalise_advantages, _normalise_variant(kind), words)


# ----------------------------------------------------------------------------------------------------------------
# the clipped policy loss

def _loss_variant(kind):
    def loss(logprobs, old, adv, mask, eps):
        ratio = torch.exp(logprobs - old) if kind != "no_exp" else logprobs - old
        un, cl = -adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)
        per = {"swapped": torch.minimum(un, cl), "no_clip": un, "clip_only": cl, "sign": -torch.maximum(un, cl),
               "clip_loss": -torch.minimum(adv * ratio, (adv * ratio).clamp(1 - eps, 1 + eps))
               }.get(kind, torch.maximum(un, cl))
        if kind == "straight_through":
            # the right value, with the gradient of the unclipped term everywhere
            per = un + (torch.maximum(un, cl) - un).detach()
        if kind == "padding":
            return per.mean()
        if kind == "per_sequence":  # each response's mean, then the mean over responses
            return ((per * mask).sum(-1) / mask.sum(-1)).mean()
        if kind == "detached":
            per = per.detach()
        return (per * mask).sum() / mask.sum()
    return loss


def test_check_clipped_policy_loss_passes_the_course_loss_including_hidden_cases():
    checks.check_clipped_policy_loss(ppo.clipped_policy_loss)
    checks.check_clipped_policy_loss(ppo.clipped_policy_loss, hidden=True)
    checks.check_clipped_policy_loss(_loss_variant("right"))


@pytest.mark.parametrize("kind,words", [
    ("swapped", ["min and max are swapped"]), ("clip_loss", ["clips the loss"]), ("no_clip", ["does not clip"]),
    ("clip_only", ["only the clipped term"]), ("sign", ["sign flipped"]), ("no_exp", ["log-ratio"]),
    ("padding", ["counts the padding"]), ("straight_through", ["gradient is wrong outside the clip range"]),
    ("per_sequence", ["per-sequence mean"]),
    ("detached", ["no gradient"])])
def test_check_clipped_policy_loss_names_each_mistake(kind, words):
    fails(checks.check_clipped_policy_loss, _loss_variant(kind), words)


# ----------------------------------------------------------------------------------------------------------------
# the KL-penalised per-token reward

def _rewards_variant(kind):
    def rewards(lp, ref, scores, mask, beta):
        kl = (lp - ref) * mask if kind != "kl_padding" else lp - ref
        out = {"kl_sign": beta * kl, "no_beta": -kl}.get(kind, -beta * kl)
        s = beta * scores if kind == "beta_on_score" else scores
        last = mask.sum(-1).long() - 1
        if kind == "last_column":
            out[:, -1] += s
        elif kind == "every_token":
            out = out + s[:, None] * mask
        elif kind == "first_token":
            out[:, 0] += s
        else:
            out[torch.arange(len(s)), last] += s
        return out
    return rewards


def test_check_kl_penalised_rewards_passes_the_course_function_including_hidden_cases():
    checks.check_kl_penalised_rewards(ppo.kl_penalised_rewards)
    checks.check_kl_penalised_rewards(ppo.kl_penalised_rewards, hidden=True)
    checks.check_kl_penalised_rewards(_rewards_variant("right"))


@pytest.mark.parametrize("kind,words", [
    ("kl_sign", ["kl sign is flipped"]), ("last_column", ["score is read at the wrong token"]),
    ("every_token", ["every token"]), ("first_token", ["first token"]), ("beta_on_score", ["multiplies the score"]),
    ("no_beta", ["beta is missing"]), ("kl_padding", ["kl penalty on padding"])])
def test_check_kl_penalised_rewards_names_each_mistake(kind, words):
    fails(checks.check_kl_penalised_rewards, _rewards_variant(kind), words)


# ----------------------------------------------------------------------------------------------------------------
# response log-probs

def _logprobs_variant(kind):
    def logprobs(model, ids, attn, context, temperature):
        if kind != "dropout_on":
            model.eval()
        t = {"no_temperature": 1.0, "times_temperature": 1.0 / temperature}.get(kind, temperature)
        logits = model(ids, attn)
        logits = (logits[:, context:] if kind == "no_shift" else logits[:, context - 1:-1]) / t
        if kind == "raw":
            return logits.gather(2, ids[:, context:, None]).squeeze(2)
        return torch.log_softmax(logits, -1).gather(2, ids[:, context:, None]).squeeze(2)
    return logprobs


def test_check_response_logprobs_passes_the_course_function_in_eval_mode():
    course = lambda model, *args: rlhf.response_logprobs(model.eval(), *args)  # noqa: E731
    checks.check_response_logprobs(course)
    checks.check_response_logprobs(course, hidden=True)
    checks.check_response_logprobs(_logprobs_variant("right"))


@pytest.mark.parametrize("kind,words", [
    ("dropout_on", ["dropout is left on", "ratio"]), ("no_temperature", ["temperature is missing when scoring"]),
    ("times_temperature", ["multiplies the logits"]), ("no_shift", ["does not shift"]), ("raw", ["raw logits"])])
def test_check_response_logprobs_names_each_mistake(kind, words):
    fails(checks.check_response_logprobs, _logprobs_variant(kind), words)


# ----------------------------------------------------------------------------------------------------------------
# reading a reward-hacking history

def _peak_variant(kind):
    def gold_peak(history):
        rows = [h for h in history if "objective/gold" in h]
        key = "objective/scores" if kind == "proxy" else "objective/gold"
        best = (min if kind == "min" else max)(rows, key=lambda h: h[key])
        if kind == "last":
            best = rows[-1]
        if kind == "position":
            return rows.index(best), best["objective/kl"]
        if kind == "wrong_kl":
            return best["iteration"], rows[-1]["objective/kl"]
        return best["iteration"], best["objective/kl"]
    return gold_peak


def test_check_gold_peak_passes_the_right_answer_including_hidden_cases():
    checks.check_gold_peak(_peak_variant("right"))
    checks.check_gold_peak(_peak_variant("right"), hidden=True)


@pytest.mark.parametrize("kind,words", [("proxy", ["proxy"]), ("min", ["lowest gold"]), ("last", ["last iteration"]),
                                        ("position", ["position in the list"]), ("wrong_kl", ["kl is not"])])
def test_check_gold_peak_names_each_mistake(kind, words):
    fails(checks.check_gold_peak, _peak_variant(kind), words)


# ----------------------------------------------------------------------------------------------------------------
# multiple choice

@pytest.mark.parametrize("key", ["ppo_models_trained", "ppo_kl_coefficient_low", "ppo_kl_coefficient_high",
                                 "ppo_clip_range"])
def test_each_question_accepts_its_answer_and_explains_every_wrong_letter(key):
    question = checks.QUESTIONS[key]
    check = getattr(checks, f"check_{key}")
    check(lambda: question.answer)
    for letter in question.letters:
        if letter != question.answer:
            fails(check, lambda: letter, [question.why_not[0][letter][:30]])


def test_lesson_03_questions_do_not_reuse_lesson_01_keys():
    assert "beta_too_low" in checks.QUESTIONS and "ppo_kl_coefficient_low" in checks.QUESTIONS
    assert checks.QUESTIONS["beta_too_low"].title != checks.QUESTIONS["ppo_kl_coefficient_low"].title
