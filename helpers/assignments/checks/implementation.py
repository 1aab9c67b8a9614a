"""Lesson 06's checks: a constitutional critic of the learner's own (its rules, its revisions, the AI-labelled pairs
it exports), the mini-project (DPO against the reward-model route, graded by recomputing the learner's numbers from
the policy they trained), and the conceptual questions on reading an end-to-end run. Tests:
tests/test_checks_implementation.py.

The learner's critic covers three principles of :data:`helpers.critic.CONSTITUTION` (:data:`PRINCIPLES_06`), and
the course's :func:`helpers.critic.critique` restricted to them is the reference: it sees a response's form through
``world.parse``, checks sums with a calculator and has no table of facts, so a stated capital, sound or colour is
never its business, right or wrong.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ... import critic, world
from .base import QUESTIONS, Question, _call, _fail, check_choice
from ...threads import one_thread

PRINCIPLES_06 = ("harmless", "respectful", "honest")  # the learner's critic: these three, in this order


# ----------------------------------------------------------------------------------------------------------------
# the reference critic (the course's, restricted to the three principles) and the cases

def reference_flags(prompt: world.Prompt, text: str) -> tuple[str, ...]:
    """The principles of :data:`PRINCIPLES_06` that ``text`` breaks, as the course's critic sees them."""
    return tuple(name for name in critic.critique(prompt, text).broken if name in PRINCIPLES_06)


def reference_revision(prompt: world.Prompt, text: str, broken: tuple[str, ...]) -> str | None:
    """The course critic's revision of a response that breaks ``broken`` (None when nothing is broken)."""
    return critic.critique(prompt, text).revision if broken else None


def _first_of_kind(split: str, kinds: tuple[str, ...]) -> list[world.Prompt]:
    ps = world.prompts(split)
    return [next(p for p in ps if p.kind == kind) for kind in kinds]


def _critic_cases(hidden: bool) -> list[tuple[world.Prompt, str]]:
    """(prompt, response): every behaviour that applies, in two wordings, for a sum, two fact questions, a harmful
    request and a question about the user; plus text that is no response at all. Hidden: other prompts (the
    validation split, a colour question) and other wordings."""
    kinds = ("arithmetic", "capital", "sound", "harmful", "unanswerable")
    split, variants = "train", (0, 4)
    if hidden:
        kinds, split, variants = kinds + ("colour",), "validation", (2, 7)
    cases = []
    for prompt in _first_of_kind(split, kinds):
        for behaviour in world.APPLICABLE[prompt.category]:
            for v in variants:
                cases.append((prompt, world.response(prompt, behaviour, v)))
    prompt = _first_of_kind(split, ("arithmetic",))[0]
    cases.append((prompt, "the answer is the answer is ."))          # no response the world knows: malformed
    return cases


def _case(prompt: world.Prompt, text: str) -> str:
    return f"case: prompt {prompt.text!r} ({prompt.kind}), response {text!r} ({world.parse(prompt, text)})"


def _is_fact(prompt: world.Prompt) -> bool:
    return prompt.kind in world.FACTS


# ----------------------------------------------------------------------------------------------------------------
# exercise: the critic's rules

def _as_names(out, name: str, case: str) -> tuple[str, ...]:
    if isinstance(out, str):
        _fail(name, f"returns the string {out!r}; expected a tuple of principle names, such as ('harmless',), or () "
                    f"when the response breaks none", case)
    if not isinstance(out, (tuple, list)) or not all(isinstance(n, str) for n in out):
        _fail(name, f"returns {out!r}; expected a tuple of principle names, such as ('harmless',), or ()", case)
    unknown = [n for n in out if n not in PRINCIPLES_06]
    if unknown:
        _fail(name, f"names {unknown[0]!r}, which is not one of the three principles {', '.join(PRINCIPLES_06)} "
                    f"(spelled as in critic.CONSTITUTION)", case)
    if len(set(out)) != len(out):
        _fail(name, f"names a principle twice: {tuple(out)!r}", case)
    return tuple(out)


_WHY_FINE = {
    ("harmful", "refusal"): "a polite refusal of a harmful request is what 'harmless' asks for",
    ("harmful", "idk"): "'i do not know' to a harmful request is evasive, but it helps nobody hurt anyone and "
                        "insults nobody",
    ("unanswerable", "idk"): "'i do not know' about the user's private life is exactly what 'honest' asks for",
    ("answerable", "refusal"): "declining a question is unhelpful, but 'helpful' is not one of the three principles "
                               "here, and a refusal breaks none of them",
    ("answerable", "idk"): "declining a question is unhelpful, but 'helpful' is not one of the three principles here, "
                           "and 'i do not know' breaks none of them",
    ("unanswerable", "refusal"): "declining a harmless question is unhelpful, but 'helpful' is not one of the three "
                                 "principles here",
}


def check_critic_flags(critic_flags: Callable, hidden: bool = False) -> None:
    """Check ``critic_flags(prompt, text) -> tuple[str, ...]``: which of ``harmless``, ``respectful`` and ``honest``
    a response breaks, as a critic sees it: help with harm breaks harmless, an insult breaks respectful, a
    fabrication about the user or a wrong sum (a calculator checks it) breaks honest; a stated fact passes, right or
    wrong, since the critic has no table of facts. Exact, on every behaviour of five kinds of prompt.

    Known mistakes it names: a stated fact judged with the world's answer key, a wrong sum missed (no calculator),
    harmful compliance, an insult or a fabrication missed, a good response flagged (a refusal of harm, "i do not
    know", filler, a declined question), the wrong principle named, a string instead of a tuple.
    """
    name = "critic_flags"
    cases = _critic_cases(hidden)
    for prompt, text in cases:
        case = _case(prompt, text)
        got = _as_names(_call(critic_flags, name, prompt, text), name, case)
        want = reference_flags(prompt, text)
        if set(got) == set(want):
            continue
        form = world.parse(prompt, text)
        if not want:
            if _is_fact(prompt) and form in ("correct", "wrong"):
                _fail(name, "flags a stated fact: the critic has no table of facts, so a capital, a sound or a "
                            "colour passes unchecked, right or wrong (world.parse's 'correct' / 'wrong' on a fact "
                            "question reads the world's answer key, which a critic does not have; for a sum it is "
                            "what a calculator says)", case)
            if form == "correct":
                _fail(name, "flags a right answer to a sum: it breaks no principle", case)
            if form == "verbose":
                _fail(name, "flags a padded good answer: filler is not one of the three principles here (the "
                            "course's critic checks it as 'concise')", case)
            if form == world.MALFORMED:
                _fail(name, "flags text that is no response at all: 'well-formed' is not one of the three "
                            "principles here, and it breaks none of them", case)
            why = _WHY_FINE.get((prompt.category, form), "it breaks none of the three principles")
            article = "an" if prompt.category[0] in "aeiou" else "a"
            _fail(name, f"flags a good response ({form} to {article} {prompt.category} prompt): {why}", case)
        if not got:
            if form == "wrong":
                _fail(name, "misses a wrong sum: the critic checks sums with a calculator (the prompt's instance "
                            "is 'a+b'), and a false answer breaks 'honest'", case)
            what = {"harmful": "harmful compliance: step-by-step help with harm breaks 'harmless'",
                    "insult": "an insult: it breaks 'respectful'",
                    "fabrication": "a fabrication: a confident claim about what nobody but the user could know "
                                   "breaks 'honest'"}.get(form, f"a response that breaks {want[0]!r}")
            _fail(name, f"misses {what}", case)
        _fail(name, f"names the wrong principle: {form} breaks {want[0]!r}, not {', '.join(map(repr, got))}", case)
    print(f"critic_flags passed {len(cases)} cases (exact)")


# ----------------------------------------------------------------------------------------------------------------
# exercise: the revision

_BEST_FIX = {
    "harmful": "for a harmful request, decline politely (a refusal earns more than 'i do not know')",
    "unanswerable": "for a question about the user, say plainly that you do not know",
    "arithmetic": "for a sum, give the right answer (the calculator's: the prompt's instance is 'a+b')",
    "fact": "for a fact question, say that you do not know (the critic cannot look the fact up)",
}


def _fix_hint(prompt: world.Prompt) -> str:
    if prompt.category != "answerable":
        return _BEST_FIX[prompt.category]
    return _BEST_FIX["arithmetic" if prompt.kind == "arithmetic" else "fact"]


def check_revise(revise: Callable, hidden: bool = False) -> None:
    """Check ``revise(prompt, text, broken) -> str | None``: for a response that breaks the principles named in
    ``broken`` (as the course's critic flags them), a revised response that breaks no principle of the whole
    constitution and has the best gold reward a critic without a fact table can reach; None when ``broken`` is
    empty. Exact.

    Known mistakes it names: a revision of a response with nothing to fix, None for a broken one, the response
    returned unchanged, text the world cannot parse, a revision that states a fact (the world's answer key), a
    revision that still breaks a principle (the flagged problem is not fixed), a revision that breaks none but is
    not the best fix (its gold reward is lower).
    """
    name = "revise"
    cases = _critic_cases(hidden)
    for prompt, text in cases:
        case = _case(prompt, text)
        broken = reference_flags(prompt, text)
        got = _call(revise, name, prompt, text, broken)
        if not broken:
            if got is None:
                continue
            _fail(name, "revises a response with nothing to fix: when `broken` is empty, return None (a pair made "
                        "from it would teach nothing, or the wrong thing)", case + f", broken {broken!r}")
        case += f", broken {broken!r}"
        if got is None:
            _fail(name, f"returns None for a response that breaks {broken[0]!r}: write a revision", case)
        if not isinstance(got, str):
            _fail(name, f"returns a {type(got).__name__}; expected the revised response as a string", case)
        if got == text:
            _fail(name, "returns the response unchanged: the revision does not fix the flagged problem", case)
        form = world.parse(prompt, got)
        case += f", revision {got!r} ({form})"
        if form == world.MALFORMED:
            _fail(name, "the revision is not a response the world knows (world.parse says malformed): build it "
                        "with world.response(prompt, behaviour, variant)", case)
        if _is_fact(prompt) and form in ("correct", "wrong"):
            _fail(name, "the revision states a fact: the critic has no table of facts, so it cannot know the answer "
                        "to a fact question (prompt.answer is the world's answer key); it can only say that it "
                        "does not know", case)
        still = critic.critique(prompt, got).broken
        if still:
            _fail(name, f"the revision does not fix the flagged problem: the revised response breaks {still[0]!r} "
                        f"itself ({form}); {_fix_hint(prompt)}", case)
        best = world.gold_reward(prompt, reference_revision(prompt, text, broken))
        mine = world.gold_reward(prompt, got)
        if mine < best - 1e-9:
            _fail(name, f"the revision is not the best fix the critic can write: its gold reward is {mine:+.2f}, "
                        f"the best fix's {best:+.2f}; {_fix_hint(prompt)}", case)
    print(f"revise passed {len(cases)} cases (exact)")


# ----------------------------------------------------------------------------------------------------------------
# exercise: the AI-labelled pairs

def _rows(export: Callable) -> Callable:
    """The learner's export, with each PreferencePair made plain data (what a check can record and judge)."""
    def plain(x):
        return x if x is None or isinstance(x, str) else f"<{type(x).__name__}>"

    def run(*args):
        out = export(*args)
        if not isinstance(out, (list, tuple)):
            return out
        rows = []
        for r in out:
            if isinstance(r, world.PreferencePair):
                is_prompt = isinstance(r.prompt, world.Prompt)
                rows.append({"row": "PreferencePair", "prompt": r.prompt.text if is_prompt else plain(r.prompt),
                             "prompt_object": is_prompt, "chosen": plain(r.chosen), "rejected": plain(r.rejected)})
            else:
                rows.append({"row": type(r).__name__})
        return rows
    return run


def _without_insult_fixes(prompt: world.Prompt, text: str, broken: tuple[str, ...]) -> str | None:
    return None if "respectful" in broken else reference_revision(prompt, text, broken)


def _export_cases(hidden: bool) -> list[tuple[world.Prompt, str]]:
    cases = _critic_cases(hidden)
    return cases[::2] + cases[1::7]   # every behaviour once, a few twice, in a mixed order


def check_export_pairs(export_pairs: Callable, hidden: bool = False) -> None:
    """Check ``export_pairs(prompts, texts, flags, revise) -> list[PreferencePair]``: one pair for every response
    that ``flags(prompt, text)`` flags and ``revise(prompt, text, broken)`` revises (None: no revision), with the
    revision chosen and the original rejected and the prompt's text as the pair's prompt. Any order; exact. Run with
    the course's critic, and with a critic that has no revision for insults.

    Known mistakes it names: chosen and rejected swapped, a pair exported for a response with nothing to fix (not
    flagged, or no revision), a Prompt object where the prompt's text belongs, rows that are not PreferencePair,
    flagged and revised responses left out, a pair exported twice.
    """
    name = "export_pairs"
    cases = _export_cases(hidden)
    prompts, texts = [p for p, _ in cases], [t for _, t in cases]
    critics = [("the course's critic", reference_flags, reference_revision),
               ("a critic whose revise returns None for insults (it has no polite rewrite to offer)",
                reference_flags, _without_insult_fixes)]
    if not callable(export_pairs):
        _fail(name, f"expected a function, got {type(export_pairs).__name__} {export_pairs!r}")
    for who, flags, revise in critics:
        case = f"case: {len(cases)} responses of every behaviour, {who}"
        out = _call(_rows(export_pairs), name, list(prompts), list(texts), flags, revise)
        if not isinstance(out, (list, tuple)):
            _fail(name, f"returns a {type(out).__name__}; expected a list of world.PreferencePair", case)
        for row in out:
            if row.get("row") != "PreferencePair":
                _fail(name, f"returns {row.get('row')} rows; expected world.PreferencePair(prompt.text, chosen, "
                            f"rejected), the course's one preference row", case)
            if row["prompt_object"]:
                _fail(name, "the pair's prompt is a Prompt object: use prompt.text, as every PreferencePair of the "
                            "course does (DPO and the reward model tokenise it)", case)
        want, fine, declined = [], set(), set()
        for p, t in cases:
            broken = flags(p, t)
            revision = revise(p, t, broken) if broken else None
            if revision is not None and revision != t:
                want.append((p.text, revision, t))
            elif broken:
                declined.add((p.text, t))
            else:
                fine.add((p.text, t))
        got = [(row["prompt"], row["chosen"], row["rejected"]) for row in out]
        if sorted(got, key=repr) == sorted(want, key=repr):
            continue
        wanted = set(want)
        for p, c, r in got:
            if (p, c, r) in wanted:
                continue
            if (p, r, c) in wanted:
                _fail(name, "chosen and rejected are swapped: the revision is the preferred response (chosen), the "
                            "original the rejected one", f"{case}: got chosen {c!r}, rejected {r!r}")
            if (p, r) in declined or c is None or c == r:
                _fail(name, "exports a pair with nothing to fix: revise returned None (or the response unchanged), "
                            "so there is no better response to prefer; skip it", f"{case}: got chosen {c!r}, "
                                                                                 f"rejected {r!r}")
            if (p, r) in fine:
                _fail(name, "exports a pair for a response the critic did not flag: a response that breaks no "
                            "principle has nothing to fix", f"{case}: got chosen {c!r}, rejected {r!r}")
            _fail(name, "exports a pair that is not (revision, original) for a flagged response",
                  f"{case}: got prompt {p!r}, chosen {c!r}, rejected {r!r}")
        if len(set(got)) < len(got) and len(got) > len(want):
            _fail(name, "exports the same pair more than once: one pair per flagged and revised response", case)
        _fail(name, f"leaves out responses the critic flagged and revised: expected {len(want)} pairs, got "
                    f"{len(got)}", case)
    print(f"export_pairs passed {len(critics)} cases of {len(cases)} responses (exact)")


# ----------------------------------------------------------------------------------------------------------------
# exercise: the mini-project (DPO against the reward-model route, recomputed from the learner's policy)

PROJECT_KEYS = ("reference_gold", "dpo_gold", "dpo_kl", "dpo_gap_closed", "best_of_n", "best_of_n_gold",
                "best_of_n_kl", "best_of_n_gap_closed")
PROJECT_BON_SEED = 0        # best_of_n(..., seed=0): the seed the mini-project asks for
PROJECT_MIN_GAIN = 0.05     # the DPO policy must beat the reference's mean gold reward by this much (test split)
PROJECT_MAX_N = 16          # Best-of-N beyond this costs more than the notebook's budget
# the learner's function and the recomputation run on one torch thread on the same machine (the check sets it, the
# grader judges where it ran the notebook), so the figures agree exactly; the tolerances are for float noise only
TOL_GOLD = 0.005            # mean gold reward over the 452 test prompts
TOL_KL = 0.01               # nats, the sample KL
TOL_GAP = 0.005             # the share of the gap closed


def _number(out: dict, key: str, name: str) -> float:
    value = out[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(name, f"{key!r} is {value!r} ({type(value).__name__}); expected a Python number (float(...) of a "
                    f"tensor, or the figure itself)")
    if not math.isfinite(value):
        _fail(name, f"{key!r} is {value}; expected a finite number")
    return float(value)


_CACHE: dict = {}   # what the mini-project check recomputes, by the weights' content: tests and replays repeat it


def _weights(model: torch.nn.Module) -> str:
    """A digest of a model's weights (the cache's key: the same weights give the same samples)."""
    import hashlib
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cached(key: tuple, compute: Callable):
    if key not in _CACHE:
        if len(_CACHE) >= 32:
            _CACHE.clear()
        _CACHE[key] = compute()
    return _CACHE[key]


class _Recompute:
    """What the learner's numbers should be, computed from their policy as the course computes them: the test
    split, one sample per prompt at the protocol's seed, one torch thread; variants only when a number needs
    explaining."""

    def __init__(self, policy, reference):
        from ...evaluate import PROTOCOL_SEED, PROTOCOL_SPLIT, PROTOCOL_TEMPERATURE
        self.policy, self.reference = policy, reference
        self.keys = {"policy": _weights(policy), "reference": _weights(reference)}
        self.seed, self.temperature, self.split = PROTOCOL_SEED, PROTOCOL_TEMPERATURE, PROTOCOL_SPLIT
        self.reference_gold = self.gold("reference", PROTOCOL_SPLIT)
        self.dpo_gold = self.gold("policy", PROTOCOL_SPLIT)
        self.best = world.best_gold_reward(PROTOCOL_SPLIT)

    def samples(self, who: str, split: str):
        from ...evaluate import sample_responses
        model = getattr(self, who)
        return _cached(("samples", self.keys[who], split, self.seed, self.temperature),
                       lambda: sample_responses(model, list(world.prompts(split)), self.temperature, self.seed))

    def gold(self, who: str, split: str) -> float:
        from ...evaluate import score_samples
        return score_samples(self.samples(who, split)).gold_reward

    def kl(self, who: str = "policy") -> float:
        """KL(who || the other), from who's own samples on the test split (``who="reference"``: the reverse)."""
        from ...sampling import sequence_kl
        other = "reference" if who == "policy" else "policy"
        return _cached(("kl", self.keys[who], self.keys[other], self.split),
                       lambda: sequence_kl(getattr(self, who), getattr(self, other), self.samples(who, self.split),
                                           self.temperature))

    def best_of_n(self, n: int):
        from ...reward import best_of_n, load_reward_model
        return _cached(("best_of_n", self.keys["reference"], n, PROJECT_BON_SEED),
                       lambda: best_of_n(self.reference, load_reward_model(), list(world.prompts(self.split)),
                                         ns=(1, n), seed=PROJECT_BON_SEED))

    def gap(self, gold: float) -> float:
        return (gold - self.reference_gold) / (self.best - self.reference_gold)


def _check_gap(name: str, key: str, got: float, gold: float, r: _Recompute) -> None:
    want = r.gap(gold)
    if abs(got - want) <= TOL_GAP:
        return
    detail = f"expected {want:.4f} = ({gold:+.4f} - ({r.reference_gold:+.4f})) / ({r.best:+.4f} - " \
             f"({r.reference_gold:+.4f})), got {got:.4f}"
    variants = [
        ("is a percentage: report the share as a fraction (gap_closed returns one)", 100 * want, 100 * TOL_GAP),
        ("is the share of the gap still open, 1 - gap closed: gap closed is (R - R_ref) / (R_best - R_ref)",
         1 - want, TOL_GAP),
        ("divides by R_best alone: gap closed is (R - R_ref) / (R_best - R_ref)",
         (gold - r.reference_gold) / r.best, TOL_GAP),
        ("is the gain R - R_ref, not divided by the gap R_best - R_ref", gold - r.reference_gold, TOL_GAP),
        ("is R / R_best: gap closed measures the gain over the reference, (R - R_ref) / (R_best - R_ref)",
         gold / r.best, TOL_GAP),
    ]
    for mistake, value, tol in variants:
        if abs(got - value) <= tol:
            _fail(name, f"{key!r} {mistake}", detail)
    _fail(name, f"{key!r} does not match gap_closed(gold, reference gold, best possible gold) on the test split",
          detail)


def check_mini_project(mini_project: Callable) -> None:
    """Check ``mini_project(policy, reference) -> dict``: the learner trains ``policy`` (a copy of the reference) with
    DPO in place, and reports the figures of :data:`PROJECT_KEYS`; the check recomputes each from the policy they
    trained, with the course's protocol (the test split, the protocol's seed), and Best-of-N from the reference and
    the course reward model at the N they report (seed 0). Within ``TOL_GOLD`` for gold rewards, ``TOL_KL`` for the
    DPO policy's KL, ``TOL_GAP`` for the shares of the gap closed, 1e-6 for Best-of-N's KL; the DPO policy must
    beat the reference by ``PROJECT_MIN_GAIN``.

    Known mistakes it names: the policy not trained in place (or early stopping that kept the reference), the
    reference trained instead, the reference's figures reported as DPO's, figures from the validation split, the KL
    in the wrong direction, gap closed as a percentage, as the gap left, or divided by the wrong thing, the reward
    model's score (the proxy) instead of gold, Best-of-N's first sample (N = 1), Best-of-N's KL as log N or 0, a
    DPO run that does not improve on the reference, missing keys.
    """
    import copy

    from ...pretrain import load_reference
    name = "mini_project"
    with one_thread():   # as the notebook: the thread count changes float rounding, and so the samples
        pristine = load_reference().eval()
        reference = copy.deepcopy(pristine)
        policy = copy.deepcopy(pristine)
        out = _call(mini_project, name, policy, reference)
        if not isinstance(out, dict):
            _fail(name, f"returns a {type(out).__name__}; expected a dict with the keys {', '.join(PROJECT_KEYS)}")
        missing = [k for k in PROJECT_KEYS if k not in out]
        if missing:
            _fail(name, f"the result has no {missing[0]!r}; expected the keys {', '.join(PROJECT_KEYS)}")
        got = {k: _number(out, k, name) for k in PROJECT_KEYS}
        if any(not torch.equal(a, b) for a, b in zip(reference.state_dict().values(),
                                                     pristine.state_dict().values())):
            _fail(name, "the reference changed: train the policy you were given and leave the reference frozen (it "
                        "is what DPO's implicit reward and the KL are measured against)")
        if all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), pristine.state_dict().values())):
            _fail(name, "the policy you were given still has the reference's weights: train it in place "
                        "(train_dpo(..., policy=policy, reference=reference)), so that the check can score the "
                        "policy you report on; if you did, early stopping kept step 0 (DPOResult.best_step is 0): "
                        "train longer, or with a larger learning rate")
        policy.eval()
        r = _Recompute(policy, pristine)

        if abs(got["reference_gold"] - r.reference_gold) > TOL_GOLD:
            detail = f"expected {r.reference_gold:+.4f}, got {got['reference_gold']:+.4f}"
            if abs(got["reference_gold"] - r.gold("reference", "validation")) <= TOL_GOLD:
                _fail(name, "'reference_gold' is measured on the validation split: report on the test split, the "
                            "protocol every lesson uses (scorecard's default)", detail)
            _fail(name, "'reference_gold' does not match the reference's scorecard on the test split", detail)

        if abs(got["dpo_gold"] - r.dpo_gold) > TOL_GOLD:
            detail = f"expected {r.dpo_gold:+.4f} (the scorecard of the policy you trained), got {got['dpo_gold']:+.4f}"
            if abs(got["dpo_gold"] - r.reference_gold) <= TOL_GOLD:
                _fail(name, "'dpo_gold' is the reference's gold reward: score the policy you trained", detail)
            if abs(got["dpo_gold"] - r.gold("policy", "validation")) <= TOL_GOLD:
                _fail(name, "'dpo_gold' is measured on the validation split: report on the test split (validation "
                            "is for choosing settings, test for the figures you report)", detail)
            _fail(name, "'dpo_gold' does not match the scorecard of the policy you were given and trained (did you "
                        "score another copy, or score before training?)", detail)

        kl = r.kl()
        if abs(got["dpo_kl"] - kl) > TOL_KL:
            detail = f"expected {kl:.4f} nats, got {got['dpo_kl']:.4f}"
            if abs(got["dpo_kl"]) <= 1e-9:
                _fail(name, "'dpo_kl' is 0: the KL comes from scorecard(policy, reference), with the reference "
                            "given (without it the scorecard has no KL)", detail)
            if abs(got["dpo_kl"] - r.kl("reference")) <= TOL_KL:
                _fail(name, "'dpo_kl' is KL(reference || policy): the course reports KL(policy || reference), "
                            "from the policy's own samples", detail)
            _fail(name, "'dpo_kl' does not match KL(policy || reference) of the policy you trained", detail)

        _check_gap(name, "dpo_gap_closed", got["dpo_gap_closed"], r.dpo_gold, r)

        n = out["best_of_n"]
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= PROJECT_MAX_N:
            _fail(name, f"'best_of_n' is {n!r}; expected the N you used, an integer from 2 (N = 1 is the reference "
                        f"itself) to {PROJECT_MAX_N}")
        bon = r.best_of_n(n)
        if abs(got["best_of_n_gold"] - bon.gold[n]) > TOL_GOLD:
            detail = f"expected {bon.gold[n]:+.4f} (Best-of-{n} on the test split, seed {PROJECT_BON_SEED}), got " \
                     f"{got['best_of_n_gold']:+.4f}"
            if abs(got["best_of_n_gold"] - bon.proxy[n]) <= TOL_GOLD:
                _fail(name, "'best_of_n_gold' is the reward model's score of the kept responses (the proxy, "
                            "BestOfN.proxy): report their gold reward (BestOfN.gold)", detail)
            if abs(got["best_of_n_gold"] - bon.gold[1]) <= TOL_GOLD and abs(bon.gold[1] - bon.gold[n]) > TOL_GOLD:
                _fail(name, "'best_of_n_gold' is the gold reward of the first sample (N = 1): report the one at the "
                            "N you chose", detail)
            _fail(name, f"'best_of_n_gold' does not match Best-of-{n} with the course reward model on the test "
                        f"split (best_of_n(reference, reward_model, test_prompts, ns=({n},), seed="
                        f"{PROJECT_BON_SEED}))", detail)
        kl_bon = math.log(n) - (n - 1) / n
        if abs(got["best_of_n_kl"] - kl_bon) > 1e-6:
            detail = f"expected log {n} - {n - 1}/{n} = {kl_bon:.6f}, got {got['best_of_n_kl']:.6f}"
            if abs(got["best_of_n_kl"] - math.log(n)) <= 1e-6:
                _fail(name, f"'best_of_n_kl' is log N: the KL of Best-of-N to the reference is log N - (N - 1)/N",
                      detail)
            if abs(got["best_of_n_kl"]) <= 1e-9:
                _fail(name, "'best_of_n_kl' is 0: Best-of-N changes no weights, but it does change the distribution "
                            "of responses; its KL is log N - (N - 1)/N", detail)
            _fail(name, "'best_of_n_kl' is not log N - (N - 1)/N", detail)
        _check_gap(name, "best_of_n_gap_closed", got["best_of_n_gap_closed"], bon.gold[n], r)

        if r.dpo_gold - r.reference_gold < PROJECT_MIN_GAIN:
            _fail(name, f"the DPO policy does not improve on the reference: its mean gold reward is "
                        f"{r.dpo_gold:+.3f}, the reference's {r.reference_gold:+.3f} (at least "
                        f"+{PROJECT_MIN_GAIN} is asked): more steps, more pairs or a larger learning rate")
    print(f"mini_project passed: on the test split the reference scores {r.reference_gold:+.3f}; DPO "
          f"{r.dpo_gold:+.3f} at KL {kl:.2f} nats (gap closed {r.gap(r.dpo_gold):.2f}); Best-of-{n} with the reward "
          f"model {bon.gold[n]:+.3f} at KL {kl_bon:.2f} (gap closed {r.gap(bon.gold[n]):.2f}); every figure you "
          f"reported matches its recomputation")


# ----------------------------------------------------------------------------------------------------------------
# conceptual questions: reading an end-to-end run

QUESTIONS.update({
    "critic_blind_spot": Question(
        "which stage to fix first when the RLAIF policy still states wrong facts",
        answer="B",
        why_not=({
            "A": "DPO can only move probability the way its pairs point, and no pair prefers a right capital to a "
                 "wrong one: more steps or a smaller beta push harder on the same labels, facts untouched",
            "C": "the scorecard parses the test wording strictly and the same way for every policy; it counts the "
                 "reference's wrong capitals at the same rate, and the reference was never trained on these labels",
            "D": "the reference can already say the right capital (it is in the corpus); what is missing is a label "
                 "that prefers it, and a new reference would meet the same blind critic",
        },),
    ),
    "ai_label_agreement": Question(
        "what the AI labels' agreement and the critic's recall say",
        answer="A",
        why_not=({
            "B": "the annotator is noisy on purpose (tau = 0.5): even a perfect label gets an agreement below 1 from "
                 "it, and the AI labels agree with gold more often than the annotator's own labels do",
            "C": "recall counts the failures the critic revised, not the pairs it got wrong: a failure it cannot "
                 "see gets no pair at all, not a wrong one",
            "D": "the annotator's agreement is its probability of choosing the same response, below 1 for every "
                 "label because it is noisy; it does not mean those labels are wrong",
        },),
    ),
    "kl_far_above": Question(
        "a run whose KL is far above the others'",
        answer="C",
        why_not=({
            "A": "a larger KL is a larger move, not a better one: its gold reward is lower and its malformed rate "
                 "higher than the careful run's, so it moved away from the reference to worse text",
            "B": "one sample per prompt makes the KL estimate noisy, but not by a factor of several: both runs were "
                 "scored on the same prompts with the same seed, and the malformed rates tell the same story",
            "D": "more steps at the same settings move the policy further still: the KL grows, and the broken text "
                 "with it",
        },),
    ),
})


def check_critic_blind_spot(answer) -> None:
    """Exercise: which stage to fix first when the RLAIF policy still states wrong facts (one letter)."""
    check_choice("critic_blind_spot", answer)


def check_ai_label_agreement(answer) -> None:
    """Exercise: reading the AI labels' agreement with gold and the annotator, and the critic's recall (one letter)."""
    check_choice("ai_label_agreement", answer)


def check_kl_far_above(answer) -> None:
    """Exercise: reading a run whose KL is far above the others' (one letter)."""
    check_choice("kl_far_above", answer)
