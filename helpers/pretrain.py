"""Pretraining the reference model pi_ref on the "internet" corpus, and loading it.

The reference model is trained once by ``python -m helpers pretrain`` (deterministic from its seed), committed as
``helpers/artifacts/reference.pt``, and loaded by every lesson with :func:`load_reference`. Notebooks never
pretrain. :func:`train_language_model` is also lesson 01's supervised fine-tune (:mod:`helpers.sft`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world
from .checkpoint import ARTIFACTS, default_config, load, save
from .model import LanguageModel, ScalarModel
from .progress import progress
from .tokenizer import Tokenizer, encode_pairs

REFERENCE_PATH = ARTIFACTS / "reference.pt"


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1500          # the loss is flat well before this; more steps only sharpen the corpus mix
    batch_size: int = 128      # documents per step
    lr: float = 1e-2           # peak AdamW learning rate: tiny models learn their facts faster with large steps
    warmup: int = 100          # linear warm-up steps, then cosine decay to 10 % of the peak
    weight_decay: float = 0.01
    seed: int = 0              # the same seed gives the same weights, bit for bit, on the same machine
    threads: int = 2           # torch threads; measured on the course machine (see README)


def language_modeling_loss(model: LanguageModel, batch) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens: the model learns p(response | prompt)."""
    logits = model(batch.input_ids, batch.attention_mask)                       # [B, T, V]
    targets = batch.input_ids[:, 1:].masked_fill(batch.response_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)


def train_language_model(model: LanguageModel, docs: list[tuple[str, str]], cfg: PretrainConfig,
                         tokenizer: Tokenizer, desc: str = "pretraining") -> list[float]:
    """Fit ``model`` to (prompt, response) documents, ``cfg.batch_size`` per step. Returns the loss per step.

    Used by pretraining and by lesson 01's short supervised fine-tune.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    model.train()
    for step in progress(range(cfg.steps), desc=desc):
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(docs), (cfg.batch_size,), generator=gen).tolist()
        batch = encode_pairs(tokenizer, [docs[i][0] for i in idx], [docs[i][1] for i in idx], model.cfg.block_size)
        loss = language_modeling_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def pretrain(cfg: PretrainConfig = PretrainConfig(), path: Path | None = REFERENCE_PATH) -> LanguageModel:
    """Train the reference model from scratch on the "internet" corpus and (if ``path``) save it."""
    torch.manual_seed(cfg.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        tokenizer = Tokenizer()
        model = LanguageModel(default_config(tokenizer))
        docs = world.corpus(200_000, seed=cfg.seed)
        start = time.perf_counter()
        losses = train_language_model(model, docs, cfg, tokenizer)
        print(f"pretrained {cfg.steps} steps in {time.perf_counter() - start:.1f} s; final loss {losses[-1]:.3f}")
    finally:
        torch.set_num_threads(previous_threads)
    if path is not None:
        save(model, path)
    return model


def load_reference(path: Path = REFERENCE_PATH) -> LanguageModel:
    """The course's reference model pi_ref, in eval mode (dropout off). Used in every lesson."""
    return load(path, LanguageModel)


def scalar_from_reference() -> ScalarModel:
    """A scalar-head model whose transformer starts from the reference model (for reward and value models)."""
    return ScalarModel.from_language_model(load_reference())
