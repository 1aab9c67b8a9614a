"""Reading the curves: the runs behind lesson 05's clinic on the training signals practitioners ask about most.

Each signal is shown by a real run of the course's own code, logged under the names TRL logs:

- DPO (:func:`helpers.dpo.train_dpo`) at TRL's default beta = 0.1, without lesson 04's NLL term: the chosen
  response's implicit reward ``rewards/chosen`` negative and falling while ``rewards/accuracies`` rises;
- GRPO with a completion limit shorter than the world's answers (``max_new_tokens`` = 6): ``completions/clipped_ratio``
  near 1, and what it does to the reward;
- GRPO's loss near zero while its reward moves, ``frac_reward_zero_std`` climbing towards 1, and GRPO without its KL
  term are read from lesson 05's verifiable-reward runs (:mod:`helpers.verifiable`), not rerun here.

``make artifacts`` stores them in ``helpers/artifacts/clinic.json`` (:func:`build_clinic`, under a minute).
Used in lesson 05.
"""
from __future__ import annotations

import random
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import dpo, grpo, world
from .checkpoint import ARTIFACTS, load_results, save_results
from .reward import load_preferences
from .verifiable import verifiable_reward
from .threads import one_thread

CLINIC_PATH = ARTIFACTS / "clinic.json"
DPO_CLINIC = dpo.DPOConfig(beta=0.1, lr=3e-4, nll_weight=0.0, max_epochs=10 ** 6, max_steps=160, eval_every=10,
                           patience=10 ** 9, seed=0)
SHORT_LIMIT = replace(grpo.GRPOConfig(), iterations=10, max_new_tokens=6, seed=0)


def build_clinic(path: Path = CLINIC_PATH) -> dict:
    """Run the clinic's DPO and short-limit GRPO runs (one thread, seeded) and save their histories to ``path``."""
    from .pretrain import load_reference
    with one_thread():
        reference = load_reference()
        val_pairs = random.Random(0).sample(load_preferences("validation"), 256)
        dpo_run = dpo.train_dpo(load_preferences("train"), val_pairs, DPO_CLINIC, reference=reference,
                                desc="DPO, beta = 0.1, no NLL")
        answerable = [p for p in world.prompts("train") if p.category == "answerable"]
        short = grpo.train_grpo(None, reference, verifiable_reward, answerable, SHORT_LIMIT,
                                desc="GRPO, 6-token limit")
        out = {"dpo": {"config": asdict(DPO_CLINIC), "history": dpo_run.history},
               "short_limit": {"config": asdict(SHORT_LIMIT), "history": short.history}}
    save_results(out, path)
    return out


def load_clinic(path: Path = CLINIC_PATH) -> dict:
    """The committed clinic runs (``python -m helpers build clinic``)."""
    return load_results(path, "clinic")
