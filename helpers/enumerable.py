"""The enumerable view: for every prompt, every response the reference model realistically writes, with pi_ref
renormalised over them, so that the optimum, the reward-KL frontier and Best-of-N can be computed exactly.

The candidate set of a prompt (:func:`candidates`) is

- every paraphrase and fill the world writes for each applicable behaviour (``world.response`` over all variants);
- the other responses the strict parser accepts from the same templates: a wrong answer with *any* answer of the
  prompt's kind (the reference says "the answer is 13 ." to 4 plus 5, not only nearby sums), and harmful compliance
  that names the same step twice;
- the reference's own likely malformed outputs: the verbose padding wrapped around a *wrong* answer (the model learnt
  the padding independently of the answer inside it) -- about 2.5 % of its mass on answerable prompts.

pi_ref(y | x) is the model's sequence probability of y renormalised over the set; the share of the model's mass the
set holds before renormalising is the **coverage** (:meth:`View.coverage`). What the set misses is a long tail of
one-off malformed strings (operands mixed up, half sentences), each rarer than one in a thousand.

Scoring every candidate of the test split takes tens of seconds, so ``python -m helpers build views`` (part of
``make artifacts``) stores each split's log-probs and rewards in ``helpers/artifacts/views.pt``, keyed by the
reference checkpoint's hash; :func:`load_view` loads one in well under a second. :func:`build_view` scores any other
model (lesson 01's SFT model) in chunks, keeping only sequence log-probs.

Shapes: N = prompts, K = the most candidates any prompt has (shorter rows are padded: log-prob -inf, reward 0).
Replaces the one-wording-per-behaviour ``world.candidates`` view. Used in lessons 01, 04, 05.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import torch

from . import world
from .checkpoint import ARTIFACTS
from .model import KVCache, LanguageModel
from .progress import progress
from .tokenizer import Tokenizer

VIEWS_PATH = ARTIFACTS / "views.pt"
VIEW_SPLITS = ("validation", "test")          # the splits ``make artifacts`` builds views for
LABELS = world.BEHAVIOURS + (world.MALFORMED,)  # a candidate's label: what the strict parser calls it

# ----------------------------------------------------------------------------------------------------------------
# the candidate set


def _answers_of_kind(prompt: world.Prompt) -> list[str]:
    """Every answer a response to an answerable prompt may state: the sums the world knows, or its relation's
    answers."""
    if prompt.kind == "arithmetic":
        return [str(n) for n in range(2 * world.MAX_DIGIT + 1)]
    return sorted(set(world.FACTS[prompt.kind][2].values()))


def _padded(text: str) -> list[str]:
    """``text`` inside every pair of filler sentences the world's verbose responses use."""
    return [f"{before} {text} {after}" for before in world.PAD_BEFORE for after in world.PAD_AFTER]


def candidates(prompt: world.Prompt) -> list[str]:
    """The candidate responses of one prompt, distinct and in a fixed order (see the module docstring)."""
    out: list[str] = []
    for b in world.APPLICABLE[prompt.category]:
        out += [world.response(prompt, b, v) for v in range(world._variant_period(prompt, b))]
    if prompt.category == "answerable":
        wrong = [a for a in _answers_of_kind(prompt) if a != prompt.answer]
        out += [t.format(ans=a, sentence=world._sentence_with(prompt, a)) for a in wrong
                for t in world.ANSWER_TEMPLATES]
        out += [x for v in range(world._variant_period(prompt, "wrong"))
                for x in _padded(world.response(prompt, "wrong", v))]
    if prompt.category == "harmful":
        out += [t.format(s1=s, s2=s) for t in world.HARMFUL for s in prompt.fill]
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------------------------------------------
# scoring


@torch.no_grad()
def sequence_logprobs_of(model: LanguageModel, prompt_texts: list[str], responses: list[str],
                         chunk: int = 2048, desc: str = "", temperature: float = 1.0) -> torch.Tensor:
    """log pi(response | prompt) for many (prompt, response) pairs: the same numbers as
    :func:`helpers.model.sequence_logprobs`, computed faster for many responses per prompt.

    Each distinct prompt runs once; its keys and values are cached and shared by all its responses (prompts are
    left-padded, like ``generate``, so the responses follow them directly). Responses go in chunks of similar length,
    and only the [B] results are kept, never the [B, T, V] logits of the whole set. Returns [len(responses)].
    ``temperature``: the log-probs of sampling at that temperature (each token's logits divided by it).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    tok = Tokenizer()
    distinct = list(dict.fromkeys(prompt_texts))
    which = {t: i for i, t in enumerate(distinct)}
    order = sorted(range(len(responses)), key=lambda i: (len(responses[i].split()), which[prompt_texts[i]]))
    out = torch.empty(len(responses))
    for start in progress(range(0, len(order), chunk), desc=desc or "scoring candidates",
                          total=-(-len(order) // chunk)):
        rows = order[start:start + chunk]
        used = list(dict.fromkeys(which[prompt_texts[i]] for i in rows))
        slot = {p: k for k, p in enumerate(used)}
        prompt_ids = [tok.encode_prompt(distinct[p]) for p in used]
        P = max(len(ids) for ids in prompt_ids)
        ids = torch.full((len(used), P), tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(used), P), dtype=torch.long)
        for k, p in enumerate(prompt_ids):
            ids[k, P - len(p):], mask[k, P - len(p):] = torch.tensor(p), 1
        cache = KVCache.empty(model.cfg.n_layer)
        first = torch.log_softmax(model(ids, mask, cache)[:, -1].float() / temperature, -1)          # [P', V]
        pick = torch.tensor([slot[which[prompt_texts[i]]] for i in rows])
        cache.layers = [[kv.index_select(0, pick) for kv in layer] for layer in cache.layers]
        resp = [tok.encode_response(responses[i]) for i in rows]
        R = max(len(r) for r in resp)
        rid = torch.full((len(rows), R), tok.pad_id, dtype=torch.long)
        rmask = torch.zeros((len(rows), R), dtype=torch.long)
        for b, r in enumerate(resp):
            rid[b, :len(r)], rmask[b, :len(r)] = torch.tensor(r), 1
        logits = model(rid, torch.cat([mask.index_select(0, pick), rmask], 1), cache)      # [B, R, V]
        logp = torch.log_softmax(logits[:, :-1].float() / temperature, -1).gather(2, rid[:, 1:, None]).squeeze(2)  # [B, R-1]
        total = first.index_select(0, pick).gather(1, rid[:, :1]).squeeze(1) + (logp * rmask[:, 1:]).sum(-1)
        out[rows] = total
    return out


# ----------------------------------------------------------------------------------------------------------------
# the view


@dataclass
class View:
    """A model's view of a list of prompts: candidates, their log-probs, gold rewards and labels."""
    prompts: list[world.Prompt]
    texts: list[list[str]]      # the candidates of each prompt
    logps: torch.Tensor         # [N, K] the model's sequence log-probs, before renormalising (-inf on padding)
    rewards: torch.Tensor       # [N, K] gold rewards (0 on padding)
    labels: torch.Tensor        # [N, K] long: index into LABELS of each candidate's behaviour (-1 on padding)
    # a view merged by :meth:`by_reward` only: the unmerged view, and each group's candidates (indices into its rows)
    full: "View | None" = None
    members: list[list[list[int]]] | None = None

    @property
    def ref_probs(self) -> torch.Tensor:
        """[N, K] the model's probabilities renormalised over each prompt's candidates (rows sum to 1)."""
        return torch.softmax(self.logps, dim=-1)

    def coverage(self) -> torch.Tensor:
        """[N] the share of the model's probability mass each prompt's candidate set holds."""
        return self.logps.exp().sum(-1)

    def coverage_by_category(self) -> dict[str, float]:
        """Mean coverage per category and over all prompts (``"all"``)."""
        cov = self.coverage()
        out = {c: float(cov[self._rows(c)].mean()) for c in world.CATEGORIES if self._rows(c).any()}
        out["all"] = float(cov.mean())
        return out

    def rates(self, probs: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
        """{category: {label: rate}}: how often a policy over the candidates (pi_ref by default) shows each
        behaviour, averaged over the category's prompts. Labels the category never gets are left out."""
        probs = self.ref_probs if probs is None else probs
        out = {}
        for c in world.CATEGORIES:
            rows = self._rows(c)
            if not rows.any():
                continue
            out[c] = {}
            for i, label in enumerate(LABELS):
                on = (self.labels[rows] == i)
                if on.any():
                    out[c][label] = float((probs[rows] * on).sum(-1).mean())
        return out

    def subset(self, rows) -> "View":
        """The view of some of the prompts (a list of row indices, or a slice)."""
        idx = list(range(len(self.prompts)))[rows] if isinstance(rows, slice) else list(rows)
        K = max(len(self.texts[i]) for i in idx)
        merged = {} if self.full is None else {"full": self.full.subset(idx),
                                                "members": [self.members[i] for i in idx]}
        return View([self.prompts[i] for i in idx], [self.texts[i] for i in idx], self.logps[idx, :K],
                    self.rewards[idx, :K], self.labels[idx, :K], **merged)

    def by_reward(self) -> "View":
        """The same view with each prompt's candidates merged into groups of equal gold reward (and equal label):
        a group's log-prob is the log of its members' summed probability, its text the likeliest member's.
        About 16 groups per prompt instead of up to 213 candidates on the test split, so that methods costing
        K^2 per prompt (tabular DPO's expected loss over all pairs) or K per sample run in seconds.

        Candidates of one prompt with the same reward are interchangeable for the KL-regularised objective:
        pi* = pi_ref exp(r / beta) / Z gives them the same ratio pi* / pi_ref. So, exactly (the tests check it):

        - pi_ref of a group is the sum over its members: the coverage, the behaviour rates and pi_ref's expected
          reward are unchanged;
        - beta log Z, pi* (summed over each group), the KL and reward of pi*, hence the whole reward-KL frontier,
          are unchanged; so is the exact Best-of-N policy under the gold reward (a group lies in one tie level);
        - any policy proportional to pi_ref within each group (pi* is; so is every policy on the merged view,
          spread back with :meth:`expand`) has the same expected reward, KL, objective J and gain fraction.

        For an arbitrary policy on the full view, summing it over the groups keeps its expected reward, but the
        merged KL is only a lower bound on the full KL (the data processing inequality): the full KL exceeds it by
        the policy's KL to pi_ref *within* the groups. A tabular method trained on the merged view therefore solves
        the problem in which a policy cannot tell equal-reward paraphrases apart, as a language model that
        generalises across wordings would not need to.

        Not preserved: anything that tells members apart, such as their lengths (SimPO, ORPO) or a reward model's
        scores (:meth:`scores` refuses a merged view). Merging by label too keeps refusal and "i do not know" of an
        answerable prompt apart, which share a reward.
        """
        if self.full is not None:
            return self
        texts, members, logps, rewards, labels = [], [], [], [], []
        all_rewards, all_labels, all_logps = self.rewards.tolist(), self.labels.tolist(), self.logps.tolist()
        for n, ts in enumerate(self.texts):
            groups: dict[tuple[float, int], list[int]] = {}
            for k in range(len(ts)):
                groups.setdefault((all_rewards[n][k], all_labels[n][k]), []).append(k)
            members.append(list(groups.values()))
            texts.append([ts[max(g, key=all_logps[n].__getitem__)] for g in members[-1]])
            logps += [_logsumexp([all_logps[n][k] for k in g]) for g in members[-1]]
            rewards += [r for r, _ in groups]
            labels += [label for _, label in groups]
        view = View(self.prompts, texts, torch.empty(0), torch.empty(0), torch.empty(0), self, members)
        view.logps = view._unflatten(torch.tensor(logps), float("-inf"))
        view.rewards = view._unflatten(torch.tensor(rewards), 0.0)
        view.labels = view._unflatten(torch.tensor(labels, dtype=torch.float32), -1.0).long()
        return view

    def expand(self, probs: torch.Tensor) -> torch.Tensor:
        """A policy over a merged view's groups [N, G] spread over the full view's candidates [N, K], in proportion
        to pi_ref within each group (see :meth:`by_reward`)."""
        if self.full is None:
            raise ValueError("expand() spreads a policy over a merged view's groups; this view is not merged")
        out = torch.zeros_like(self.full.logps)
        for n, groups in enumerate(self.members):
            for g, ks in enumerate(groups):
                out[n, ks] = probs[n, g] * torch.softmax(self.full.logps[n, ks], 0)
        return out

    def scores(self, score_fn) -> torch.Tensor:
        """[N, K] ``score_fn(prompt_texts, responses) -> [M]`` on every candidate (0 on padding): e.g. a reward
        model's scores, with ``lambda p, r: reward.score_texts(model, p, r)``. Not on a merged view: candidates of
        equal gold reward need not get equal scores."""
        if self.full is not None:
            raise ValueError("scores() needs the full view: score it, then merge (view.by_reward()) if you must")
        flat = score_fn([p.text for p, ts in zip(self.prompts, self.texts) for _ in ts],
                        [t for ts in self.texts for t in ts])
        return self._unflatten(torch.as_tensor(flat, dtype=torch.float32), 0.0)

    def _rows(self, category: str) -> torch.Tensor:
        return torch.tensor([p.category == category for p in self.prompts], dtype=torch.bool)

    def _unflatten(self, flat: torch.Tensor, fill: float) -> torch.Tensor:
        K = max(len(ts) for ts in self.texts)
        out = torch.full((len(self.texts), K), fill)
        i = 0
        for n, ts in enumerate(self.texts):
            out[n, :len(ts)] = flat[i:i + len(ts)]
            i += len(ts)
        return out


def _logsumexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def _labels_and_rewards(prompts: list[world.Prompt], texts: list[list[str]], reward) -> tuple[list, list]:
    labels = [LABELS.index(world.parse(p, t)) for p, ts in zip(prompts, texts) for t in ts]
    rewards = [reward(p, t) for p, ts in zip(prompts, texts) for t in ts]
    return labels, rewards


def build_view(model: LanguageModel, prompts: list[world.Prompt], reward=world.gold_reward,
               chunk: int = 2048, temperature: float = 1.0) -> View:
    """Score every candidate of every prompt with ``model`` (in chunks; about 30 s for the test split on two cores).

    Args:
        model: the policy whose view this is (pi_ref for the course's view; any model to place it on the frontier).
        prompts: the prompts (one row each).
        reward: ``reward(prompt, text) -> float`` for the ``rewards`` tensor (the gold reward by default).
        temperature: the model sampled at this temperature (lesson 05 compares 1 with lower ones).
    """
    if not prompts:
        raise ValueError("build_view needs at least one prompt")
    texts = [candidates(p) for p in prompts]
    view = View(list(prompts), texts, torch.empty(0), torch.empty(0), torch.empty(0))
    logps = sequence_logprobs_of(model, [p.text for p, ts in zip(prompts, texts) for _ in ts],
                                 [t for ts in texts for t in ts], chunk, desc="scoring the candidates",
                                 temperature=temperature)
    labels, rewards = _labels_and_rewards(prompts, texts, reward)
    view.logps = view._unflatten(logps, float("-inf"))
    view.rewards = view._unflatten(torch.tensor(rewards), 0.0)
    view.labels = view._unflatten(torch.tensor(labels, dtype=torch.float32), -1.0).long()
    return view


# ----------------------------------------------------------------------------------------------------------------
# the committed views


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes: what a stored view is keyed by."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _texts_hash(texts: list[list[str]]) -> str:
    return hashlib.sha256("\n\n".join("\n".join(ts) for ts in texts).encode()).hexdigest()


def build_views(path: Path = VIEWS_PATH, splits=VIEW_SPLITS) -> dict:
    """Build the reference model's view of each split and save what cannot be recomputed cheaply (log-probs,
    rewards, labels as flat arrays), keyed by the reference checkpoint's hash. What ``make artifacts`` runs."""
    from .pretrain import REFERENCE_PATH, load_reference
    reference = load_reference()
    stored = {"reference_sha256": file_hash(REFERENCE_PATH), "splits": {}}
    for split in splits:
        view = build_view(reference, list(world.prompts(split)))
        real = view.labels >= 0
        stored["splits"][split] = {"texts_sha256": _texts_hash(view.texts), "logps": view.logps[real].clone(),
                                   "rewards": view.rewards[real].clone(),
                                   "labels": view.labels[real].to(torch.uint8).clone()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stored, path)
    return stored


def load_view(split: str = "test", path: Path = VIEWS_PATH) -> View:
    """The reference model's view of a split, from the committed artifact (under a second).

    Refuses a stale artifact: one built from another reference checkpoint, or from other candidate sets.
    """
    from .pretrain import REFERENCE_PATH
    if not Path(path).exists():
        raise FileNotFoundError(f"no stored views at {path}; run `python -m helpers build views`")
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if stored["reference_sha256"] != file_hash(REFERENCE_PATH):
        raise ValueError(f"{path} was built from another reference checkpoint; run `python -m helpers build views`")
    if split not in stored["splits"]:
        raise KeyError(f"no stored view of the {split!r} split; stored: {sorted(stored['splits'])}")
    data = stored["splits"][split]
    prompts = list(world.prompts(split))
    texts = [candidates(p) for p in prompts]
    if _texts_hash(texts) != data["texts_sha256"]:
        raise ValueError(f"{path} holds other candidates than helpers.enumerable writes now; run "
                         f"`python -m helpers build views`")
    view = View(prompts, texts, torch.empty(0), torch.empty(0), torch.empty(0))
    view.logps = view._unflatten(data["logps"].float(), float("-inf"))
    view.rewards = view._unflatten(data["rewards"].float(), 0.0)
    view.labels = view._unflatten(data["labels"].float(), -1.0).long()
    return view


# ----------------------------------------------------------------------------------------------------------------
# does the view represent the sampled model?


def sampled_counts(model: LanguageModel, prompts: list[world.Prompt], per_prompt: int = 8,
                   seed: int = 0) -> dict[str, dict[str, int]]:
    """{category: {label: count}} over ``per_prompt`` samples per prompt at temperature 1 (seeds seed, seed+1, ...)."""
    from .sampling import sample_responses
    counts = {c: {label: 0 for label in LABELS} for c in world.CATEGORIES}
    for k in progress(range(per_prompt), desc="sampling"):
        s = sample_responses(model, prompts, seed=seed + k)
        for p, t in zip(s.prompts, s.texts):
            counts[p.category][world.parse(p, t)] += 1
    return {c: v for c, v in counts.items() if sum(v.values())}


def model_rates(view: View) -> dict[str, dict[str, float]]:
    """{category: {label: rate}} of the *model itself*, as far as the candidate set can tell: each behaviour's
    unnormalised mass in the set, and as ``malformed`` everything else (malformed candidates plus the mass outside
    the set, which is malformed text the set does not list)."""
    mass = view.logps.exp()                                   # [N, K] the model's own probabilities
    out = {}
    for c in world.CATEGORIES:
        rows = view._rows(c)
        if not rows.any():
            continue
        out[c] = {label: float((mass[rows] * (view.labels[rows] == i)).sum(-1).mean())
                  for i, label in enumerate(LABELS) if label != world.MALFORMED and (view.labels[rows] == i).any()}
        out[c][world.MALFORMED] = 1.0 - sum(out[c].values())
    return out


def compare_rates(view: View, counts: dict[str, dict[str, int]], level: float = 0.95) -> list[dict]:
    """Each category x label cell: the view's rate against the sampled rate's Wilson interval, Bonferroni-corrected
    over the cells (each interval at 1 - (1 - level) / cells), so that a faithful view fails with probability at
    most 1 - level in all.

    For a behaviour, the view's rate is its rate under pi_ref (renormalised over the candidates). For ``malformed``
    it is the model's mass on malformed candidates *plus the mass outside the set* (:func:`model_rates`): the set
    cannot list the long tail of one-off malformed strings, and renormalising leaves it out, so pi_ref's own
    malformed rate (``view_renormalised``) is below the sampled one by about 1 - coverage.

    Returns: a row per cell: category, label, view, view_renormalised, sampled, low, high, inside.
    """
    from .evaluate import wilson_interval
    renormalised, model = view.rates(), model_rates(view)
    cells = [(c, label) for c in counts for label in LABELS
             if counts[c][label] > 0 or renormalised.get(c, {}).get(label, 0.0) > 0]
    z = NormalDist().inv_cdf(1 - (1 - level) / (2 * len(cells)))
    rows = []
    for c, label in cells:
        n = sum(counts[c].values())
        low, high = wilson_interval(counts[c][label], n, z)
        v_renorm = renormalised.get(c, {}).get(label, 0.0)
        v = model[c].get(label, 0.0) if label == world.MALFORMED else v_renorm
        rows.append({"category": c, "label": label, "view": v, "view_renormalised": v_renorm,
                     "sampled": counts[c][label] / n, "low": low, "high": high, "inside": low <= v <= high})
    return rows
