"""Preference labeling: a pure-Python session behind a thin ipywidgets view, and the road from labels to training.

One module per part, every public name re-exported here (lessons write ``labeling.read_labels``):

- :mod:`.storage`: :class:`Item` (one pair to judge, with a stable id made from its text), :class:`Label`, the
  append-only JSONL label file (one per annotator, ``<folder>/<annotator>.jsonl``, one record per action, each
  ``fsync``'d before the next pair shows), :func:`read_labels` (merges every annotator's file; a damaged line is
  reported with its line number and skipped, never fatal) and :func:`export_pairs` (labels to
  :class:`world.PreferencePair` rows; ties, "both bad" and skips are counted, not exported).
- :mod:`.session`: :class:`LabelingSession`, the state machine (shows the first unlabeled item, left/right order
  drawn from ``(seed, annotator, item)`` and recorded; reopening resumes), and :func:`simulate`, where a
  :class:`world.Annotator` makes the choices.
- :mod:`.agreement`: :func:`agreement` (percent and Cohen's kappa), :func:`position_bias`, :func:`gold_agreement`
  and :func:`report`.
- :mod:`.view`: :class:`LabelingWidget`, the ipywidgets view. ipywidgets is imported only when it is used.

Used in lesson 02.
"""
from __future__ import annotations

from .agreement import agreement, cohens_kappa, gold_agreement, percent_agreement, position_bias, report
from .session import LabelingSession, Shown, make_items, simulate, simulated_choice
from .storage import (ANNOTATOR_RE, CHOICES, FORMAT_VERSION, OUTCOMES, DamagedLine, Export, Item, Label,
                      LabelFileWarning, LabelSet, check_annotator, export_pairs, item_id, label_path, read_labels,
                      read_log)

__all__ = ["ANNOTATOR_RE", "CHOICES", "FORMAT_VERSION", "OUTCOMES", "DamagedLine", "Export", "Item", "Label",
           "LabelFileWarning", "LabelSet", "LabelingSession", "LabelingWidget", "Shown", "agreement",
           "check_annotator", "cohens_kappa", "export_pairs", "gold_agreement", "item_id", "label_path",
           "make_items", "percent_agreement", "position_bias", "read_labels", "read_log", "report", "simulate",
           "simulated_choice"]


def __getattr__(name: str):
    """``labeling.LabelingWidget`` imports the view (and ipywidgets) on first use only."""
    if name == "LabelingWidget":
        from .view import LabelingWidget
        return LabelingWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
