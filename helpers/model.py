"""A tiny causal transformer, written to be read top to bottom.

- :class:`ModelConfig`: every size and special id, with why.
- :class:`Transformer`: embeddings, causal self-attention blocks, final layer norm -> hidden states.
- :class:`LanguageModel`: the transformer plus a next-token head; ``generate`` samples responses, keeping each
  block's keys and values in a :class:`KVCache` so every step computes only the new token.
- :class:`ScalarModel`: the transformer plus a scalar head, for reward models and value functions.
- :func:`token_logprobs` and :func:`sequence_logprobs`: log-probabilities of given tokens.

Shapes: B = batch size, T = sequence length, C = embedding width, H = heads, V = vocabulary size.
Used in every lesson.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 308   # words of the tiny world plus 4 special tokens
    block_size: int = 64    # longest sequence: a prompt (<= 20 tokens) plus the longest response (<= 36)
    n_layer: int = 2        # two blocks are enough to copy facts from the prompt and look up sums
    n_head: int = 4         # heads of width n_embd / n_head = 16
    n_embd: int = 64        # small enough to pretrain in about two minutes on two CPU cores
    dropout: float = 0.0    # off: 200k pretraining documents leave nothing to regularise; set > 0 to see why RL
                            # code must run the policy in eval mode (lesson 03)
    pad_id: int = 0         # padding; never equal to eos_id
    eos_id: int = 3         # end of response

    def __post_init__(self):
        if self.pad_id == self.eos_id:
            raise ValueError("pad_id must differ from eos_id: a padded position would look like an ended response")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")


class SelfAttention(nn.Module):
    """Multi-head causal self-attention that also ignores padding keys."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.out = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # [B, T, C] -> [B, H, T, C/H]
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            # generation: the keys and values of earlier positions are kept, so only new tokens are computed
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # [B, H, T, C/H] -> [B, T, C]
        return F.dropout(self.out(y), self.dropout, self.training)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.n_embd)
        self.attention = SelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), allowed, cache)
        return x + self.mlp(self.norm2(x))


def _check_mask(mask: torch.Tensor, name: str, empty: str) -> None:
    """Raise ValueError unless ``mask`` [B, T] holds only 0 and 1 with at least one 1 in every row."""
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{name} must hold only 0 and 1, got the values {sorted(set(mask.unique().tolist()))}")
    rows = (~mask.bool().any(-1)).nonzero().flatten().tolist()
    if rows:
        raise ValueError(f"{name} row {rows[0]} {empty} (all zeros; {len(rows)} such row(s) in the batch)")


class Transformer(nn.Module):
    """Token and position embeddings, ``n_layer`` blocks, a final layer norm: ids [B, T] -> hidden [B, T, C]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.position_embedding = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.n_embd)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: "KVCache | None" = None) -> torch.Tensor:
        """With a ``cache`` (generation), ``input_ids`` are only the new tokens, ``attention_mask`` covers the
        earlier ones too, and the output is the new tokens' hidden states."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0                            # positions already computed
        S = past + T                                                               # keys: earlier and new
        if B == 0:
            raise ValueError("empty batch")
        if S > self.cfg.block_size:
            raise ValueError(f"sequence of {S} tokens is longer than the context of {self.cfg.block_size}")
        if attention_mask is None and cache is None:
            attention_mask = (input_ids != self.cfg.pad_id).long()
        if attention_mask is None or attention_mask.shape != (B, S):
            raise ValueError(f"attention_mask {None if attention_mask is None else tuple(attention_mask.shape)} "
                             f"must be [B, T] = {(B, S)}, covering the cached tokens too")
        if cache is None:  # a caller's own mask (generate builds its masks itself: no check per token)
            _check_mask(attention_mask, "attention_mask", "has no real token")
        # positions count real tokens only, so left- and right-padded copies of a sequence give the same output
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        # a query may see earlier non-padding keys, and always itself (so padding rows never divide by zero)
        causal = torch.ones(S, S, dtype=torch.bool, device=input_ids.device).tril()[past:]   # [T, S]
        allowed = causal & attention_mask.bool()[:, None, :]                     # [B, T, S]
        allowed = allowed | torch.eye(S, dtype=torch.bool, device=input_ids.device)[past:]
        x = self.token_embedding(input_ids) + self.position_embedding(positions)
        for i, block in enumerate(self.blocks):
            x = block(x, allowed[:, None], cache.layers[i] if cache is not None else None)  # [B, 1, T, S]: all heads
        if cache is not None:
            cache.length = S
        return self.norm(x)


@dataclass
class KVCache:
    """Each block's attention keys and values for the tokens seen so far, so that ``generate`` computes each new
    token once instead of re-running the whole sequence at every step."""
    layers: list[list]
    length: int = 0

    @classmethod
    def empty(cls, n_layer: int) -> "KVCache":
        return cls([[] for _ in range(n_layer)])


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class LanguageModel(nn.Module):
    """The policy: a transformer with a next-token head (tied to the token embedding)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = Transformer(cfg)
        self.apply(_init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """Next-token logits [B, T, V]: position t scores the token at t + 1."""
        hidden = self.transformer(input_ids, attention_mask, cache)
        return hidden @ self.transformer.token_embedding.weight.T

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], max_new_tokens: int | None = None, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> "Generation":
        """Sample one response per prompt, all prompts at once.

        Prompts are left-padded so every row's next token sits in the last column; positions skip the padding,
        so a prompt's samples do not depend on what else is in the batch. A row stops at ``<eos>``.

        Args:
            prompts: B lists of ids, each ``<bos> prompt <sep>`` (see ``Tokenizer.encode_prompt``).
            max_new_tokens: at most this many response tokens (default: fill the context).
            temperature: logits are divided by it before sampling (> 0).
            top_k: if given, sample only among the k most likely tokens.
            generator: a seeded ``torch.Generator`` makes the samples reproducible.
        Returns:
            a :class:`Generation` with each response's ids (ending in ``<eos>`` if it stopped) and the log-prob
            the sampler gave each sampled token.
        """
        if len(prompts) == 0:
            raise ValueError("generate needs at least one prompt")
        if empty := [i for i, p in enumerate(prompts) if len(p) == 0]:
            raise ValueError(f"prompt {empty[0]} is empty: each prompt is <bos> prompt words <sep> "
                             f"(Tokenizer.encode_prompt)")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if max_new_tokens is not None and not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens must be an int >= 1 (or None to fill the context), got "
                             f"{max_new_tokens!r}")
        if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        longest = max(len(p) for p in prompts)
        if longest >= self.cfg.block_size:
            raise ValueError(f"a prompt of {longest} tokens leaves no room in the context of {self.cfg.block_size}")
        room = self.cfg.block_size - longest
        max_new_tokens = room if max_new_tokens is None else min(max_new_tokens, room)
        B = len(prompts)
        ids = torch.full((B, longest), self.cfg.pad_id, dtype=torch.long)
        mask = torch.zeros((B, longest), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, longest - len(p):] = 1
        done = torch.zeros(B, dtype=torch.bool)
        responses: list[list[int]] = [[] for _ in range(B)]
        logprobs: list[list[float]] = [[] for _ in range(B)]
        cache = KVCache.empty(self.cfg.n_layer)
        new = ids                                       # the prompts first, then one sampled token per step
        for _ in range(max_new_tokens):
            logits = self(new, mask, cache)[:, -1, :] / temperature                 # [B, V]
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            logp = torch.log_softmax(logits, dim=-1)
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)  # [B]
            token_logp = logp.gather(1, token[:, None]).squeeze(1)
            for i in torch.nonzero(~done).flatten().tolist():
                responses[i].append(int(token[i]))
                logprobs[i].append(float(token_logp[i]))
            # finished rows keep receiving padding, masked out of attention
            token = token.masked_fill(done, self.cfg.pad_id)
            new = token[:, None]
            mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
            done = done | (token == self.cfg.eos_id)
            if bool(done.all()):
                break
        return Generation(responses, logprobs)


@dataclass
class Generation:
    """What ``generate`` returns: per prompt, the response ids and the sampler's log-prob of each."""
    responses: list[list[int]]
    logprobs: list[list[float]]


class ScalarModel(nn.Module):
    """A transformer with a scalar head: one number per position. A reward model reads it at the last real token
    (the ``<eos>``); a value function reads it at every position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = Transformer(cfg)
        self.head = nn.Linear(cfg.n_embd, 1)
        self.apply(_init_weights)

    @classmethod
    def from_language_model(cls, lm: LanguageModel) -> "ScalarModel":
        """Start from a pretrained language model's transformer (the usual way to build a reward model)."""
        model = cls(lm.cfg)
        model.transformer.load_state_dict(lm.transformer.state_dict())
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar outputs [B, T], one per position."""
        return self.head(self.transformer(input_ids, attention_mask)).squeeze(-1)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The output at each row's last real token [B]: for a finished response that is ``<eos>``.

        Expects right padding (as ``helpers.tokenizer.pad_sequences`` makes).
        """
        values = self(input_ids, attention_mask)                                 # [B, T]
        last = attention_mask.sum(-1) - 1                                          # [B]
        return values.gather(1, last[:, None]).squeeze(1)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each next token: entry [b, t] is log p(input_ids[b, t + 1] | input_ids[b, :t + 1]).

    Args:
        logits: [B, T, V] from a :class:`LanguageModel` (divide by the sampling temperature first).
        input_ids: [B, T].
    Returns:
        [B, T - 1]
    """
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be [B, T, V] with [B, T] = input_ids "
                         f"{tuple(input_ids.shape)}")
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)                     # [B, T-1, V]
    return logp.gather(2, input_ids[:, 1:, None]).squeeze(2)


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """log pi(response | prompt): the **sum** of the response tokens' log-probs (not the mean).

    Args:
        logits: [B, T, V] (divide by the sampling temperature first).
        input_ids: [B, T].
        response_mask: [B, T], 1 on response tokens including ``<eos>``, 0 on ``<bos>``, prompt, ``<sep>``
            and padding. The shift to next-token targets happens here.
    Returns:
        [B]
    """
    if response_mask.shape != input_ids.shape:
        raise ValueError(f"response_mask {tuple(response_mask.shape)} must have the shape of input_ids "
                         f"{tuple(input_ids.shape)}")
    if bool(response_mask[:, 0].any()):
        raise ValueError("response_mask is 1 at position 0: the first token (<bos>) has no log-prob; "
                         "the mask should mark response tokens only")
    _check_mask(response_mask, "response_mask", "marks no response token: its log-prob would be 0")
    per_token = token_logprobs(logits, input_ids)                                 # [B, T-1]
    return (per_token * response_mask[:, 1:].to(per_token.dtype)).sum(-1)

