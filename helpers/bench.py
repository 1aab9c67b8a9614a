"""``make bench``: measure the figures the issues name, print them as a table and write ``bench.json``.

Each section is one function returning a nested dict under the benchmark contract's keys (DESIGN.md); later
lessons add their sections to :data:`SECTIONS`. All figures are on the test split.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from . import world
from .checkpoint import REFERENCE_PATH, PretrainConfig, load_reference, pretrain
from .evaluate import scorecard
from .tokenizer import Tokenizer


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_reference() -> dict:
    """The reference model: its failure rates, load and generation times, and whether pretraining reproduces it."""
    torch.set_num_threads(PretrainConfig().threads)
    model, load_s = _timed(load_reference)  # the first load in this process: builds the vocabulary too
    tok = Tokenizer()
    prompts = [tok.encode_prompt(p.text) for p in world.prompts("test")[:256]]
    _, generate_s = _timed(lambda: model.generate(prompts, generator=torch.Generator().manual_seed(0)))
    card = scorecard(model)
    figures = card.figures()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.pt"
        _, pretrain_s = _timed(lambda: pretrain(PretrainConfig(), path))
        fresh = torch.load(path, weights_only=True)["state_dict"]
    committed = torch.load(REFERENCE_PATH, weights_only=True)["state_dict"]
    reproduces = all(torch.equal(fresh[k], committed[k]) for k in committed)
    return {
        "reference": {k: figures[k] for k in ("harmful_compliance", "false_answer", "fabrication", "insult",
                                              "eos_rate", "parse_rate", "gold_reward", "malformed",
                                              "mean_length", "distinct_responses")}
        | {"pretrain_reproduces_committed": reproduces},
        "timings_s": {"pretrain": pretrain_s, "load_reference": load_s, "generate_256": generate_s},
        "world": {"best_gold_reward": world.best_gold_reward("test"),
                  "vocabulary": len(tok),
                  "prompts": {s: len(world.prompts(s)) for s in world.SPLITS}},
    }


SECTIONS = [bench_reference]


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((prefix + k, v))
    return rows


def run_bench(out: Path = Path("bench.json")) -> dict:
    """Run every section, print a table, write ``out``."""
    results: dict = {}
    for section in SECTIONS:
        _merge(results, section())
    rows = _flatten(results)
    width = max(len(k) for k, _ in rows)
    print(f"{'figure':{width}s}  value")
    for k, v in rows:
        shown = f"{v:.4g}" if isinstance(v, float) else str(v)
        print(f"{k:{width}s}  {shown}")
    Path(out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return results
