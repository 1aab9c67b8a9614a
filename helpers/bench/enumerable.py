"""``make bench`` section for the enumerable view (issue 13): ``enumerable.*``.

- ``coverage`` (overall) and ``coverage_by_category``: the share of the reference model's probability mass the test
  split's candidate sets hold, before renormalising.
- ``rates_match``: every category x behaviour rate of the view inside the Bonferroni-corrected 95 % interval of the
  sampled rate, from 8 samples per test prompt (:func:`helpers.enumerable.compare_rates`); ``rates`` lists them.
- ``build_s``: scoring the test split's candidates from scratch; ``load_s``: loading the committed view.
"""
from __future__ import annotations

import time

import torch

from .. import enumerable, world
from ..evaluate import PROTOCOL_SPLIT
from ..pretrain import PretrainConfig, load_reference

SAMPLES_PER_PROMPT = 8


def bench_enumerable() -> dict:
    """{"enumerable": {...}}."""
    torch.set_num_threads(PretrainConfig().threads)
    reference = load_reference()
    prompts = list(world.prompts(PROTOCOL_SPLIT))
    start = time.perf_counter()
    built = enumerable.build_view(reference, prompts)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    view = enumerable.load_view(PROTOCOL_SPLIT)
    load_s = time.perf_counter() - start
    counts = enumerable.sampled_counts(reference, prompts, SAMPLES_PER_PROMPT, seed=1000)
    rows = enumerable.compare_rates(view, counts)
    coverage = view.coverage_by_category()
    return {"enumerable": {
        "coverage": coverage["all"],
        "coverage_by_category": {c: coverage[c] for c in world.CATEGORIES},
        "rates_match": all(r["inside"] for r in rows),
        "rates": {f"{r['category']}.{r['label']}": {k: r[k] for k in ("view", "sampled", "low", "high")}
                  for r in rows},
        "candidates": sum(len(t) for t in view.texts),
        "stored_matches_fresh_build": bool(torch.allclose(built.logps.exp(), view.logps.exp(), atol=1e-5)),
        "build_s": build_s, "load_s": load_s}}
