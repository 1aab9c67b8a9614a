"""Supervised fine-tuning (SFT): teach a model by showing it good responses to imitate.

SFT is plain next-token training, the same loss as pretraining, on a curated set of (prompt, response)
demonstrations that someone judged to be good. Here the demonstrations come from the world's corpus with only the
best behaviour per category (``world.good_demonstrations_mix()``): correct answers, refusals of harmful requests,
and "i do not know" to questions nobody could answer. Pass another ``mix`` to see what happens when the
demonstrators make mistakes, or ``docs`` (for example the "internet" corpus after a filter) to train on those.

Used in lesson 01, which shows what SFT fixes and what it cannot. Later lessons align the reference model, not
this fine-tune.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from . import world
from .model import LanguageModel
from .pretrain import PretrainConfig, train_language_model
from .tokenizer import Tokenizer


@dataclass(frozen=True)
class SFTConfig:
    """How much to fine-tune: the defaults take a few seconds on two CPU cores."""
    n_demonstrations: int = 2000  # curated documents; enough to cover every fact and sum a few times over
    steps: int = 100              # the loss on demonstrations is nearly flat by then; takes a few seconds on a CPU
    batch_size: int = 64          # demonstrations per step
    lr: float = 3e-3              # peak AdamW learning rate: a third of pretraining's, since we start from a
                                  # trained model; 1e-3 needs about twice the steps for the same result
    warmup: int = 10              # linear warm-up steps, then cosine decay to 10 % of the peak
    weight_decay: float = 0.01    # as in pretraining
    seed: int = 0                 # picks the demonstrations and the batches: same seed, same weights


def demonstrations(n: int, seed: int = 0, mix: dict | None = None) -> list[tuple[str, str]]:
    """``n`` (prompt, response) demonstrations: the best behaviour for each prompt unless ``mix`` says otherwise.

    Args:
        n: how many documents.
        seed: which prompts and paraphrases.
        mix: behaviour frequencies per category, as ``world.CORPUS_MIX``; default ``world.good_demonstrations_mix()``.
    """
    return world.corpus(n, seed=seed, mix=mix or world.good_demonstrations_mix())


def supervised_finetune(model: LanguageModel, cfg: SFTConfig | None = None, mix: dict | None = None,
                        tokenizer: Tokenizer | None = None,
                        docs: list[tuple[str, str]] | None = None) -> tuple[LanguageModel, list[float]]:
    """Fine-tune a copy of ``model`` on demonstrations with the next-token loss (mean over response tokens).

    The given model (normally the reference pi_ref) is not touched.

    Args:
        model: the starting point; it is deep-copied.
        cfg: sizes, learning rate and seed (default :class:`SFTConfig`).
        mix: behaviour frequencies of the demonstrations; default only the best behaviour per category.
        tokenizer: default ``Tokenizer()``.
        docs: (prompt, response) documents to train on instead of ``demonstrations(...)``, such as a corpus
            with some documents filtered out (lesson 01); ``mix`` and ``cfg.n_demonstrations`` are then unused.
    Returns:
        (the fine-tuned copy in eval mode, the training loss at each step).

    Used in lesson 01.
    """
    cfg = cfg or SFTConfig()
    policy = copy.deepcopy(model)
    if docs is None:
        docs = demonstrations(cfg.n_demonstrations, cfg.seed, mix)
    elif mix is not None:
        raise ValueError("pass either docs or mix: a mix only says how to sample demonstrations")
    if not docs:
        raise ValueError("supervised_finetune needs at least one document")
    train_cfg = PretrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                               weight_decay=cfg.weight_decay, seed=cfg.seed)
    losses = train_language_model(policy, docs, train_cfg, tokenizer or Tokenizer(), desc="supervised fine-tuning")
    policy.eval()
    return policy, losses
