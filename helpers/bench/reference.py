"""``reference.*``, ``timings_s.*``, ``world.*``: the reference model's failure rates, its load, generation and
pretraining times, and whether pretraining from the seed reproduces the committed weights."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .. import world
from ..evaluate import scorecard
from ..pretrain import REFERENCE_PATH, PretrainConfig, load_reference, pretrain
from ..tokenizer import Tokenizer


def timed(fn):
    """``(fn(), seconds it took)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_reference() -> dict:
    """The reference model: its failure rates, load and generation times, and whether pretraining reproduces it."""
    torch.set_num_threads(PretrainConfig().threads)
    model, load_s = timed(load_reference)  # the first load in this process: builds the vocabulary too
    tok = Tokenizer()
    prompts = [tok.encode_prompt(p.text) for p in world.prompts("test")[:256]]
    _, generate_s = timed(lambda: model.generate(prompts, generator=torch.Generator().manual_seed(0)))
    card = scorecard(model)
    figures = card.figures()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.pt"
        _, pretrain_s = timed(lambda: pretrain(PretrainConfig(), path))
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
