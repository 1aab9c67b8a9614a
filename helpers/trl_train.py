"""The course's data and model trained by TRL: ``DPOTrainer`` on the course preference set, ``GRPOTrainer`` with a
course reward as a Python reward function, one process or several (``torchrun``), offline.

- :func:`preference_dataset`: ``PreferencePair`` rows -> a ``datasets.Dataset`` with TRL's ``prompt`` /
  ``chosen`` / ``rejected`` columns, in the course's layout (``<bos> prompt <sep>``, `` response``; TRL adds
  ``<eos>``).
- :func:`train_trl_dpo`: the reference exported to a local folder (:func:`helpers.hf_export.save_pretrained`), the
  policy and the reference both loaded from it and the reference passed explicitly (TRL 1.16 would otherwise
  rebuild it from the model's *path*: a model held only in memory has none), trained, converted back to a course
  :class:`~helpers.model.LanguageModel`.
- :func:`train_trl_grpo`: the same for GRPO with ``reward_function(course_reward)``.
- :data:`NAMES`: every course option and metric next to TRL's name for it (``tests/test_bridge.py`` checks each
  TRL name against the installed TRL, so its API churn fails a test instead of a lesson).
- ``python -m helpers.trl_train dpo ...``: the same DPO run as a script, for ``torchrun --standalone
  --nproc_per_node 2`` (each process checks the world size it was started with).

The settings mirror the course's :class:`helpers.dpo.DPOConfig` (AdamW at a constant learning rate, no warm-up, no
weight decay, gradient clipping at 1, sum of response log-probs), so the two loops differ only where
:data:`NAMES` says so. Used in lesson 06.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import hf_export  # sets HF_HUB_OFFLINE before transformers is imported
from . import world
from .model import LanguageModel
from .tokenizer import Tokenizer

import datasets  # noqa: E402
import torch  # noqa: E402
import trl  # noqa: E402
from transformers import PrinterCallback  # noqa: E402

datasets.disable_progress_bars()


# ----------------------------------------------------------------------------------------------------------------
# the course's options and metrics under TRL's names

# (course name, TRL name, where TRL has it, note). "where": a TRL config class (the name is one of its fields), a
# trainer's logged metrics ("dpo log", "grpo log": the name is a key of a short run's log), or "-" (TRL has none).
NAMES: tuple[tuple[str, str, str, str], ...] = (
    # DPO options (helpers.dpo.DPOConfig -> trl.DPOConfig)
    ("DPOConfig.beta", "beta", "DPOConfig", "same meaning; TRL's default is 0.1, the course's 0.5"),
    ("DPOConfig.lr", "learning_rate", "DPOConfig",
     "also set lr_scheduler_type='constant' (TRL decays linearly by default)"),
    ("DPOConfig.weight_decay", "weight_decay", "DPOConfig", ""),
    ("DPOConfig.batch_size", "per_device_train_batch_size", "DPOConfig",
     "pairs per step = per_device_train_batch_size x processes x gradient_accumulation_steps"),
    ("DPOConfig.max_epochs", "num_train_epochs", "DPOConfig", ""),
    ("DPOConfig.max_steps", "max_steps", "DPOConfig", ""),
    ("DPOConfig.eval_every", "eval_steps", "DPOConfig", "with eval_strategy='steps'"),
    ("DPOConfig.patience", "load_best_model_at_end", "DPOConfig",
     "with transformers.EarlyStoppingCallback(early_stopping_patience=...) and metric_for_best_model='eval_loss'"),
    ("DPOConfig.nll_weight", "loss_weights", "DPOConfig",
     "loss_type=['sigmoid', 'sft'], loss_weights=[1, nll_weight]; TRL's 'sft' averages over all chosen tokens of "
     "the batch, the course averages each response's tokens, then the responses"),
    ("(gradient clipping at 1)", "max_grad_norm", "DPOConfig", "1.0 in both"),
    ("(no activation checkpointing)", "activation_checkpointing", "DPOConfig",
     "TRL turns it on by default (formerly gradient_checkpointing): off here, the model is tiny"),
    ("DPOConfig.seed", "seed", "DPOConfig", "TRL's data order differs from the course's for the same seed"),
    ("dpo_loss", "loss_type", "DPOConfig", "loss_type='sigmoid' (the default)"),
    ("ipo_loss", "loss_type", "DPOConfig", "loss_type='ipo'; TRL averages IPO's log-ratios over tokens"),
    ("cdpo_loss(label_smoothing)", "label_smoothing", "DPOConfig",
     "no cDPO in TRL 1.16: the sigmoid loss ignores label_smoothing ('robust' and 'exo_pair' use it differently)"),
    ("kto_loss", "KTOTrainer", "trl", "a trainer of its own, on unpaired examples"),
    ("simpo_loss", "CPOTrainer", "trl.experimental.cpo", "CPOConfig(loss_type='simpo', cpo_alpha=0)"),
    ("orpo_loss", "ORPOTrainer", "trl.experimental.orpo", ""),
    ("(reference log-probs computed once)", "precompute_ref_log_probs", "DPOConfig",
     "off by default: TRL runs the reference on every batch"),
    # DPO metrics (helpers.dpo.METRICS): the same names
    ("loss", "loss", "dpo log", ""),
    ("rewards/chosen", "rewards/chosen", "dpo log", "beta x (log pi - log pi_ref) of the chosen, batch mean"),
    ("rewards/rejected", "rewards/rejected", "dpo log", ""),
    ("rewards/accuracies", "rewards/accuracies", "dpo log", ""),
    ("rewards/margins", "rewards/margins", "dpo log", ""),
    ("logps/chosen", "logps/chosen", "dpo log", "summed over response tokens in both"),
    ("logps/rejected", "logps/rejected", "dpo log", ""),
    ("eval_loss (validation)", "eval_loss", "-", "logged with eval_strategy='steps' and an eval_dataset"),
    # GRPO options (the course's GRPO, lesson 05) and PPO (lesson 03)
    ("responses per prompt", "num_generations", "GRPOConfig", "TRL's default is 8"),
    ("KL penalty beta", "beta", "GRPOConfig", "TRL's default is 0: no reference model and no KL term"),
    ("clip range epsilon", "epsilon", "GRPOConfig", "0.2 in both"),
    ("sampling temperature", "temperature", "GRPOConfig", ""),
    ("longest response", "max_completion_length", "GRPOConfig", "the course: the context left after the prompt"),
    ("advantage scaling", "scale_rewards", "GRPOConfig", "'group' divides by the group's std (GRPO's paper)"),
    ("loss aggregation", "loss_type", "GRPOConfig",
     "TRL's default 'dapo' averages over all tokens of the batch; 'grpo' = the course's length_normalise=True, "
     "'dr_grpo' = False"),
    ("GRPOConfig.minibatch_size", "per_device_train_batch_size", "GRPOConfig",
     "samples per step = per_device_train_batch_size x processes x steps_per_generation"),
    ("GRPOConfig.epochs", "num_iterations", "GRPOConfig", ""),
    ("reward function", "reward_funcs", "GRPOTrainer", "a Python function (prompts, completions, ...) -> floats"),
    ("PPO (lesson 03)", "PPOTrainer", "-", "removed from TRL in 1.13: use OpenRLHF or verl (README, scaling out)"),
    # GRPO metrics
    ("mean reward", "reward", "grpo log", ""),
    ("reward spread within a group", "reward_std", "grpo log", ""),
    ("groups with equal rewards", "frac_reward_zero_std", "grpo log", "their advantages are 0: no signal"),
    ("policy/clipfrac", "clip_ratio/region_mean", "grpo log", "also clip_ratio/low_mean, clip_ratio/high_mean"),
    ("response length", "completions/mean_length", "grpo log", ""),
    ("missing-EOS rate", "completions/clipped_ratio", "grpo log", "responses cut at max_completion_length"),
    ("entropy", "entropy", "grpo log", ""),
    ("objective/kl", "kl", "grpo log", "logged only with beta > 0 (k3 estimate, in the loss)"),
)


def trl_names(where: str) -> list[str]:
    """The TRL names :data:`NAMES` lists under ``where`` (e.g. ``"DPOConfig"``, ``"grpo log"``)."""
    return sorted({trl_name for _, trl_name, w, _ in NAMES if w == where})


def names_table(logs: dict[str, list[dict]] | None = None) -> str:
    """:data:`NAMES` as a markdown table; with ``logs`` ({"dpo log": history, ...}), each logged metric's last value
    from those runs."""
    rows = ["| course | TRL | where | last value | note |", "| --- | --- | --- | --- | --- |"]
    for course, name, where, note in NAMES:
        value = ""
        if logs and where in logs:
            seen = [row[name] for row in logs[where] if name in row]
            value = f"{seen[-1]:.4g}" if seen else "not logged"
        rows.append(f"| {course} | `{name}` | {where} | {value} | {note} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------------
# data

def preference_dataset(pairs: Sequence[world.PreferencePair]) -> datasets.Dataset:
    """The course preference rows as TRL's standard (non-conversational) preference dataset."""
    return datasets.Dataset.from_dict({
        "prompt": [hf_export.prompt_text(p.prompt) for p in pairs],
        "chosen": [hf_export.response_text(p.chosen) for p in pairs],
        "rejected": [hf_export.response_text(p.rejected) for p in pairs],
    })


def prompt_dataset(prompts: Sequence[world.Prompt]) -> datasets.Dataset:
    """Prompts as TRL's prompt-only dataset; ``course_prompt`` carries the plain text to the reward function."""
    return datasets.Dataset.from_dict({"prompt": [hf_export.prompt_text(p.text) for p in prompts],
                                       "course_prompt": [p.text for p in prompts]})


def reward_function(course_reward: Callable[[list[world.Prompt], list[str]], Sequence[float]]) -> Callable:
    """A course reward ``(prompts, texts) -> [B]`` as a TRL reward function.

    The completions are decoded with the course tokenizer from their ids (TRL's own text drops special tokens, which
    would hide a stray ``<sep>`` that the course's strict parser calls malformed).
    """
    tokenizer = Tokenizer()

    def course_reward_function(prompts, completions, completion_ids, course_prompt, **_) -> list[float]:
        found = [world.find_prompt(text) for text in course_prompt]
        texts = [tokenizer.decode(ids) for ids in completion_ids]
        return [float(r) for r in course_reward(found, texts)]

    course_reward_function.__name__ = getattr(course_reward, "__name__", type(course_reward).__name__)
    return course_reward_function


def gold_reward(prompts: list[world.Prompt], texts: list[str]) -> list[float]:
    """The world's gold reward in the ``(prompts, texts) -> [B]`` form :func:`reward_function` takes."""
    return [world.gold_reward(p, t) for p, t in zip(prompts, texts)]


# ----------------------------------------------------------------------------------------------------------------
# training

@dataclass(frozen=True)
class TRLSettings:
    beta: float = 0.5           # the course DPO's default
    lr: float = 3e-4            # AdamW, constant (the course's)
    batch_size: int = 64        # pairs (DPO) or responses (GRPO) per optimiser step, over all processes
    max_steps: int = 20         # short: full-length runs belong to `make bench`
    nll_weight: float = 0.0     # > 0: TRL's extra "sft" loss term with this weight (the course's nll_weight)
    seed: int = 0
    # GRPO only
    num_generations: int = 8    # responses per prompt (a group)
    grpo_beta: float = 0.0      # TRL's default: no KL term, no reference model (the course's GRPO uses 0.04)
    steps_per_generation: int = 1  # optimiser steps per sampled batch (the course's GRPO: 256 samples, 4 x 64)


def _common_args(s: TRLSettings, output_dir: str, world_size: int) -> dict:
    if s.batch_size % world_size:
        raise ValueError(f"batch_size {s.batch_size} is not divisible by the {world_size} processes")
    return dict(output_dir=output_dir, per_device_train_batch_size=s.batch_size // world_size,
                gradient_accumulation_steps=1, max_steps=s.max_steps, learning_rate=s.lr,
                lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                optim="adamw_torch", seed=s.seed, logging_steps=1, save_strategy="no", report_to="none",
                use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, activation_checkpointing=False, disable_tqdm=True,
                dataloader_num_workers=0, dataloader_pin_memory=False, ddp_find_unused_parameters=False)


def world_size() -> int:
    """Processes in this run: torchrun's WORLD_SIZE, 1 when started plainly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class TRLResult:
    policy: LanguageModel          # the trained policy, back in the course's format (eval mode)
    history: list[dict]            # TRL's log, one row per step (trainer.state.log_history)
    seconds: float                 # the training loop alone (trainer.train())
    steps: int
    world_size: int


def train_trl_dpo(pairs: Sequence[world.PreferencePair], reference_folder: Path | str,
                  settings: TRLSettings = TRLSettings(), output_dir: str | None = None, **options) -> TRLResult:
    """DPO with TRL's ``DPOTrainer``: policy and reference loaded from ``reference_folder`` (see
    :func:`helpers.hf_export.save_pretrained`), the reference passed explicitly as ``ref_model``. ``options`` go to
    ``trl.DPOConfig`` as they are (e.g. ``loss_type=["ipo"]``)."""
    policy, tokenizer = hf_export.load_pretrained(reference_folder)
    reference, _ = hf_export.load_pretrained(reference_folder)
    n = world_size()
    with tempfile.TemporaryDirectory(prefix="trl-dpo-") as tmp:
        args = trl.DPOConfig(**{**_common_args(settings, output_dir or tmp, n), "beta": settings.beta,
                                "loss_type": ["sigmoid", "sft"] if settings.nll_weight > 0 else ["sigmoid"],
                                "loss_weights": [1.0, settings.nll_weight] if settings.nll_weight > 0 else None,
                                "max_length": policy.config.n_positions, **options})
        trainer = trl.DPOTrainer(model=policy, ref_model=reference, args=args,
                                 train_dataset=preference_dataset(pairs), processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)   # the log is returned, not printed
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    trained = trainer.accelerator.unwrap_model(trainer.model)
    return TRLResult(hf_export.from_hf_model(trained), list(trainer.state.log_history), seconds,
                     trainer.state.global_step, n)


def train_trl_grpo(prompts: Sequence[world.Prompt], reference_folder: Path | str,
                   course_reward: Callable = gold_reward, settings: TRLSettings = TRLSettings(batch_size=32),
                   output_dir: str | None = None, **options) -> TRLResult:
    """GRPO with TRL's ``GRPOTrainer`` and a course reward (``(prompts, texts) -> [B]``) as its reward function.

    ``batch_size`` counts responses: ``batch_size / num_generations`` prompts per step. The policy (and the
    reference TRL builds when ``grpo_beta > 0``) gets the course's positions
    (:func:`helpers.hf_export.use_course_positions`): GRPO left-pads its prompts. ``options`` go to
    ``trl.GRPOConfig`` as they are (e.g. ``loss_type="grpo"``).
    """
    policy, tokenizer = hf_export.load_pretrained(reference_folder)
    hf_export.use_course_positions(policy)
    tokenizer.padding_side = "left"
    longest_prompt = max(len(tokenizer(hf_export.prompt_text(p.text))["input_ids"]) for p in prompts)
    n = world_size()
    with tempfile.TemporaryDirectory(prefix="trl-grpo-") as tmp:
        args = trl.GRPOConfig(**{**_common_args(settings, output_dir or tmp, n), "beta": settings.grpo_beta,
                                 "num_generations": settings.num_generations,
                                 "steps_per_generation": settings.steps_per_generation,
                                 "max_completion_length": policy.config.n_positions - longest_prompt,
                                 "temperature": 1.0, "top_k": 0, "shuffle_dataset": True, **options})
        trainer = trl.GRPOTrainer(model=policy, reward_funcs=reward_function(course_reward), args=args,
                                  train_dataset=prompt_dataset(prompts), processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        if trainer.ref_model is not None:
            # with beta > 0 TRL rebuilds the reference from the folder: a plain GPT-2, so it needs the positions too
            hf_export.use_course_positions(trainer.accelerator.unwrap_model(trainer.ref_model))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    trained = trainer.accelerator.unwrap_model(trainer.model)
    return TRLResult(hf_export.from_hf_model(trained), list(trainer.state.log_history), seconds,
                     trainer.state.global_step, n)


# ----------------------------------------------------------------------------------------------------------------
# the short runs lesson 06 shows (the full-length ones are `make bench`'s)

LESSON_DPO = TRLSettings(beta=0.5, lr=3e-4, batch_size=64, max_steps=20, nll_weight=0.5)
LESSON_GRPO = TRLSettings(lr=3e-4, batch_size=64, max_steps=8, num_generations=8, grpo_beta=0.04,
                          steps_per_generation=4)


def lesson_runs(reference_folder: Path | str, course_reward: Callable) -> dict[str, TRLResult]:
    """Lesson 06's TRL runs: DPO at the course's chosen loss (beta 0.5, NLL weight 0.5) for 20 steps of 64 pairs on
    the course preference set, and GRPO with ``course_reward`` for 8 steps (two batches of 32 prompts x 8
    responses, four steps each), both from the exported reference in ``reference_folder``."""
    from .reward import load_preferences
    return {"dpo": train_trl_dpo(load_preferences("train"), reference_folder, LESSON_DPO),
            "grpo": train_trl_grpo(list(world.prompts("train")), reference_folder, course_reward, LESSON_GRPO,
                                   loss_type="grpo")}


# ----------------------------------------------------------------------------------------------------------------
# the script torchrun starts

def main(argv: list[str] | None = None) -> None:
    """``python -m helpers.trl_train dpo --folder F --out O.pt [--pairs N --steps S --batch B]``: train on the
    first N course preference pairs; process 0 writes the course-format weights, the log and the world size."""
    from .reward import load_preferences

    parser = argparse.ArgumentParser(prog="python -m helpers.trl_train")
    parser.add_argument("trainer", choices=["dpo"])
    parser.add_argument("--folder", required=True, help="the exported reference (hf_export.save_pretrained)")
    parser.add_argument("--out", required=True, help="where process 0 writes the result (torch.save)")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="pairs per step, over all processes")
    parser.add_argument("--expect-world-size", type=int, default=None)
    a = parser.parse_args(argv)
    torch.set_num_threads(1)
    n = world_size()
    if a.expect_world_size is not None and n != a.expect_world_size:
        raise SystemExit(f"started as {n} process(es), expected {a.expect_world_size}")
    result = train_trl_dpo(load_preferences("train")[:a.pairs], a.folder,
                           TRLSettings(batch_size=a.batch, max_steps=a.steps))
    import torch.distributed as dist
    actual = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if actual != n:
        raise SystemExit(f"WORLD_SIZE says {n}, torch.distributed runs {actual}")
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({"state_dict": result.policy.state_dict(), "history": json.dumps(result.history),
                    "world_size": actual, "steps": result.steps}, a.out)


if __name__ == "__main__":
    main()
