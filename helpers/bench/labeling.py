"""``make bench`` section for preference labeling: how long 200 labels take through the widget's own click path.

Each label is a simulated click on the view's real button (a :class:`world.Annotator` picks which), so the figure
covers the session, the widget update and the label file with its fsync per record; no browser is involved. The
fsync dominates: a few milliseconds per label on an ordinary disk.
"""
from __future__ import annotations

import tempfile
import time

from .. import world
from ..labeling import Item, LabelingSession, LabelingWidget, simulated_choice

PAIRS = 200


def bench_labeling() -> dict:
    """{"labeling": {"seconds_200_pairs": ..., "seconds_reopen_200": ...}}, both on the train split's prompts."""
    prompts = [p for p in world.prompts("train")][:PAIRS]
    items = [Item(p.text, world.response(p, world.VERBOSE_BASE[p.category], k), world.response(p, "insult", k))
             for k, p in enumerate(prompts)]
    annotator = world.Annotator(seed=0)
    with tempfile.TemporaryDirectory() as folder:
        view = LabelingWidget(LabelingSession(items, folder, "bench"), min_dwell=0.0)
        start = time.perf_counter()
        for _ in range(PAIRS):
            view.buttons[simulated_choice(annotator, view.session.current)].click()
        labeling_s = time.perf_counter() - start
        if view.errors or view.session.progress != (PAIRS, PAIRS):
            raise RuntimeError(f"labeling benchmark went wrong: {view.errors or view.session.progress}")
        view.session.close()
        start = time.perf_counter()
        reopened = LabelingSession(items, folder, "bench")
        reopen_s = time.perf_counter() - start
        assert reopened.progress == (PAIRS, PAIRS)
    return {"labeling": {"seconds_200_pairs": labeling_s, "seconds_reopen_200": reopen_s}}
