"""Labels on disk: the records, the append-only label file (one per annotator), reading a folder of them, and
the export to preference pairs.

A record (one JSON object per line)::

    {"v": 1, "action": "label", "item": "9c1e...", "annotator": "alice", "label": "a", "swap": true,
     "time": "2026-05-01T10:00:00.000+00:00", "prompt": "...", "first": "...", "second": "...",
     "rationale": "", "source": "widget"}
    {"v": 1, "action": "undo", "item": "9c1e...", "annotator": "alice", "time": "..."}

``label`` is what was clicked, in display terms: ``"a"`` (left better), ``"b"`` (right better), ``"tie"``,
``"both_bad"`` or ``"skip"``. ``swap`` is true when the item's ``second`` response was shown on the left. A label
record carries the texts, so a labels folder is a data set on its own: exporting needs nothing else.

Each record is written with a single ``os.write`` and ``os.fsync``'d before the next pair shows, so a crash (even
``kill -9`` of the kernel) loses no label the widget said was saved. Reading reports every damaged line with its
line number and skips it (any JSON value in any field, any nesting); a damaged file is never fatal. A record whose
``annotator`` is not its file's name is a damaged line too: ``<annotator>.jsonl`` holds that annotator's labels
only. Ties and "both bad" carry no preference, so
:func:`export_pairs` leaves them (and skips) out of the pairs and counts them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .. import world

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
_OPTIONAL = {"rationale": str, "source": str}  # label records written before these existed lack them


def _problem(record: object, annotator: str) -> str | None:
    """Why a parsed line is not a valid record of ``annotator``'s file, or None if it is one.

    Only types are compared (never hashed), so any JSON value in any field is a reason, never an exception."""
    if not isinstance(record, dict):
        return "not a JSON object"
    action = record.get("action")
    if not isinstance(action, str) or action not in _FIELDS:
        return f"unknown action {action!r}" if not isinstance(action, (dict, list)) else \
            f"unknown action (a JSON {'object' if isinstance(action, dict) else 'array'})"
    fields = _FIELDS[action] | (_OPTIONAL if action == "label" else {})
    for name, kind in fields.items():
        value = record.get(name, "" if name in _OPTIONAL else None)
        if not isinstance(value, kind):
            return f"field {name!r} missing or not a {kind.__name__}"
        if kind is str and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): could never be written back
                return f"field {name!r} is not valid text"
    if action == "label" and record["label"] not in CHOICES:
        return f"unknown label {record['label'][:20]!r}"
    # the file name says whose labels these are: a record claiming someone else would hide or replace theirs
    if record["annotator"] != annotator:
        return f"annotator {record['annotator'][:64]!r} in the file of {annotator!r}: a record belongs in its " \
               f"annotator's own file"
    return None


def read_log(path: str | Path) -> tuple[list[tuple[int, dict]], list[DamagedLine]]:
    """Read a label file: the valid records with their line numbers, and the damaged lines (skipped).

    The file ``<annotator>.jsonl`` holds ``annotator``'s records only; any other record is a damaged line."""
    path = Path(path)
    if not path.exists():
        return [], []
    records, damaged = [], []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            reason = _problem(record, path.stem)
        except ValueError as e:  # a torn or edited line (JSONDecodeError, UnicodeDecodeError, a 5,000-digit int)
            record, reason = None, f"not JSON ({e})"
        except RecursionError:  # thousands of nested [ or {
            record, reason = None, "nested too deeply to be a record"
        if reason is None:
            records.append((number, record))
        else:
            damaged.append(DamagedLine(path, number, reason, raw[:80].decode("utf-8", "replace")))
    return records, damaged


def replay(path: Path, records: list[tuple[int, dict]]) -> tuple[dict[tuple[str, str], Label], list[DamagedLine]]:
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
            text = json.dumps({k: r[k] for k in _FIELDS["undo"]}, ensure_ascii=False)[:80]  # not the extra fields
            problems.append(DamagedLine(path, number, "undo of an item with no label", text))
    return current, problems


class AppendOnlyFile:
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


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
        labels, problems = replay(path, records)
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
