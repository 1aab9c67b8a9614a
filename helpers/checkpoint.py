"""Pretraining the reference model on the "internet" corpus, and saving / loading checkpoints.

The reference model pi_ref is trained once by ``python -m helpers pretrain`` (deterministic from its seed), committed
under ``helpers/artifacts/``, and loaded by every lesson with :func:`load_reference`. Notebooks never pretrain.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import world
from .model import LanguageModel, ModelConfig, ScalarModel
from .progress import progress
from .tokenizer import Tokenizer, encode_pairs

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
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


def default_config(tokenizer: Tokenizer | None = None) -> ModelConfig:
    """The model config that matches the world's vocabulary."""
    tok = tokenizer or Tokenizer()
    return ModelConfig(vocab_size=len(tok), pad_id=tok.pad_id, eos_id=tok.eos_id)


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


def save(model: torch.nn.Module, path: Path) -> None:
    """Save weights with the config and vocabulary they belong to (plain tensors and strings only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(model.cfg), "vocabulary": Tokenizer().itos,
                "kind": type(model).__name__, "state_dict": model.state_dict()}, path)


def load(path: Path, kind: type = LanguageModel) -> torch.nn.Module:
    """Load a checkpoint saved by :func:`save`, refusing one that does not match this code's world and config."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; run `make artifacts` (or `python -m helpers pretrain`) "
                                f"to create it")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("kind") != kind.__name__:
        raise ValueError(f"{path} holds a {data.get('kind')}, not a {kind.__name__}")
    if data["vocabulary"] != Tokenizer().itos:
        raise ValueError(f"{path} was trained on another vocabulary than helpers.world's; rebuild it with "
                         f"`make artifacts`")
    expected = asdict(default_config())
    if data["config"] != expected:
        diff = {k: (data["config"].get(k), v) for k, v in expected.items() if data["config"].get(k) != v}
        raise ValueError(f"{path} does not match the code's ModelConfig (saved, expected): {diff}; rebuild it with "
                         f"`make artifacts`")
    model = kind(ModelConfig(**data["config"]))
    model.load_state_dict(data["state_dict"])
    model.eval()
    return model


def load_reference(path: Path = REFERENCE_PATH) -> LanguageModel:
    """The course's reference model pi_ref, in eval mode (dropout off). Used in every lesson."""
    return load(path, LanguageModel)


def scalar_from_reference() -> ScalarModel:
    """A scalar-head model whose transformer starts from the reference model (for reward and value models)."""
    return ScalarModel.from_language_model(load_reference())
