"""A word-level tokenizer for the tiny world, and the collate function that turns text into padded batches.

A sequence is laid out as ``<bos> prompt words <sep> response words <eos> <pad> <pad> ...`` (right padding).
The ``response_mask`` is 1 on every response token including ``<eos>``, and 0 on ``<bos>``, the prompt, ``<sep>``
and padding: the convention every log-prob function of the course uses. Used in every lesson.

Shapes: B = batch size, T = sequence length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import world

PAD, BOS, SEP, EOS = "<pad>", "<bos>", "<sep>", "<eos>"
SPECIALS = (PAD, BOS, SEP, EOS)


class Tokenizer:
    """Maps the world's words to ids and back. PAD, BOS, SEP and EOS are four different ids (PAD != EOS)."""

    def __init__(self, words: list[str] | None = None):
        words = list(words if words is not None else world.vocabulary())
        clash = set(words) & set(SPECIALS)
        if clash:
            raise ValueError(f"vocabulary words clash with special tokens: {sorted(clash)}")
        self.itos = list(SPECIALS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.sep_id, self.eos_id = (self.stoi[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.itos)

    def encode_words(self, text: str) -> list[int]:
        """Ids of the words of ``text`` (split on whitespace); an unknown word raises a ValueError naming it."""
        ids = []
        for w in text.split():
            if w not in self.stoi or w in SPECIALS:
                raise ValueError(f"unknown word {w!r} in {text!r}: the tiny world's vocabulary has "
                                 f"{len(self.itos) - len(SPECIALS)} words (see helpers.world.vocabulary())")
            ids.append(self.stoi[w])
        return ids

    def encode_prompt(self, prompt: str) -> list[int]:
        """``<bos> prompt <sep>``: the context a response is generated from."""
        return [self.bos_id] + self.encode_words(prompt) + [self.sep_id]

    def encode_response(self, response: str) -> list[int]:
        """``response <eos>``."""
        return self.encode_words(response) + [self.eos_id]

    def decode(self, ids) -> str:
        """Text of a response's ids, up to the first ``<eos>``.

        A sampler can (rarely) draw ``<pad>``, ``<bos>`` or ``<sep>`` inside a response; they are written out as
        words, so the strict parser calls such a response malformed instead of hiding the tokens.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes the ids of one response, a 1-D tensor; got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        # one check per call: a negative id would silently index from the end of the vocabulary
        if ids and not (0 <= min(ids) and max(ids) < len(self.itos)):
            bad = next(i for i in ids if not 0 <= i < len(self.itos))
            raise ValueError(f"ids must lie in [0, {len(self.itos)}) (the vocabulary size); got {bad}")
        return " ".join(self.itos[i] for i in ids)


@dataclass
class Batch:
    """Right-padded token ids and their masks, all [B, T]."""
    input_ids: torch.Tensor       # [B, T] long: <bos> prompt <sep> response <eos> <pad>...
    attention_mask: torch.Tensor  # [B, T] long: 1 on real tokens, 0 on padding
    response_mask: torch.Tensor   # [B, T] long: 1 on response tokens and <eos>, 0 elsewhere


def pad_sequences(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
                  max_len: int | None = None) -> Batch:
    """Join prompts and responses (already ids) into one right-padded :class:`Batch`.

    Args:
        prompt_ids: B lists, each ``<bos> ... <sep>``.
        response_ids: B lists, each the response ids (normally ending in ``<eos>``; may be empty).
        pad_id: the padding id.
        max_len: if given, a sequence longer than this raises a ValueError.
    """
    if len(prompt_ids) == 0:
        raise ValueError("cannot make a batch from an empty list")
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    T = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids))
    if max_len is not None and T > max_len:
        raise ValueError(f"a sequence of {T} tokens is longer than the model's context of {max_len}")
    B = len(prompt_ids)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r, dtype=torch.long)
        attention_mask[i, :n] = 1
        response_mask[i, len(p):n] = 1
    return Batch(input_ids, attention_mask, response_mask)


def encode_pairs(tokenizer: Tokenizer, prompts: list[str], responses: list[str],
                 max_len: int | None = None) -> Batch:
    """Text prompts and responses to one right-padded :class:`Batch`."""
    return pad_sequences([tokenizer.encode_prompt(p) for p in prompts],
                         [tokenizer.encode_response(r) for r in responses], tokenizer.pad_id, max_len)


@dataclass
class PreferenceBatch:
    """A batch of preference pairs: chosen and rejected sequences, each a :class:`Batch` of [B, T]."""
    chosen: Batch
    rejected: Batch


def collate_preferences(pairs: list[world.PreferencePair], tokenizer: Tokenizer,
                        max_len: int | None = None) -> PreferenceBatch:
    """The course's one collate function: PreferencePair rows to padded ids and masks.

    Chosen and rejected are padded separately (each to its own longest sequence). Used in lessons 02, 04, 06.
    """
    if len(pairs) == 0:
        raise ValueError("cannot collate an empty list of preference pairs")
    prompts = [p.prompt for p in pairs]
    return PreferenceBatch(
        chosen=encode_pairs(tokenizer, prompts, [p.chosen for p in pairs], max_len),
        rejected=encode_pairs(tokenizer, prompts, [p.rejected for p in pairs], max_len),
    )
