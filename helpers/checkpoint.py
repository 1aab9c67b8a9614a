"""Saving and loading model weights: one file format for every checkpoint of the course (the reference model, the
reward model, a learner's own), with the config and vocabulary it belongs to, loaded with ``weights_only=True``;
and the committed results of longer runs as JSON (:func:`save_results`, :func:`load_results`).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from .model import LanguageModel, ModelConfig
from .tokenizer import Tokenizer

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
REBUILD = "rebuild it with `make artifacts` (or save your own model again with helpers.checkpoint.save)"


class CheckpointError(ValueError):
    """A file that is not a checkpoint this code can use; the message names the file and how to rebuild it."""


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
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, text, truncated, a folder, or objects weights_only=True refuses to unpickle
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path} is not a readable checkpoint (loaded with weights_only=True: {reason}); "
                              f"{REBUILD}") from e
    if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in
                                             (("config", dict), ("vocabulary", list), ("state_dict", dict))):
        raise CheckpointError(f"{path} is not a checkpoint saved by helpers.checkpoint.save (a dict with config, "
                              f"vocabulary, kind and state_dict); {REBUILD}")
    if data.get("kind") != kind.__name__:
        raise CheckpointError(f"{path} holds a {data.get('kind')}, not a {kind.__name__}")
    if data["vocabulary"] != Tokenizer().itos:
        raise CheckpointError(f"{path} was trained on another vocabulary than helpers.world's; {REBUILD}")
    expected = asdict(default_config())
    if data["config"] != expected:
        diff = {k: (data["config"].get(k), v) for k, v in expected.items() if data["config"].get(k) != v}
        raise CheckpointError(f"{path} does not match the code's ModelConfig (saved, expected): {diff}; {REBUILD}")
    # nan or inf weights would load silently and turn every output into nan
    bad = [name for name, w in data["state_dict"].items() if torch.is_tensor(w) and w.is_floating_point()
           and not bool(torch.isfinite(w).all())]
    if bad:
        raise CheckpointError(f"{path} holds weights that are not finite (nan or inf) in {', '.join(bad[:5])}; "
                              f"{REBUILD}")
    model = kind(ModelConfig(**data["config"]))
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as e:  # missing, unexpected or misshapen weights
        raise CheckpointError(f"{path} does not hold a {kind.__name__}'s weights ({str(e).strip()[:300]}); "
                              f"{REBUILD}") from e
    model.eval()
    return model


def save_results(results: dict, path: Path) -> None:
    """Write the results of a run as JSON (sorted keys, indented, so that a rebuild's diff is readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=True, allow_nan=True) + "\n")


def load_results(path: Path, build: str) -> dict:
    """Results saved by :func:`save_results`; when the file is missing, say which ``python -m helpers build``
    command (``build``) makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}; run `python -m helpers build {build}` (or `make artifacts`)")
    return json.loads(path.read_text())
