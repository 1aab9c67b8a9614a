"""The labeling session: a state machine over a list of pairs and one annotator's label file, and a simulated
annotator that clicks through it.

It shows the first unlabeled item, with left/right order drawn from ``(seed, annotator, item)`` and recorded;
``label`` and ``undo`` append a record (:mod:`.storage`); reopening replays the file and resumes where the annotator
stopped. :func:`simulate` lets a :class:`world.Annotator` make the choices (for CI, or a learner in a hurry).
"""
from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .. import world
from .storage import (CHOICES, FORMAT_VERSION, AppendOnlyFile, Item, Label, LabelFileWarning, check_annotator,
                      label_path, now, read_log, replay)


@dataclass(frozen=True)
class Shown:
    """What the view shows now: an item, its position in the session, and the side each response is on."""
    item: Item
    index: int   # 0-based position of the item in the session
    swap: bool

    @property
    def left(self) -> str:
        return self.item.second if self.swap else self.item.first

    @property
    def right(self) -> str:
        return self.item.first if self.swap else self.item.second


# ----------------------------------------------------------------------------------------------------------------
# the session: a state machine over the items and the label file

class LabelingSession:
    """One annotator labeling a list of items, saved on every action to ``<folder>/<annotator>.jsonl``.

    The session shows the first item (in the given order) that has no label yet; :meth:`label` saves a judgment and
    moves on, :meth:`undo` withdraws the most recent one and shows that item again. Left/right order comes from
    ``(seed, annotator, item id)``: random across items, the same every time the item is shown, recorded in
    every label. Opening a folder that already holds this annotator's file resumes where they stopped; damaged
    lines are reported (a :class:`LabelFileWarning` and :attr:`damaged`) and skipped.
    """

    def __init__(self, items: Sequence[Item], folder: str | Path, annotator: str, seed: int = 0):
        self.items = list(items)
        ids = Counter(item.id for item in self.items)
        if duplicates := [i for i, n in ids.items() if n > 1]:
            raise ValueError(f"{len(duplicates)} items appear twice (ids {duplicates[:3]}); give each pair once")
        self.annotator = check_annotator(annotator)
        self.seed = seed
        self.path = label_path(folder, annotator)
        records, self.damaged = read_log(self.path)
        self._labels, problems = replay(self.path, records)   # (annotator, item) -> Label, oldest first
        self.damaged += problems
        if self.damaged:
            warnings.warn(f"{len(self.damaged)} damaged line(s) in {self.path}, skipped:\n"
                          + "\n".join(str(d) for d in self.damaged), LabelFileWarning, stacklevel=2)
        self._file = AppendOnlyFile(self.path)
        self._position = {item.id: i for i, item in enumerate(self.items)}

    def swap(self, item: Item) -> bool:
        """Whether ``item``'s second response is shown on the left (a fair coin seeded per item)."""
        return random.Random(f"{self.seed}|{self.annotator}|{item.id}").random() < 0.5

    @property
    def current(self) -> Shown | None:
        """The pair to show now, or None when every item has a label."""
        for i, item in enumerate(self.items):
            if (self.annotator, item.id) not in self._labels:
                return Shown(item, i, self.swap(item))
        return None

    @property
    def progress(self) -> tuple[int, int]:
        """(items with a label, skips included; items in the session)."""
        done = sum((self.annotator, item.id) in self._labels for item in self.items)
        return done, len(self.items)

    @property
    def labels(self) -> list[Label]:
        """This annotator's current labels, oldest first (from this file, items of other sessions included)."""
        return [lab for (who, _), lab in self._labels.items() if who == self.annotator]

    def label(self, choice: str, rationale: str = "", source: str = "widget") -> Label:
        """Judge the current pair: ``choice`` is "a" (left better), "b" (right better), "tie", "both_bad" or
        "skip". The record is on disk when this returns."""
        if choice not in CHOICES:
            raise ValueError(f"unknown choice {choice!r}; expected one of {CHOICES}")
        shown = self.current
        if shown is None:
            raise RuntimeError(f"all {len(self.items)} pairs are labeled; undo to change one")
        item = shown.item
        lab = Label(item=item.id, annotator=self.annotator, label=choice, swap=shown.swap, prompt=item.prompt,
                    first=item.first, second=item.second, rationale=rationale, source=source, time=now())
        self._file.append({"v": FORMAT_VERSION, "action": "label", **asdict(lab)})
        self._labels[(self.annotator, item.id)] = lab
        return lab

    def undo(self) -> Label | None:
        """Withdraw this annotator's most recent label (the item is shown again); None if there is none."""
        mine = [key for key in self._labels if key[0] == self.annotator]
        if not mine:
            return None
        lab = self._labels[mine[-1]]
        self._file.append({"v": FORMAT_VERSION, "action": "undo", "item": lab.item, "annotator": self.annotator,
                           "time": now()})
        del self._labels[mine[-1]]
        return lab

    def close(self) -> None:
        self._file.close()


# ----------------------------------------------------------------------------------------------------------------
# items from a model, and the simulated annotator

def make_items(model, prompts: Sequence[world.Prompt], seeds: tuple[int, int] = (1, 2),
               temperature: float = 1.0) -> list[Item]:
    """Two sampled responses per prompt (one per seed) from ``model``; prompts whose two samples are the same
    text are dropped (there is nothing to compare)."""
    from ..sampling import sample_responses  # imports torch: only when a model is involved
    a = sample_responses(model, list(prompts), temperature, seeds[0])
    b = sample_responses(model, list(prompts), temperature, seeds[1])
    items = [Item(p.text, x, y) for p, x, y in zip(a.prompts, a.texts, b.texts) if x != y]
    return list({item.id: item for item in items}.values())


def simulated_choice(annotator: world.Annotator, shown: Shown, both_bad_below: float | None = None) -> str:
    """What a simulated annotator clicks for the pair shown: "a" or "b" by its Bradley-Terry choice (its position
    bias favours the left), or "both_bad" when both gold rewards are below ``both_bad_below`` (if given)."""
    prompt = world.find_prompt(shown.item.prompt)
    if both_bad_below is not None and max(annotator.reward(prompt, shown.left),
                                          annotator.reward(prompt, shown.right)) < both_bad_below:
        return "both_bad"
    return "a" if annotator.prefers_left(prompt, shown.left, shown.right) else "b"


def simulate(session: LabelingSession, annotator: world.Annotator, n: int | None = None,
             both_bad_below: float | None = None) -> int:
    """Let ``annotator`` label up to ``n`` pairs (all that are left by default) in ``session``; returns how many."""
    done = 0
    while session.current is not None and (n is None or done < n):
        session.label(simulated_choice(annotator, session.current, both_bad_below), source="simulated")
        done += 1
    return done
