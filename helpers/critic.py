"""A constitutional critic: AI feedback from written principles (Bai et al. 2022, "Constitutional AI: Harmlessness
from AI Feedback").

The critic reads a response, checks it against a short written constitution, writes a critique naming the principle
it breaks, and revises the response. Each (revised, original) pair is an AI-labelled preference (revised preferred):
RL from AI feedback (RLAIF) trains on those instead of human labels.

What the critic can and cannot see is explicit, because that is what decides how good its labels are:

- it recognises the *form* of a response (a refusal, "i do not know", an insult, step-by-step help with harm, a
  confident claim about the user's private life, filler around an answer, text that is no response at all);
- it reads what kind of prompt it answers (a sum, a fact question, a harmful request, a question about the user);
- it checks sums with a calculator, but it has **no table of facts**: a stated capital, animal sound or colour
  passes unchecked, right or wrong, and it cannot answer a fact question a response declined.

The gold reward and the simulated annotator know more; :func:`label_agreement` measures how far the critic's labels
agree with each. Used in lesson 06.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from . import world


@dataclass(frozen=True)
class Principle:
    """One written rule of the constitution."""
    name: str
    rule: str          # the principle as a person would write it
    revision: str      # what a response that breaks it should do instead


CONSTITUTION: tuple[Principle, ...] = (
    Principle("harmless", "Never help anyone hurt people or damage property.",
              "decline the request politely"),
    Principle("respectful", "Never insult the person you are talking to.",
              "answer politely, or say plainly that you do not know"),
    Principle("honest", "Do not state as fact what you cannot know or what is false.",
              "say that you do not know, or give the right answer"),
    Principle("helpful", "Answer a question that has an answer instead of declining it.",
              "give the answer"),
    Principle("concise", "Say what is needed without filler.",
              "drop the filler around the answer"),
    Principle("well-formed", "Write one clear response.",
              "write one clear response"),
)
PRINCIPLES = {p.name: p for p in CONSTITUTION}


@dataclass(frozen=True)
class Critique:
    """What the critic found in one response, and its revision (None when it found nothing it can fix)."""
    prompt: world.Prompt
    response: str
    broken: tuple[str, ...]    # names of the principles the response breaks, in CONSTITUTION's order
    text: str                  # the critique, written out
    revision: str | None       # the revised response, or None


def _form(prompt: world.Prompt, text: str) -> str:
    """The response's form as the critic sees it: the world's behaviours, except that a stated answer to a fact
    question is just "answer" (no fact table), while a sum is checked by the calculator ("correct" / "wrong")."""
    form = world.parse(prompt, text)
    if form in ("correct", "wrong") and prompt.kind != "arithmetic":
        return "answer"
    return form


def _calculator(prompt: world.Prompt) -> str:
    """The sum an arithmetic prompt asks for, computed from the prompt's numbers."""
    a, b = prompt.instance.split("+")
    return str(int(a) + int(b))


def _best_response(prompt: world.Prompt, variant: int) -> str | None:
    """What the critic writes instead: a refusal to harm, "i do not know" about the user, the calculated sum;
    for a fact question it does not know the answer, so it can only say so."""
    if prompt.category == "harmful":
        return world.response(prompt, "refusal", variant)
    if prompt.category == "unanswerable":
        return world.response(prompt, "idk", variant)
    if prompt.kind == "arithmetic":
        assert _calculator(prompt) == prompt.answer, "the calculator and the world disagree"
        return world.response(prompt, "correct", variant)
    return world.response(prompt, "idk", variant)


def critique(prompt: world.Prompt, text: str, variant: int = 0) -> Critique:
    """Check ``text`` against :data:`CONSTITUTION`; critique it and revise it.

    ``variant`` picks the revision's wording (any integer). A response with nothing wrong that the critic can see
    comes back with ``broken == ()`` and no revision; so does one whose fix the critic does not know (a declined fact
    question: it cannot supply the fact).
    """
    form = _form(prompt, text)
    broken: list[str] = []
    if form == "harmful":
        broken.append("harmless")
    if form == "insult":
        broken.append("respectful")
    if form == "fabrication" or form == "wrong":
        broken.append("honest")
    if prompt.category == "answerable" and form in ("refusal", "idk") and prompt.kind == "arithmetic":
        broken.append("helpful")
    if prompt.category == "unanswerable" and form == "refusal":
        broken.append("helpful")   # a harmless question about the user deserves an honest "i do not know"
    if form == "verbose":
        broken.append("concise")
    if form == world.MALFORMED:
        broken.append("well-formed")
    if not broken:
        return Critique(prompt, text, (), "The response follows every principle the critic can check.", None)
    if form == "verbose":
        # keep what the padding wraps, if that is itself fine; else the best response
        inner = response_inside_padding(text)
        revision = inner if inner is not None and not critique(prompt, inner).broken else _best_response(prompt, variant)
    else:
        revision = _best_response(prompt, variant)
    if revision is not None and critique(prompt, revision).broken:
        revision = None   # never offer a revision that breaks a principle itself
    lines = [f"It breaks '{PRINCIPLES[name].rule}' ({name}); it should {PRINCIPLES[name].revision}."
             for name in broken]
    return Critique(prompt, text, tuple(broken), " ".join(lines), revision)


def response_inside_padding(text: str) -> str | None:
    """The response a verbose one wraps in filler, or None if ``text`` has no filler on both sides."""
    inner, padded = world._strip_padding(text)
    return inner if padded else None


def ai_pairs(prompts: list[world.Prompt], texts: list[str], seed: int = 0) -> list[world.PreferencePair]:
    """AI-labelled preferences: for every response the critic can improve, (revision preferred to the response).

    Responses with nothing to fix, or with no revision the critic can write, give no pair.
    """
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} responses")
    rng = random.Random(seed)
    pairs = []
    for p, t in zip(prompts, texts):
        c = critique(p, t, rng.randrange(1000))
        if c.revision is not None and c.revision != t:
            pairs.append(world.PreferencePair(p.text, c.revision, t, source="ai-critic",
                                              annotator="constitution:" + "+".join(c.broken)))
    return pairs


def sampled_ai_pairs(policy, prompts: list[world.Prompt], samples_per_prompt: int = 6,
                     seed: int = 0) -> tuple[list[world.PreferencePair], float]:
    """RLAIF's data: ``samples_per_prompt`` responses of ``policy`` to every prompt (draw j uses seed ``seed + j``),
    critiqued and revised. Returns the AI pairs and the critic's *recall*: the share of sampled responses that fall
    short of the best gold reward for their prompt which the critic revised (what it is blind to, it cannot fix)."""
    from .sampling import sample_responses
    shown, texts = [], []
    for j in range(samples_per_prompt):
        samples = sample_responses(policy, prompts, 1.0, seed + j)
        shown += samples.prompts
        texts += samples.texts
    pairs = ai_pairs(shown, texts, seed)
    revised = {(p.prompt, p.rejected) for p in pairs}
    best = {p.text: max(world.gold_reward(p, y) for y in world.candidates(p).values()) for p in prompts}
    short = [(p, t) for p, t in zip(shown, texts) if world.gold_reward(p, t) < best[p.text] - 1e-9]
    recall = sum((p.text, t) in revised for p, t in short) / max(1, len(short))
    return pairs, recall


@dataclass(frozen=True)
class Agreement:
    """How AI labels compare with the world's judges, over ``n`` pairs."""
    gold: float            # share of pairs whose chosen response has the higher gold reward (ties count half)
    annotator: float       # mean probability that the simulated annotator picks the same response
    n: int


def label_agreement(pairs: list[world.PreferencePair], annotator: world.Annotator) -> Agreement:
    """Agreement of preference pairs (any source) with the gold reward and with ``annotator``'s choices."""
    if not pairs:
        raise ValueError("no pairs to compare")
    gold = ann = 0.0
    for pair in pairs:
        prompt = world.find_prompt(pair.prompt)
        gc, gr = world.gold_reward(prompt, pair.chosen), world.gold_reward(prompt, pair.rejected)
        gold += 1.0 if gc > gr else 0.5 if gc == gr else 0.0
        ann += 0.5 * (annotator.prob_left(prompt, pair.chosen, pair.rejected)
                      + 1.0 - annotator.prob_left(prompt, pair.rejected, pair.chosen))
    return Agreement(gold / len(pairs), ann / len(pairs), len(pairs))
