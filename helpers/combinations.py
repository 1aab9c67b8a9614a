"""Methods combined: supervised fine-tuning, then DPO from the fine-tuned model (lesson 05).

The usual recipe since InstructGPT (Ouyang et al. 2022) starts preference optimisation from a supervised fine-tuned
model, and DPO's paper (Rafailov et al. 2023, section 4) takes that SFT model as pi_ref. Here: lesson 01's SFT on
curated demonstrations (:func:`helpers.sft.supervised_finetune`, its defaults), then the controlled comparison's DPO
run (beta 0.3 with lesson 04's NLL term, 240 steps of 64 of the course's pairs,
:func:`helpers.comparison.train_dpo_run`) with the SFT model as its start and its reference; beside it SFT alone
and DPO alone (the same DPO run from pi_ref). The course's pairs are the reference's samples, so for the SFT model
they are off-policy: as they would be for anyone reusing a preference set. Each is scored on the test split by the
course's scorecard, KL to pi_ref. (DPO then GRPO is measured in :mod:`helpers.rlvr`.)

``make artifacts`` stores the result in ``helpers/artifacts/combinations.json`` (:func:`build_combinations`, a few
minutes on two cores).
Used in lesson 05.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .checkpoint import ARTIFACTS, load_results, save_results
from .comparison import SETTINGS, train_dpo_run
from .evaluate import scorecard
from .model import LanguageModel
from .reward import load_preferences
from .sft import SFTConfig, supervised_finetune
from .threads import one_thread

COMBINATIONS_PATH = ARTIFACTS / "combinations.json"
DPO_BETA = 0.3       # the comparison's chosen DPO strength


def dpo_run(start: LanguageModel, reference: LanguageModel | None = None) -> LanguageModel:
    """The comparison's chosen DPO run (beta 0.3, 240 steps of the course's pairs) from a copy of ``start``, against
    ``reference`` (default: ``start`` itself, as DPO's paper takes its SFT model); in eval mode."""
    policy = copy.deepcopy(start)
    train_dpo_run(policy, reference if reference is not None else start, load_preferences("train"), DPO_BETA,
                  SETTINGS["full"])
    return policy.eval()


def build_combinations(path: Path = COMBINATIONS_PATH) -> dict:
    """Score pi_ref, SFT alone, DPO alone and SFT then DPO on the test split (one thread, seeded) and save them:
    {policy: {gold_reward, gold_reward_ci, kl, rates...}}."""
    from .pretrain import load_reference
    with one_thread():
        reference = load_reference()
        sft_model, _ = supervised_finetune(reference, SFTConfig(seed=0))
        dpo_alone, sft_then_dpo = dpo_run(reference), dpo_run(sft_model)
        out = {}
        for name, policy in (("reference", reference), ("sft", sft_model), ("dpo", dpo_alone),
                             ("sft_then_dpo", sft_then_dpo)):
            card = scorecard(policy.eval(), reference)
            out[name] = card.figures() | {"gold_reward_ci": card.gold_reward_ci, "kl": card.kl}
    save_results(out, path)
    return out


def load_combinations(path: Path = COMBINATIONS_PATH) -> dict:
    """The committed figures (``python -m helpers build combinations``)."""
    return load_results(path, "combinations")
