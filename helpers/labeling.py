"""Preference labeling: a pure-Python session behind a thin ipywidgets view, and the road from labels to training.

Top to bottom:

- :class:`Item`: one pair to judge (a prompt and two responses), with a stable id made from its text.
- The label file: append-only JSONL, one file per annotator (``<folder>/<annotator>.jsonl``), one record per
  action. Each record is written with a single ``os.write`` and ``os.fsync``'d before the next pair shows, so a
  crash (even ``kill -9`` of the kernel) loses no label the widget said was saved. Reading reports every damaged
  line with its line number and skips it; a damaged file is never fatal.
- :class:`LabelingSession`: the state machine. It shows the first unlabeled item, with left/right order drawn from
  ``(seed, annotator, item)`` and recorded; ``label`` and ``undo`` append a record; reopening replays the file and
  resumes where the annotator stopped.
- :func:`simulate`: a :class:`world.Annotator` makes the choices in the same session (for CI, or a learner in a
  hurry).
- :class:`LabelingWidget`: the view. Text is always shown escaped (``html.escape`` into an ``HTML`` widget, never
  a ``Label``, which would typeset ``$...$`` as maths), so a response is text, never markup or script.
- From labels to training: :func:`read_labels` merges every annotator's file, :func:`export_pairs` gives
  :class:`world.PreferencePair` rows, :func:`agreement` (percent and Cohen's kappa), :func:`position_bias` and
  :func:`gold_agreement` check the labels, :func:`report` prints them all.

A record (one JSON object per line)::

    {"v": 1, "action": "label", "item": "9c1e...", "annotator": "alice", "label": "a", "swap": true,
     "time": "2026-05-01T10:00:00.000+00:00", "prompt": "...", "first": "...", "second": "...",
     "rationale": "", "source": "widget"}
    {"v": 1, "action": "undo", "item": "9c1e...", "annotator": "alice", "time": "..."}

``label`` is what was clicked, in display terms: ``"a"`` (left better), ``"b"`` (right better), ``"tie"``,
``"both_bad"`` or ``"skip"``. ``swap`` is true when the item's ``second`` response was shown on the left. A label
record carries the texts, so a labels folder is a data set on its own: exporting needs nothing else.

Ties and "both bad" carry no preference, so :func:`export_pairs` leaves them (and skips) out of the pairs and
counts them. Used in lesson 02.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import random
import re
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from . import world

CHOICES = ("a", "b", "tie", "both_bad", "skip")          # what a label record's "label" may hold
OUTCOMES = ("first", "second", "tie", "both_bad", "skip")  # the same judgment in item terms (order-free)
ANNOTATOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # no "/", no leading ".": ids stay file names
FORMAT_VERSION = 1


class LabelFileWarning(UserWarning):
    """A label file had damaged lines; they were skipped and are listed in the message."""


# ----------------------------------------------------------------------------------------------------------------
# items and labels

def item_id(prompt: str, first: str, second: str) -> str:
    """A stable id for a pair: the same texts give the same id on every machine and in every session."""
    return hashlib.sha256("\x1f".join((prompt, first, second)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """One pair to judge: a prompt and two responses, in the order they were made (not the order shown)."""
    prompt: str
    first: str
    second: str
    id: str = ""  # defaults to item_id(prompt, first, second)

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", item_id(self.prompt, self.first, self.second))


@dataclass(frozen=True)
class Label:
    """One annotator's current judgment of one item (the last label record not undone)."""
    item: str
    annotator: str
    label: str          # in display terms: "a" (left better), "b", "tie", "both_bad", "skip"
    swap: bool          # True: ``second`` was shown on the left
    prompt: str
    first: str
    second: str
    rationale: str = ""
    source: str = "widget"  # "widget" for a person's click, "simulated" for world.Annotator
    time: str = ""

    @property
    def left(self) -> str:
        return self.second if self.swap else self.first

    @property
    def right(self) -> str:
        return self.first if self.swap else self.second

    @property
    def outcome(self) -> str:
        """The judgment in item terms: "first" or "second" (which was better), "tie", "both_bad" or "skip"."""
        if self.label in ("a", "b"):
            return "second" if (self.label == "a") == self.swap else "first"
        return self.label

    @property
    def decisive(self) -> bool:
        return self.label in ("a", "b")


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


def check_annotator(annotator: str) -> str:
    """Return ``annotator`` if it is a safe file name, else raise ValueError: ids like "../evil" are rejected."""
    if not isinstance(annotator, str) or not ANNOTATOR_RE.fullmatch(annotator):
        raise ValueError(f"annotator id {annotator!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', "
                         f"starting with a letter or digit (it becomes the name of the label file)")
    return annotator


def label_path(folder: str | Path, annotator: str) -> Path:
    """The label file of ``annotator`` inside ``folder``; never a path outside it."""
    folder = Path(folder)
    path = folder / f"{check_annotator(annotator)}.jsonl"
    if path.resolve().parent != folder.resolve():  # belt and braces: the regex already forbids separators
        raise ValueError(f"label file {path} would lie outside {folder}")
    return path


# ----------------------------------------------------------------------------------------------------------------
# the label file: append-only JSONL

@dataclass(frozen=True)
class DamagedLine:
    """A line of a label file that could not be used; it is reported and skipped, never silently dropped."""
    path: Path
    line: int    # 1-based line number
    reason: str
    text: str    # the start of the line, for the report

    def __str__(self) -> str:
        return f"{self.path} line {self.line}: {self.reason}: {self.text!r}"


_FIELDS = {"label": {"item": str, "annotator": str, "label": str, "swap": bool, "time": str, "prompt": str,
                     "first": str, "second": str},
           "undo": {"item": str, "annotator": str, "time": str}}


def _problem(record: object) -> str | None:
    """Why a parsed line is not a valid record, or None if it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    fields = _FIELDS.get(record.get("action"))
    if fields is None:
        return f"unknown action {record.get('action')!r}"
    for name, kind in fields.items():
        if not isinstance(record.get(name), kind):
            return f"field {name!r} missing or not a {kind.__name__}"
    if record["action"] == "label" and record["label"] not in CHOICES:
        return f"unknown label {record['label']!r}"
    return None


def read_log(path: str | Path) -> tuple[list[tuple[int, dict]], list[DamagedLine]]:
    """Read a label file: the valid records with their line numbers, and the damaged lines (skipped)."""
    path = Path(path)
    if not path.exists():
        return [], []
    records, damaged = [], []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            reason = _problem(record)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:  # a torn or edited line
            record, reason = None, f"not JSON ({e})"
        if reason is None:
            records.append((number, record))
        else:
            damaged.append(DamagedLine(path, number, reason, raw[:80].decode("utf-8", "replace")))
    return records, damaged


def _replay(path: Path, records: list[tuple[int, dict]]) -> tuple[dict[tuple[str, str], Label], list[DamagedLine]]:
    """Apply label and undo records in order: the current label per (annotator, item), oldest first."""
    current: dict[tuple[str, str], Label] = {}
    problems = []
    for number, r in records:
        key = (r["annotator"], r["item"])
        if r["action"] == "label":
            current.pop(key, None)  # a re-label moves the item to the end of the history
            current[key] = Label(**{k: r[k] for k in _FIELDS["label"]}, rationale=str(r.get("rationale", "")),
                                 source=str(r.get("source", "widget")))
        elif key in current:
            del current[key]
        else:
            problems.append(DamagedLine(path, number, "undo of an item with no label", json.dumps(r)[:80]))
    return current, problems


class _AppendOnlyFile:
    """One label file opened for appending; every record is on disk (fsync'd) when :meth:`append` returns."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if not created and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    # a torn last line (power cut mid-write): end it, so the next record is not glued to it
                    os.write(fd, b"\n")
        if created:  # make the new file's directory entry durable too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return fd

    def append(self, record: dict) -> None:
        if self._fd is None:
            self._fd = self._open()
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        # one write call per record: O_APPEND keeps records whole even if two sessions share the file
        written = os.write(self._fd, data)
        while written < len(data):  # only on a full disk or a signal; finish the line
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
        self._labels, problems = _replay(self.path, records)   # (annotator, item) -> Label, oldest first
        self.damaged += problems
        if self.damaged:
            warnings.warn(f"{len(self.damaged)} damaged line(s) in {self.path}, skipped:\n"
                          + "\n".join(str(d) for d in self.damaged), LabelFileWarning, stacklevel=2)
        self._file = _AppendOnlyFile(self.path)
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
                    first=item.first, second=item.second, rationale=rationale, source=source, time=_now())
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
                           "time": _now()})
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
    from .evaluate import sample_responses  # imports torch: only when a model is involved
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


# ----------------------------------------------------------------------------------------------------------------
# reading a labels folder, and from labels to training

@dataclass
class LabelSet:
    """Every annotator's current labels from a folder of label files, and the lines that could not be read."""
    labels: list[Label]
    damaged: list[DamagedLine] = field(default_factory=list)

    @property
    def annotators(self) -> list[str]:
        return sorted({lab.annotator for lab in self.labels})


def read_labels(folder: str | Path) -> LabelSet:
    """Merge every ``*.jsonl`` file in ``folder`` (one per annotator); damaged lines are warned about and listed."""
    current: dict[tuple[str, str], Label] = {}
    damaged: list[DamagedLine] = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        records, bad = read_log(path)
        labels, problems = _replay(path, records)
        current.update(labels)
        damaged += bad + problems
    if damaged:
        warnings.warn(f"{len(damaged)} damaged line(s) in {folder}, skipped:\n" + "\n".join(map(str, damaged)),
                      LabelFileWarning, stacklevel=2)
    return LabelSet(list(current.values()), damaged)


@dataclass
class Export:
    """Preference rows ready for the reward model and DPO, and what was left out of them."""
    pairs: list[world.PreferencePair]
    counts: dict[str, int]  # {"pairs", "tie", "both_bad", "skip"}: every label lands in exactly one

    def __str__(self) -> str:
        c = self.counts
        return (f"{c['pairs']} preference pairs; left out: {c['tie']} ties, {c['both_bad']} 'both bad', "
                f"{c['skip']} skips")


def export_pairs(labels: Iterable[Label] | LabelSet) -> Export:
    """Labels to :class:`world.PreferencePair` rows (prompt, chosen, rejected), the course's one row type.

    Only "a" / "b" labels say which response is better. A tie says neither is, and "both bad" says both are
    unacceptable without ranking them, so neither becomes a pair: both are counted in ``counts`` instead (they
    are still useful: ties for an agreement check, "both bad" for finding prompts that need better responses).
    Two annotators who labeled the same item give two rows, possibly opposite: that disagreement is the label
    noise a Bradley-Terry model expects.
    """
    labels = labels.labels if isinstance(labels, LabelSet) else list(labels)
    pairs, counts = [], Counter({"pairs": 0, "tie": 0, "both_bad": 0, "skip": 0})
    for lab in labels:
        if lab.decisive:
            chosen, rejected = (lab.left, lab.right) if lab.label == "a" else (lab.right, lab.left)
            pairs.append(world.PreferencePair(lab.prompt, chosen, rejected, source=lab.source,
                                              annotator=lab.annotator))
            counts["pairs"] += 1
        else:
            counts[lab.label] += 1
    return Export(pairs, dict(counts))


def percent_agreement(x: Sequence[str], y: Sequence[str]) -> float:
    """The fraction of items on which two annotators gave the same label."""
    if len(x) != len(y) or not x:
        raise ValueError("percent_agreement needs two equally long, non-empty label lists")
    return sum(a == b for a, b in zip(x, y)) / len(x)


def cohens_kappa(x: Sequence[str], y: Sequence[str]) -> float:
    """Cohen's kappa: agreement beyond chance, kappa = (p_o - p_e) / (1 - p_e) (Cohen 1960, eq. 1).

    p_o is the observed agreement; p_e = sum over labels k of p_x(k) * p_y(k) is the agreement two annotators
    would reach by chance with their own label frequencies. 1 is perfect agreement, 0 chance level, < 0 worse
    than chance. NaN when p_e = 1 (both always gave the same single label: agreement beyond chance is undefined).
    """
    p_o = percent_agreement(x, y)
    n = len(x)
    fx, fy = Counter(x), Counter(y)
    p_e = sum(fx[k] * fy[k] for k in fx) / (n * n)
    return float("nan") if p_e == 1 else (p_o - p_e) / (1 - p_e)


def agreement(labels: Iterable[Label] | LabelSet, annotator_a: str, annotator_b: str) -> dict:
    """Percent agreement and Cohen's kappa of two annotators on the items both judged (skips left out).

    Judgments are compared in item terms ("first", "second", "tie", "both_bad"), so two people who saw a pair in
    opposite left/right orders still agree when they preferred the same response.
    """
    labels = labels.labels if isinstance(labels, LabelSet) else list(labels)
    by = {who: {lab.item: lab.outcome for lab in labels if lab.annotator == who and lab.label != "skip"}
          for who in (annotator_a, annotator_b)}
    common = sorted(set(by[annotator_a]) & set(by[annotator_b]))
    if not common:
        return {"items": 0, "percent": float("nan"), "kappa": float("nan")}
    x = [by[annotator_a][i] for i in common]
    y = [by[annotator_b][i] for i in common]
    return {"items": len(common), "percent": percent_agreement(x, y), "kappa": cohens_kappa(x, y)}


def _gold(lab: Label) -> tuple[float, float] | None:
    """Gold rewards of the left and right response, or None if the prompt is not one of the world's."""
    try:
        prompt = world.find_prompt(lab.prompt)
    except KeyError:
        return None
    return world.gold_reward(prompt, lab.left), world.gold_reward(prompt, lab.right)


def position_bias(labels: Iterable[Label] | LabelSet) -> dict[str, dict]:
    """Per annotator: how often a decisive label picked the left response, against how often the gold reward
    prefers the left one on the same pairs (gold ties count half). With left/right order shuffled, an unbiased
    annotator's ``left_rate`` is close to ``gold_left_rate``; ``interval`` is the 95 % Wilson interval of
    ``left_rate``. Only decisive labels on the world's prompts count."""
    from .evaluate import wilson_interval
    labels = labels.labels if isinstance(labels, LabelSet) else list(labels)
    out = {}
    for who in sorted({lab.annotator for lab in labels}):
        lefts = gold_lefts = n = 0
        for lab in labels:
            if lab.annotator == who and lab.decisive and (gold := _gold(lab)) is not None:
                n += 1
                lefts += lab.label == "a"
                gold_lefts += 1.0 if gold[0] > gold[1] else 0.5 if gold[0] == gold[1] else 0.0
        out[who] = {"decisive": n, "left_rate": lefts / n if n else float("nan"),
                    "interval": wilson_interval(lefts, n), "gold_left_rate": gold_lefts / n if n else float("nan")}
    return out


def gold_agreement(labels: Iterable[Label] | LabelSet) -> dict[str, dict]:
    """Per annotator: on decisive labels where the gold reward tells the two responses apart, the fraction whose
    chosen response has the higher gold reward."""
    labels = labels.labels if isinstance(labels, LabelSet) else list(labels)
    out = {}
    for who in sorted({lab.annotator for lab in labels}):
        agree = n = 0
        for lab in labels:
            if lab.annotator == who and lab.decisive and (gold := _gold(lab)) is not None and gold[0] != gold[1]:
                n += 1
                agree += (gold[0] > gold[1]) == (lab.label == "a")
        out[who] = {"compared": n, "agreement": agree / n if n else float("nan")}
    return out


def report(labels: LabelSet) -> str:
    """Everything about a folder of labels, as text: counts, pairs, agreement, position bias, gold agreement."""
    lines = [f"{len(labels.labels)} labels from {len(labels.annotators)} annotator(s); "
             f"{len(labels.damaged)} damaged line(s) skipped", str(export_pairs(labels))]
    for who in labels.annotators:
        counts = Counter(lab.label for lab in labels.labels if lab.annotator == who)
        lines.append(f"  {who:12s} " + ", ".join(f"{k} {counts[k]}" for k in CHOICES))
    names = labels.annotators
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ag = agreement(labels, a, b)
            lines.append(f"agreement {a} / {b}: {ag['items']} shared items, {100 * ag['percent']:.0f} % agree, "
                         f"Cohen's kappa {ag['kappa']:.2f}")
    for who, pb in position_bias(labels).items():
        lo, hi = pb["interval"]
        lines.append(f"position bias {who}: picked the left response in {100 * pb['left_rate']:.0f} % "
                     f"[{100 * lo:.0f}, {100 * hi:.0f}] of {pb['decisive']} decisive labels; the gold reward "
                     f"prefers the left one in {100 * pb['gold_left_rate']:.0f} %")
    for who, ga in gold_agreement(labels).items():
        lines.append(f"gold agreement {who}: {100 * ga['agreement']:.0f} % of {ga['compared']} pairs")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# the view

KEYS = {"a": "a", "b": "b", "t": "tie", "x": "both_bad", "s": "skip", "u": "undo"}
BUTTONS = {"a": "A better", "b": "B better", "tie": "Tie", "both_bad": "Both bad", "skip": "Skip", "undo": "Undo"}


def _text_box(title: str, text: str) -> str:
    """HTML for a titled box showing ``text`` as text: everything the world or a model wrote goes through
    html.escape, so "<script>" shows as the characters "<script>"."""
    return (f"<div style='border:1px solid #ccc;border-radius:4px;padding:6px 8px;min-height:3em'>"
            f"<div style='font-size:85%;color:#666'>{html.escape(title)}</div>"
            f"<div style='white-space:pre-wrap;overflow-wrap:anywhere'>{html.escape(text)}</div></div>")


class LabelingWidget:
    """A thin ipywidgets view over a :class:`LabelingSession`: the prompt, response A (left) and B (right),
    buttons A better / B better / Tie / Both bad / Skip / Undo, an optional rationale, progress, and a status line.

    Keyboard: the shortcuts live in the widget's own "keys" box. Click into it, then type a, b, t (tie),
    x (both bad), s (skip) or u (undo). While focus is in that text box, JupyterLab's command-mode keys (a and b
    insert cells, d d deletes one, ...) are not active, so the two never fight; outside the box a key press is
    JupyterLab's as usual. Buttons get no key bindings of their own, because a focused button leaves JupyterLab
    in command mode, where "a" would insert a cell instead of labeling. (Tab to a button and Space or Enter
    clicks it, as on any web page.)

    Double clicks: the buttons are disabled while a click is handled, but the kernel may receive a second click
    that the browser sent before it learned of that. So an action that arrives less than ``min_dwell`` seconds
    after its pair appeared is ignored (and said so in the status line): nobody reads and judges a pair that fast.

    Errors in a handler do not vanish (ipywidgets would only log them): they are shown in the status line and
    kept in :attr:`errors`, which tests assert empty.
    """

    def __init__(self, session: LabelingSession, min_dwell: float = 0.3, clock=time.monotonic):
        import ipywidgets as widgets  # only the view needs ipywidgets
        self.session, self.min_dwell, self.clock = session, min_dwell, clock
        self.errors: list[Exception] = []
        self._busy = False
        self._resetting_keys = False
        self.header = widgets.HTML()
        self.prompt = widgets.HTML()
        self.left = widgets.HTML(layout=widgets.Layout(width="50%"))
        self.right = widgets.HTML(layout=widgets.Layout(width="50%"))
        self.buttons = {}
        for action, text in BUTTONS.items():
            key = next(k for k, v in KEYS.items() if v == action)
            button = widgets.Button(description=text, tooltip=f"key {key} in the keys box",
                                    button_style="info" if action in ("a", "b") else "",
                                    layout=widgets.Layout(width="auto"))
            button.add_class(f"labeling-{action}")
            button.on_click(lambda _button, action=action: self._act(action))
            self.buttons[action] = button
        self.rationale = widgets.Text(placeholder="optional: why? (saved with the label)",
                                      layout=widgets.Layout(width="60%"))
        self.keys = widgets.Text(placeholder="keys: click here, then a b t x s u", continuous_update=True,
                                 layout=widgets.Layout(width="40%"))
        self.keys.add_class("labeling-keys")
        self.keys.observe(self._on_key, names="value")
        self.status = widgets.HTML()
        for name in ("header", "prompt", "left", "right", "rationale", "status"):
            getattr(self, name).add_class(f"labeling-{name}")
        self.box = widgets.VBox([self.header, self.prompt, widgets.HBox([self.left, self.right]),
                                 widgets.HBox(list(self.buttons.values())),
                                 widgets.HBox([self.rationale, self.keys]), self.status])
        self.box.add_class("labeling-widget")
        self._render()

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    def _say(self, message: str, colour: str = "#444") -> None:
        self.status.value = f"<span style='color:{colour}'>{html.escape(message)}</span>"

    def _render(self) -> None:
        """Show the session's current pair and progress; enable what can be clicked now."""
        shown = self.session.current
        done, total = self.session.progress
        self.header.value = (f"<b>annotator</b> {html.escape(self.session.annotator)} &middot; "
                             f"<b class='labeling-progress'>labeled {done} of {total}</b> &middot; "
                             f"saved to {html.escape(str(self.session.path))}")
        if shown is None:
            self.prompt.value = _text_box("prompt", f"all {total} pairs are labeled: thank you")
            self.left.value = self.right.value = ""
        else:
            self.prompt.value = _text_box(f"prompt (pair {shown.index + 1} of {total})", shown.item.prompt)
            self.left.value = _text_box("A", shown.left)
            self.right.value = _text_box("B", shown.right)
        for action, button in self.buttons.items():
            button.disabled = not self.session.labels if action == "undo" else shown is None
        self._shown_at = self.clock()

    def _act(self, action: str, source: str = "widget", force: bool = False) -> None:
        """Handle one button click or key: label (or undo), save, then show the next pair."""
        if self._busy:
            return
        waited = self.clock() - self._shown_at
        if not force and waited < self.min_dwell:
            self._say(f"ignored '{BUTTONS[action]}': it came {waited:.2f} s after the pair appeared "
                      f"(a double click?)", "#b35900")
            return
        self._busy = True
        for button in self.buttons.values():
            button.disabled = True
        try:
            if action == "undo":
                lab = self.session.undo()
                message = "nothing to undo" if lab is None else "undone: that pair is shown again"
            else:
                lab = self.session.label(action, rationale=self.rationale.value.strip(), source=source)
                self.rationale.value = ""
                message = f"saved '{BUTTONS[action]}' to {self.session.path.name}"
            self._render()  # the next pair shows only after the record is on disk
            self._say(message)
        except Exception as e:  # shown and kept, never swallowed
            self.errors.append(e)
            self._render()
            self._say(f"error: {type(e).__name__}: {e}", "#b2182b")
        finally:
            self._busy = False

    def _on_key(self, change) -> None:
        text = change["new"]
        if self._resetting_keys or not text:
            return
        self._resetting_keys = True
        self.keys.value = ""
        self._resetting_keys = False
        action = KEYS.get(text.lower()) if len(text) == 1 else None
        if action is None:
            self._say("keys: a (A better), b (B better), t (tie), x (both bad), s (skip), u (undo)")
            return
        self._act(action)

    def simulate(self, annotator: world.Annotator, n: int | None = None,
                 both_bad_below: float | None = None) -> int:
        """Let ``annotator`` click through up to ``n`` pairs of this view (same path as a click, no dwell wait)."""
        done, errors = 0, len(self.errors)
        while self.session.current is not None and (n is None or done < n):
            self._act(simulated_choice(annotator, self.session.current, both_bad_below), "simulated", force=True)
            if len(self.errors) > errors:
                raise self.errors[-1]
            done += 1
        return done
