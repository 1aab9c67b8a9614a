"""The course model and tokenizer in Hugging Face format, and back: the bridge to the libraries practitioners use.

The course's :class:`~helpers.model.LanguageModel` is a GPT-2 in all but names, so it converts to a
``transformers.GPT2LMHeadModel`` with no approximation:

=======================================  =========================================================================
course                                   GPT-2 (``GPT2Config``)
=======================================  =========================================================================
``nn.GELU()`` (exact, erf)               ``activation_function="gelu"`` (not GPT-2's usual ``"gelu_new"``, tanh)
pre-norm blocks, final layer norm        ``ln_1``, ``ln_2``, ``ln_f``, ``layer_norm_epsilon=1e-5`` (torch's default)
head tied to the token embedding         ``tie_word_embeddings=True`` (no head bias)
``nn.Linear`` weights [out, in]          ``Conv1D`` weights [in, out]: transposed on the way
q, k, v from one ``qkv`` projection      ``c_attn``, split q, k, v in the same order; scale 1/sqrt(C/H)
dropout 0                                ``resid_pdrop = embd_pdrop = attn_pdrop = 0``
positions count real tokens only         GPT-2 counts 0, 1, 2, ... over padding too, unless given ``position_ids``
=======================================  =========================================================================

The last row is the one real difference. With **right** padding (what TRL's DPO collator makes, and the course's
``pad_sequences``) real tokens sit at 0, 1, 2, ... in both, so the logits agree without help. With **left** padding
(prompts in batched generation, TRL's GRPO batches) GPT-2 shifts every position by the padding. ``generate`` in
transformers derives positions from the attention mask, but a plain forward pass does not: pass
:func:`course_position_ids`, or call :func:`use_course_positions` once on the model, which makes every forward
without ``position_ids`` derive them from the attention mask the course's way (TRL's trainers then need no change).
Padding positions themselves differ (the course lets a padding query see itself, GPT-2 masks it): their outputs are
never read, so parity is checked on real tokens.

The tokenizer becomes a ``PreTrainedTokenizerFast`` over a word-level ``tokenizers`` model with the course's ids
and its four special tokens, written into the text as the course lays a sequence out:
``<bos> prompt words <sep>`` then `` response words<eos>`` (see :func:`prompt_text`).

Used in lesson 06.
"""
from __future__ import annotations

import os
from pathlib import Path

# the course runs offline: never ask the hub for anything (set before transformers is imported)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from tokenizers import Tokenizer as WordTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from .model import LanguageModel, ModelConfig  # noqa: E402
from .tokenizer import BOS, EOS, PAD, SEP, Tokenizer  # noqa: E402

hf_logging.disable_progress_bar()   # "Loading weights" bars for a 0.4 MB model are noise in a lesson


def hf_config(cfg: ModelConfig, tokenizer: Tokenizer | None = None) -> GPT2Config:
    """The ``GPT2Config`` of a course model: every size, the exact GELU, no dropout, a tied head, the special ids."""
    tok = tokenizer or Tokenizer()
    return GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=4 * cfg.n_embd,
        activation_function="gelu",          # exact (erf) GELU, as nn.GELU(); GPT-2's default "gelu_new" is tanh
        resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        layer_norm_epsilon=1e-5,             # nn.LayerNorm's default
        scale_attn_weights=True,             # 1 / sqrt(head width), as scaled_dot_product_attention
        scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
        tie_word_embeddings=True,            # the course's head is the token embedding
        pad_token_id=tok.pad_id, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, sep_token_id=tok.sep_id,
        use_cache=True,
    )


def _block_names(i: int) -> list[tuple[str, str, bool]]:
    """(course name, GPT-2 name, transpose) for block ``i``: GPT-2's Conv1D stores Linear weights transposed."""
    c, h = f"transformer.blocks.{i}.", f"transformer.h.{i}."
    return [(c + "norm1.weight", h + "ln_1.weight", False), (c + "norm1.bias", h + "ln_1.bias", False),
            (c + "attention.qkv.weight", h + "attn.c_attn.weight", True),
            (c + "attention.qkv.bias", h + "attn.c_attn.bias", False),
            (c + "attention.out.weight", h + "attn.c_proj.weight", True),
            (c + "attention.out.bias", h + "attn.c_proj.bias", False),
            (c + "norm2.weight", h + "ln_2.weight", False), (c + "norm2.bias", h + "ln_2.bias", False),
            (c + "mlp.0.weight", h + "mlp.c_fc.weight", True), (c + "mlp.0.bias", h + "mlp.c_fc.bias", False),
            (c + "mlp.2.weight", h + "mlp.c_proj.weight", True), (c + "mlp.2.bias", h + "mlp.c_proj.bias", False)]


def weight_names(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """Every course weight with its GPT-2 name and whether it is transposed: the whole conversion in one table."""
    names = [("transformer.token_embedding.weight", "transformer.wte.weight", False),
             ("transformer.position_embedding.weight", "transformer.wpe.weight", False)]
    for i in range(cfg.n_layer):
        names += _block_names(i)
    return names + [("transformer.norm.weight", "transformer.ln_f.weight", False),
                    ("transformer.norm.bias", "transformer.ln_f.bias", False)]


def to_hf_model(model: LanguageModel) -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` with the course model's weights (copied), in eval mode."""
    cfg = model.cfg
    if cfg.dropout:
        raise ValueError("export a model with dropout 0: the course trains its policies without dropout")
    hf = GPT2LMHeadModel(hf_config(cfg))
    ours, theirs = model.state_dict(), hf.state_dict()
    new = {}
    for course_name, hf_name, transpose in weight_names(cfg):
        w = ours[course_name]
        new[hf_name] = w.t().contiguous() if transpose else w.clone()
        if new[hf_name].shape != theirs[hf_name].shape:
            raise ValueError(f"{course_name} {tuple(w.shape)} does not fit {hf_name} {tuple(theirs[hf_name].shape)}")
    new["lm_head.weight"] = new["transformer.wte.weight"]
    missing = set(theirs) - set(new)
    if missing:
        raise ValueError(f"GPT-2 weights with no course counterpart: {sorted(missing)}")
    hf.load_state_dict(new)
    hf.tie_weights()
    return hf.eval()


def from_hf_model(hf: GPT2LMHeadModel) -> LanguageModel:
    """The course model with a GPT-2's weights (the way back: score a TRL-trained policy with the scorecard)."""
    c = hf.config
    tok = Tokenizer()
    if c.activation_function != "gelu" or not c.tie_word_embeddings:
        raise ValueError(f"not a course-shaped GPT-2: activation {c.activation_function!r}, tied head "
                         f"{c.tie_word_embeddings}")
    cfg = ModelConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer, n_head=c.n_head,
                      n_embd=c.n_embd, pad_id=tok.pad_id, eos_id=tok.eos_id)
    model = LanguageModel(cfg)
    theirs = hf.state_dict()
    new = {}
    for course_name, hf_name, transpose in weight_names(cfg):
        w = theirs[hf_name].detach()
        new[course_name] = w.t().contiguous() if transpose else w.clone()
    model.load_state_dict(new)
    return model.eval()


def to_hf_tokenizer(tokenizer: Tokenizer | None = None) -> PreTrainedTokenizerFast:
    """The course's word-level tokenizer as a ``PreTrainedTokenizerFast``: the same ids, the four special tokens.

    Words are split on whitespace; a special token is recognised anywhere in the text (so ``"four<eos>"`` is two
    tokens). There is no unknown-word token: like the course's, an unknown word is an error.
    """
    tok = tokenizer or Tokenizer()
    word_level = WordTokenizer(models.WordLevel(vocab=dict(tok.stoi), unk_token=PAD))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.decoder = decoders.WordPiece(prefix="##", cleanup=False)   # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   sep_token=SEP, padding_side="right", model_max_length=64)
    return fast


def check_known_words(fast: PreTrainedTokenizerFast, text: str) -> None:
    """Raise like the course tokenizer does if ``text`` holds a word outside the vocabulary (the fast tokenizer's
    stand-in for unknown words is ``<pad>``, which a well-formed text never contains)."""
    ids = fast(text)["input_ids"]
    if fast.pad_token_id in ids and PAD not in text:
        raise ValueError(f"unknown word in {text!r}: see helpers.world.vocabulary()")


def prompt_text(prompt: str) -> str:
    """A prompt as TRL's ``prompt`` column holds it: ``<bos> words <sep>``, the course's generation context."""
    return f"{BOS} {prompt} {SEP}"


def response_text(response: str) -> str:
    """A response as TRL's ``chosen`` / ``rejected`` / completion columns hold it: a leading space (TRL joins prompt
    and response with ``+``); TRL appends the ``<eos>`` itself."""
    return f" {response}"


def course_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """The course's positions for a [B, S] attention mask: real tokens count 0, 1, 2, ...; padding sits at 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _positions_hook(module, args, kwargs):
    if kwargs.get("position_ids") is not None:
        return None
    mask = kwargs.get("attention_mask")
    ids = kwargs.get("input_ids", args[0] if args else None)
    if mask is None or mask.dim() != 2 or ids is None:
        return None
    T = ids.shape[1]
    kwargs["position_ids"] = course_position_ids(mask)[:, -T:]   # with a cache the mask also covers earlier tokens
    return args, kwargs


def use_course_positions(hf: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """Make every forward of ``hf`` that gets an attention mask but no ``position_ids`` use the course's positions
    (a forward pre-hook on the GPT-2 backbone, which TRL's fused log-prob head also calls). In memory only:
    ``save_pretrained`` keeps plain GPT-2, which is exact on right-padded batches."""
    if not getattr(hf.transformer, "_course_positions", False):
        hf.transformer.register_forward_pre_hook(_positions_hook, with_kwargs=True)
        hf.transformer._course_positions = True
    return hf


def save_pretrained(model: LanguageModel, folder: Path | str) -> Path:
    """Write the exported model and tokenizer to ``folder`` (``config.json``, ``model.safetensors``, the tokenizer
    files): a local path any ``from_pretrained`` (and TRL's trainers) can load, offline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    to_hf_model(model).save_pretrained(folder)
    to_hf_tokenizer().save_pretrained(folder)
    return folder


def load_pretrained(folder: Path | str) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """The GPT-2 and tokenizer saved in a local ``folder`` (never the hub), the model in eval mode."""
    folder = Path(folder)
    hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
    return hf.eval(), PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
