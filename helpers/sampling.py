"""Sampling responses from a policy, and the sample-based KL between two policies.

One place for what training loops (PPO's rollouts, the preference set, the labeling pairs) and evaluation both need,
so that training never imports evaluation. Used in every lesson.
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
                     seed: int = 0, top_k: int | None = None, tokenizer: Tokenizer | None = None) -> Samples:
    """Sample one response per prompt (a seeded generator makes it reproducible)."""
    tok = tokenizer or Tokenizer()
    prompt_ids = [tok.encode_prompt(p.text) for p in prompts]
    gen = model.generate(prompt_ids, temperature=temperature, top_k=top_k,
                         generator=torch.Generator().manual_seed(seed))
    ended = [len(r) > 0 and r[-1] == tok.eos_id for r in gen.responses]
    texts = [tok.decode(r) for r in gen.responses]
    # a response that never ended is not a known behaviour, whatever its words say
    texts = [t if e else t + " ..." for t, e in zip(texts, ended)]
    return Samples(list(prompts), texts, ended, prompt_ids, gen.responses)


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
