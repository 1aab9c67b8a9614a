"""Sampling responses from a policy, the rollout layout RL trains on, and the sample-based KL between two policies.

One place for what training loops (PPO's and GRPO's rollouts, the preference set, the labeling pairs) and evaluation
both need, so that training never imports evaluation, and GRPO never imports PPO's loop.

The rollout layout (the one TRL uses): prompts left-padded to P columns, responses after them right-padded to L
columns, so every response starts at column P and everything per response token is [B, L].
Shapes: B = responses, P = prompt columns, L = response tokens, V = vocabulary. Used in every lesson.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import world
from .model import LanguageModel, sequence_logprobs
from .tokenizer import Tokenizer, pad_sequences


@dataclass
class Samples:
    """Responses sampled for a list of prompts, with what evaluation needs to know about them."""
    prompts: list[world.Prompt]
    texts: list[str]                 # decoded responses, without <eos>
    ended: list[bool]                # did the response end with <eos>?
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]    # including the <eos> when there is one


def sample_responses(model: LanguageModel, prompts: list[world.Prompt], temperature: float = 1.0,
                     seed: int = 0, top_k: int | None = None, tokenizer: Tokenizer | None = None,
                     max_new_tokens: int | None = None) -> Samples:
    """Sample one response per prompt (a seeded generator makes it reproducible); at most ``max_new_tokens``
    tokens each (default: fill the context)."""
    tok = tokenizer or Tokenizer()
    prompt_ids = [tok.encode_prompt(p.text) for p in prompts]
    gen = model.generate(prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                         generator=torch.Generator().manual_seed(seed))
    ended = [len(r) > 0 and r[-1] == tok.eos_id for r in gen.responses]
    texts = [tok.decode(r) for r in gen.responses]
    # a response that never ended is not a known behaviour, whatever its words say
    texts = [t if e else t + " ..." for t, e in zip(texts, ended)]
    return Samples(list(prompts), texts, ended, prompt_ids, gen.responses)


def rollout_layout(prompt_ids: list[list[int]], response_ids: list[list[int]],
                   pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Prompts left-padded to P columns, then responses right-padded to L columns (the layout RL trains on).

    Args:
        prompt_ids: B lists, each ``<bos> prompt <sep>``.  response_ids: B lists (each ending in ``<eos>`` if it
            ended).  pad_id: the padding id.
    Returns:
        input_ids [B, P + L], attention_mask [B, P + L], mask [B, L] (float: 1 on response tokens, ``<eos>``
        included, 0 on padding) and P, the column where every response starts.
    """
    P, L, B = max(len(p) for p in prompt_ids), max(len(r) for r in response_ids), len(prompt_ids)
    input_ids = torch.full((B, P + L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + L), dtype=torch.long)
    mask = torch.zeros((B, L))
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[i, P - len(p):P + len(r)] = torch.tensor(p + r)
        attention_mask[i, P - len(p):P + len(r)] = 1
        mask[i, :len(r)] = 1
    return input_ids, attention_mask, mask, P


def response_logprobs(model: LanguageModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, context: int,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log-probs of the response tokens and the next-token logits that gave them, at ``temperature``.

    Args:
        input_ids, attention_mask: [B, P + L] in the rollout layout (responses start at column ``context`` = P).
    Returns:
        logprobs [B, L] and logits [B, L, V] (already divided by the temperature).
    Used in lessons 03 and 05.
    """
    # position t predicts token t + 1, so the logits for response tokens start one column before them
    logits = model(input_ids, attention_mask)[:, context - 1:-1] / temperature   # [B, L, V]
    logprobs = torch.log_softmax(logits, -1).gather(2, input_ids[:, context:, None]).squeeze(2)
    return logprobs, logits


@torch.no_grad()
def sequence_kl(policy: LanguageModel, other: LanguageModel, samples: Samples, temperature: float = 1.0) -> float:
    """KL(policy || other) at the sequence level: the mean over the policy's samples of
    log pi(y|x) - log pi_other(y|x) (the k1 estimator; unbiased, noisy per sample)."""
    batch = pad_sequences(samples.prompt_ids, samples.response_ids, policy.cfg.pad_id)
    logp = sequence_logprobs(policy(batch.input_ids, batch.attention_mask) / temperature, batch.input_ids,
                             batch.response_mask)
    logq = sequence_logprobs(other(batch.input_ids, batch.attention_mask) / temperature, batch.input_ids,
                             batch.response_mask)
    return float((logp - logq).mean())
