"""Tiny models and an easy preference set, shared by the tests of the training loops (fast, seeded)."""
import dataclasses

import torch

from helpers import world
from helpers.checkpoint import default_config
from helpers.model import LanguageModel, ScalarModel


def tiny_config():
    """One block, 16 wide: trains in milliseconds, still the course's vocabulary and context."""
    return dataclasses.replace(default_config(), n_embd=16, n_head=2, n_layer=1)


def tiny_language_model(seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(tiny_config())


def tiny_scalar_model(seed: int = 0) -> ScalarModel:
    torch.manual_seed(seed)
    return ScalarModel(tiny_config())


def clean_pairs(split: str, n: int) -> list[world.PreferencePair]:
    """Correct answer preferred to an insult: an easy, noiseless preference set."""
    ps = [p for p in world.prompts(split) if p.category == "answerable"][:n]
    return [world.PreferencePair(p.text, world.response(p, "correct"), world.response(p, "insult")) for p in ps]
