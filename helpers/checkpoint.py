"""Saving and loading model weights: one file format for every checkpoint of the course (the reference model, the
reward model, a learner's own), with the config and vocabulary it belongs to, loaded with ``weights_only=True``.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .model import LanguageModel, ModelConfig
from .tokenizer import Tokenizer

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def default_config(tokenizer: Tokenizer | None = None) -> ModelConfig:
    """The model config that matches the world's vocabulary."""
    tok = tokenizer or Tokenizer()
    return ModelConfig(vocab_size=len(tok), pad_id=tok.pad_id, eos_id=tok.eos_id)


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
