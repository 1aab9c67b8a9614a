"""``make bench`` section for the bridge to Hugging Face / TRL (lesson 06): ``bridge.*``.

- ``logit_max_abs_diff``: the exported GPT-2 against the course model on every test-split prompt with every candidate
  response, in right-padded batches and in left-padded ones with the course's positions (real tokens only).
- ``two_process_matches``: the TRL DPO script under ``torchrun --standalone --nproc_per_node 2`` (gloo, loopback)
  against one process with the same global batch: per-step losses within 1e-5, validation logits within 1e-4.
- Side by side on the same model, data (the course preference set), batch (64 pairs) and steps, one process: the
  course's :func:`helpers.dpo.train_dpo` and TRL's ``DPOTrainer``, both at the course's chosen loss (beta 0.5, NLL
  weight 0.5 -> TRL's ``"sft"`` term), each scored by the course scorecard. ``course_dpo_steps_per_s`` times the
  course loop from its step-0 check to its last (one validation check of 256 pairs included; the reference's
  log-probs are computed once before it), ``trl_dpo_steps_per_s`` times ``trainer.train()``, which runs the
  reference on every batch and computes its extra metrics (entropy, mean logits, token accuracy) every step.
  ``reference_forward_s_per_step``: one no-grad reference forward over a batch's chosen and rejected responses,
  what TRL spends on every step and the course once: how much of the gap it explains.
- ``lesson_trl_s``: lesson 06's two short TRL runs (:func:`helpers.trl_train.lesson_runs`) together.
- The same for GRPO with lesson 05's verifiable reward: the course's :func:`helpers.grpo.train_grpo` (256 samples per
  iteration, 4 steps of 64) against ``GRPOTrainer`` with ``steps_per_generation=4``, ``loss_type="grpo"``, beta 0.04.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .. import dpo, grpo, hf_export, trl_train, world
from ..evaluate import scorecard
from ..pretrain import PretrainConfig, load_reference
from ..reward import load_preferences
from ..tokenizer import Tokenizer, collate_preferences, encode_pairs
from ..verifiable import verifiable_reward

DPO_STEPS = 150          # at 64 pairs a step: a little over one epoch of the course preference set
DPO_SETTINGS = dict(beta=0.5, lr=3e-4, nll_weight=0.5, batch_size=64)
GRPO_ITERATIONS = 10     # the course's iterations of 32 prompts x 8 responses; TRL: 4 optimiser steps each
ROOT = Path(__file__).resolve().parents[2]


def logit_max_abs_diff(reference) -> float:
    """max |course logits - exported logits| over real tokens, right- and left-padded batches."""
    tok = Tokenizer()
    prompts, responses = [], []
    for p in world.prompts("test"):
        for text in world.candidates(p).values():
            prompts.append(p.text)
            responses.append(text)
    hf = hf_export.to_hf_model(reference)
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(prompts), 512):
            b = encode_pairs(tok, prompts[i:i + 512], responses[i:i + 512])
            real = b.attention_mask.bool()
            worst = max(worst, (reference(b.input_ids, b.attention_mask)
                                - hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits)[real].abs().max().item())
            # the same rows left-padded, with the course's positions
            ids, mask = torch.full_like(b.input_ids, tok.pad_id), torch.zeros_like(b.attention_mask)
            T = ids.shape[1]
            for r, n in enumerate(b.attention_mask.sum(-1).tolist()):
                ids[r, T - n:], mask[r, T - n:] = b.input_ids[r, :n], 1
            left = hf(input_ids=ids, attention_mask=mask, position_ids=hf_export.course_position_ids(mask)).logits
            worst = max(worst, (reference(ids, mask) - left)[mask.bool()].abs().max().item())
    return worst


def two_process_figures(folder: Path) -> dict:
    """The DPO script as two torchrun processes against one process, same global batch."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    pairs, steps, batch = 256, 6, 32
    with tempfile.TemporaryDirectory(prefix="bridge-two-") as tmp:
        out = Path(tmp) / "two.pt"
        start = time.perf_counter()
        run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "helpers.trl_train", "dpo",
                              "--folder", str(folder), "--out", str(out), "--pairs", str(pairs), "--steps",
                              str(steps), "--batch", str(batch), "--expect-world-size", "2"],
                             cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                             timeout=600)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            print(run.stderr[-3000:])
            return {"two_process_matches": False, "two_process_error": run.stderr[-300:]}
        two = torch.load(out, weights_only=True)
    one = trl_train.train_trl_dpo(load_preferences("train")[:pairs], folder,
                                  trl_train.TRLSettings(batch_size=batch, max_steps=steps))
    two_history = json.loads(two["history"])
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(one.history[:steps], two_history[:steps]))
    policy = load_reference()
    policy.load_state_dict(two["state_dict"])
    b = collate_preferences(load_preferences("validation")[:256], Tokenizer()).chosen
    with torch.no_grad():
        logit_diff = (policy(b.input_ids, b.attention_mask)
                      - one.policy(b.input_ids, b.attention_mask))[b.attention_mask.bool()].abs().max().item()
    return {"two_process_matches": bool(two["world_size"] == 2 and loss_diff <= 1e-5 and logit_diff <= 1e-4),
            "two_process_world_size": two["world_size"], "two_process_loss_max_diff": loss_diff,
            "two_process_logit_max_diff": logit_diff, "two_process_s": seconds}


def _card(policy, reference) -> dict:
    card = scorecard(policy, reference)
    return {"gold_reward": card.gold_reward, "gold_reward_ci": card.gold_reward_ci, "kl": card.kl,
            "malformed": card.rates["malformed"].value}


def reference_forward_seconds(reference, pairs, batch_size: int, batches: int = 20) -> float:
    """Mean seconds of one no-grad reference forward over ``batch_size`` pairs (chosen and rejected)."""
    tok = Tokenizer()
    total = 0.0
    for i in range(batches):
        batch = collate_preferences(pairs[i * batch_size:(i + 1) * batch_size], tok)
        start = time.perf_counter()
        with torch.no_grad():
            for side in (batch.chosen, batch.rejected):
                reference(side.input_ids, side.attention_mask)
        total += time.perf_counter() - start
    return total / batches


def dpo_figures(reference, folder: Path) -> dict:
    train = load_preferences("train")
    val = random.Random(0).sample(load_preferences("validation"), 256)
    cfg = dpo.DPOConfig(**DPO_SETTINGS, max_steps=DPO_STEPS, max_epochs=100, eval_every=DPO_STEPS, patience=1)
    course = dpo.train_dpo(train, val, cfg, reference=reference, desc="course DPO")
    course_s = course.history[-1]["seconds"] - course.history[0]["seconds"]
    settings = trl_train.TRLSettings(beta=cfg.beta, lr=cfg.lr, batch_size=cfg.batch_size, max_steps=DPO_STEPS,
                                     nll_weight=cfg.nll_weight)
    trl = trl_train.train_trl_dpo(train, folder, settings)
    course_card, trl_card = _card(course.policy, reference), _card(trl.policy, reference)
    return {
        "dpo_steps": DPO_STEPS, "dpo_batch_size": cfg.batch_size, "dpo_beta": cfg.beta,
        "dpo_nll_weight": cfg.nll_weight, "course_dpo_best_step": course.best_step,
        "course_dpo_steps_per_s": DPO_STEPS / course_s, "trl_dpo_steps_per_s": trl.steps / trl.seconds,
        "speed_ratio": (DPO_STEPS / course_s) / (trl.steps / trl.seconds),   # course / TRL
        "reference_forward_s_per_step": reference_forward_seconds(reference, train, cfg.batch_size),
        "course_dpo": course_card, "trl_dpo": trl_card,
        "trl_dpo_within_course_interval": abs(trl_card["gold_reward"] - course_card["gold_reward"])
        <= course_card["gold_reward_ci"],
        "trl_dpo_last_log": {k: v for k, v in trl.history[-2].items() if "/" in k or k == "loss"},
    }


def grpo_figures(reference, folder: Path) -> dict:
    prompts = list(world.prompts("train"))
    cfg = grpo.GRPOConfig(iterations=GRPO_ITERATIONS)
    start = time.perf_counter()
    course = grpo.train_grpo(None, reference, verifiable_reward, prompts, cfg, desc="course GRPO")
    course_s = time.perf_counter() - start
    steps_per_iteration = cfg.prompts_per_batch * cfg.group_size // cfg.minibatch_size
    settings = trl_train.TRLSettings(lr=cfg.lr, batch_size=cfg.minibatch_size, num_generations=cfg.group_size,
                                     grpo_beta=cfg.beta, steps_per_generation=steps_per_iteration,
                                     max_steps=GRPO_ITERATIONS * steps_per_iteration)
    trl = trl_train.train_trl_grpo(prompts, folder, verifiable_reward, settings, loss_type="grpo",
                                   epsilon=cfg.clip_range, max_completion_length=cfg.max_new_tokens)
    course_card, trl_card = _card(course.policy, reference), _card(trl.policy, reference)
    return {"grpo_iterations": GRPO_ITERATIONS, "grpo_steps": trl.steps,
            "course_grpo_steps_per_s": GRPO_ITERATIONS * steps_per_iteration / course_s,
            "trl_grpo_steps_per_s": trl.steps / trl.seconds,
            "grpo_speed_ratio": (GRPO_ITERATIONS * steps_per_iteration / course_s) / (trl.steps / trl.seconds),
            "course_grpo": course_card, "trl_grpo": trl_card}


def bench_bridge() -> dict:
    """{"bridge": {...}} under the benchmark contract's keys."""
    torch.set_num_threads(PretrainConfig().threads)
    reference = load_reference()
    out: dict = {"logit_max_abs_diff": logit_max_abs_diff(reference),
                 "reference": _card(reference, None) | {"kl": 0.0}}
    with tempfile.TemporaryDirectory(prefix="bridge-") as tmp:
        folder = hf_export.save_pretrained(reference, Path(tmp) / "reference")
        back = hf_export.from_hf_model(hf_export.load_pretrained(folder)[0])
        out["round_trip_exact"] = all(torch.equal(back.state_dict()[k], w) for k, w in reference.state_dict().items())
        out |= two_process_figures(folder)
        out |= dpo_figures(reference, folder)
        out |= grpo_figures(reference, folder)
        start = time.perf_counter()
        trl_train.lesson_runs(folder, verifiable_reward)
        out["lesson_trl_s"] = time.perf_counter() - start
    return {"bridge": out}
