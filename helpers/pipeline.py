"""The whole alignment pipeline, end to end, on the course model: labels -> reward model -> PPO, DPO and GRPO ->
scorecards. Each step is the course's own function from the lesson that teaches it; this module only wires them
together with one set of settings, so that lesson 06 can run the pipeline live (:data:`LIVE`, half a minute) and
``make artifacts`` can run it at full length (:data:`FULL`, ``python -m helpers build pipeline``), storing both
runs' figures so that the lesson can check that its live run repeats the stored one.

1. **Labels** (lesson 02): pairs of the reference's own samples on training prompts, judged in a
   :class:`~helpers.labeling.LabelingSession` — by you in the widget, and by the simulated annotator
   (``world.Annotator`` at the course's tau) for the rest (:func:`labels_preferring`) — written to label files and
   exported as preference pairs.
2. **Reward model** (lesson 02): the course architecture (:class:`~helpers.reward.RewardModel`) trained on those
   pairs, early-stopped on the course's validation pairs.
3. **PPO** (lesson 03) against that reward model; **DPO** (lesson 04) on the same pairs; **GRPO** (lesson 05) with the
   verifiable reward (no labels at all). Each run's checkpoint is chosen by the course's selection rule
   (:mod:`helpers.selection`), never by gold.
4. **Scorecards** (every lesson) of the reference and the three policies on the test split.
Used in lesson 06.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import critic, dpo, grpo, labeling, rlhf, selection, world
from .checkpoint import ARTIFACTS, load_results, save_results
from .evaluate import PROTOCOL_SPLIT, gap_closed, scorecard
from .model import LanguageModel
from .reward import (COURSE_TAU, RewardModel, RewardTrainConfig, live_validation_pairs, load_preferences,
                     pairwise_accuracy, train_reward_model)
from .verifiable import verifiable_reward
from .threads import one_thread

PIPELINE_PATH = ARTIFACTS / "pipeline.json"


@dataclass(frozen=True)
class PipelineConfig:
    # the defaults are lesson 06's live run (about 30 s on one thread): every stage a few steps, enough to move
    prompt_stride: int = 2       # label a pair of samples for every n-th training prompt (2: about 330 pairs)
    # lesson 02's trainer: few steps at lesson 02's live learning rate, early-stopped on the validation loss
    reward: RewardTrainConfig = RewardTrainConfig(max_epochs=50, max_steps=30, eval_every=10, patience=3, lr=1e-3)
    # lesson 03's loop at the full run's KL coefficient (beta 0.2); the selection rule checks the last iteration
    ppo: rlhf.PPOConfig = rlhf.PPOConfig(iterations=3, beta=0.2, eval_every=3, eval_prompts=128)
    # lesson 04's choice of loss: beta 0.5 with an NLL term on the chosen response; the selection rule every 10 steps
    dpo: dpo.DPOConfig = dpo.DPOConfig(beta=0.5, lr=3e-4, nll_weight=0.5, max_epochs=50, max_steps=20, eval_every=10,
                                       patience=2)
    grpo: grpo.GRPOConfig = grpo.GRPOConfig(iterations=6)   # the verifiable reward: no labels at all
    seed: int = 0


LIVE = PipelineConfig()      # lesson 06, live: short runs of every stage, within the notebook's 90 s budget
FULL = PipelineConfig(        # `make artifacts`: twice the labels, every stage trained as long as its lesson's bench
    prompt_stride=1,
    reward=RewardTrainConfig(max_epochs=50, max_steps=400, eval_every=25, patience=4, lr=1e-3),
    ppo=rlhf.PPOConfig(iterations=15, beta=0.2),
    dpo=dpo.DPOConfig(beta=0.5, lr=3e-4, nll_weight=0.5, max_epochs=50, max_steps=300, eval_every=40, patience=3),
    grpo=grpo.GRPOConfig(iterations=25))


def label_items(reference: LanguageModel, cfg: PipelineConfig = LIVE) -> list[labeling.Item]:
    """The pairs to judge: two samples of the reference for every ``cfg.prompt_stride``-th training prompt."""
    return labeling.make_items(reference, list(world.prompts("train"))[::cfg.prompt_stride], seeds=(11, 12))


def simulate_labels(items: list[labeling.Item], folder: str | Path, seed: int = 0) -> int:
    """The simulated annotator (course tau) labels every item, in its own label file in ``folder``."""
    session = labeling.LabelingSession(items, folder, annotator="simulated", seed=seed)
    try:
        return labeling.simulate(session, world.Annotator(tau=COURSE_TAU, seed=seed))
    finally:
        session.close()


def labels_preferring(labels: list[labeling.Label], annotator: str) -> list[labeling.Label]:
    """One label per item: ``annotator``'s where they gave one, the other annotators' for the rest (so that your
    few labels from the widget replace the simulated annotator's on the same pairs, and it labels the others)."""
    theirs = {lab.item for lab in labels if lab.annotator == annotator}
    return [lab for lab in labels if lab.annotator == annotator or lab.item not in theirs]


@dataclass
class PipelineResult:
    policies: dict[str, LanguageModel]       # "reference", "ppo", "dpo", "grpo"
    reward_model: RewardModel
    figures: dict = field(default_factory=dict)   # per stage: what it used and what it reached (JSON-ready)


def run(reference: LanguageModel, pairs: list[world.PreferencePair], cfg: PipelineConfig = LIVE,
        desc: str = "") -> PipelineResult:
    """Reward model, PPO, DPO and GRPO from ``pairs``; the figures of every stage on the test split.

    Runs on one torch thread: the thread count changes float rounding, and one run must repeat another exactly."""
    with one_thread():
        return _run(reference, pairs, cfg, desc)


def _run(reference: LanguageModel, pairs: list[world.PreferencePair], cfg: PipelineConfig, desc: str
         ) -> PipelineResult:
    torch.manual_seed(cfg.seed)
    figures: dict = {"labels": {"pairs": len(pairs)}}
    select = lambda p: selection.validation_win_rate(p, reference).value   # noqa: E731  (the course's rule)
    val_pairs = live_validation_pairs()

    start = time.perf_counter()
    rm = train_reward_model(pairs, val_pairs, cfg.reward, init=RewardModel.from_language_model(reference),
                            desc=f"{desc}reward model")
    figures["reward_model"] = {"train_s": time.perf_counter() - start, "best_step": rm.best_step,
                               "test_accuracy": pairwise_accuracy(rm.model, load_preferences("test")[::5])}

    train_prompts, val_prompts = list(world.prompts("train")), list(world.prompts("validation"))
    start = time.perf_counter()
    ppo = rlhf.train_ppo(None, reference, rm.model, train_prompts, val_prompts, cfg.ppo, desc=f"{desc}PPO")
    figures["ppo"] = {"train_s": time.perf_counter() - start, "best_iteration": ppo.best_iteration}

    start = time.perf_counter()
    dpo_run = dpo.train_dpo(pairs, val_pairs, cfg.dpo, reference=reference, desc=f"{desc}DPO", select=select)
    figures["dpo"] = {"train_s": time.perf_counter() - start, "best_step": dpo_run.best_step}

    start = time.perf_counter()
    grpo_run = grpo.train_grpo(None, reference, verifiable_reward, train_prompts, cfg.grpo, desc=f"{desc}GRPO")
    figures["grpo"] = {"train_s": time.perf_counter() - start}

    policies = {"reference": reference, "ppo": ppo.policy, "dpo": dpo_run.policy, "grpo": grpo_run.policy}
    best = world.best_gold_reward(PROTOCOL_SPLIT)
    ref_gold = None
    for name, policy in policies.items():
        card = scorecard(policy, reference if name != "reference" else None)
        ref_gold = card.gold_reward if name == "reference" else ref_gold
        figures.setdefault(name, {}).update(
            {k: v for k, v in card.figures().items() if k in ("gold_reward", "kl", "win_rate", "malformed",
                                                               "harmful_compliance", "false_answer", "fabrication",
                                                               "insult")},
            gold_reward_ci=card.gold_reward_ci, gap_closed=gap_closed(card.gold_reward, ref_gold, best))
    return PipelineResult(policies, rm.model, figures)


def simulated_pairs(reference: LanguageModel, folder: str | Path, cfg: PipelineConfig = LIVE
                    ) -> list[world.PreferencePair]:
    """Step 1 without a person: the simulated annotator labels every item into ``folder``; its pairs."""
    simulate_labels(label_items(reference, cfg), folder, cfg.seed)
    return labeling.export_pairs(labeling.read_labels(folder)).pairs


# ----------------------------------------------------------------------------------------------------------------
# RL from AI feedback: DPO on the constitutional critic's labels against DPO on the annotator's

RLAIF_SAMPLES = 6            # reference samples per training prompt, as many as the course preference set has
RLAIF_DPO = dpo.DPOConfig(beta=0.5, lr=3e-4, nll_weight=0.5, max_epochs=4, max_steps=200, eval_every=40, patience=3)
# lesson 06's live check: one sample per training prompt (about 400 AI pairs), two epochs of 64-pair steps (12),
# the selection rule applied once at the end (and to the reference at step 0)
RLAIF_LIVE_SAMPLES = 1
RLAIF_LIVE = dpo.DPOConfig(beta=0.5, lr=3e-4, nll_weight=0.5, max_epochs=2, eval_every=12, patience=1)


def rlaif_comparison(reference: LanguageModel, samples_per_prompt: int = RLAIF_SAMPLES,
                     cfg: dpo.DPOConfig = RLAIF_DPO, desc: str = "") -> dict:
    """The critic revises ``samples_per_prompt`` reference samples per training prompt (as many as the course
    preference set has); DPO on those AI pairs against DPO on as many of the course's annotator pairs (drawn at
    random), same settings, each checkpoint chosen by the selection rule; figures on the test split."""
    with one_thread():
        annotator = world.Annotator(tau=COURSE_TAU)
        pairs, recall = critic.sampled_ai_pairs(reference, list(world.prompts("train")), samples_per_prompt, seed=0)
        val_pairs, _ = critic.sampled_ai_pairs(reference, list(world.prompts("validation")), 2, seed=100)
        human = random.Random(0).sample(load_preferences("train"), len(pairs))
        human_val = random.Random(1).sample(load_preferences("validation"), len(val_pairs))
        ai, ann = critic.label_agreement(pairs, annotator), critic.label_agreement(human, annotator)
        best, ref_gold = world.best_gold_reward(PROTOCOL_SPLIT), scorecard(reference).gold_reward
        select = lambda p: selection.validation_win_rate(p, reference).value   # noqa: E731
        runs = {}
        for name, train, val in (("ai", pairs, val_pairs), ("annotator", human, human_val)):
            start = time.perf_counter()
            result = dpo.train_dpo(train, val, cfg, reference=reference, desc=f"{desc}DPO on {name} labels",
                                   select=select)
            seconds = time.perf_counter() - start
            card = scorecard(result.policy, reference)
            figures = card.figures()
            runs[name] = {"gap_closed": gap_closed(card.gold_reward, ref_gold, best), "best_step": result.best_step,
                          "train_s": seconds, "gold_reward_ci": card.gold_reward_ci,
                          **{k: figures[k] for k in ("gold_reward", "kl", "harmful_compliance", "false_answer",
                                                      "fabrication", "insult", "malformed")}}
    return {"pairs": len(pairs), "critic_recall": recall,
            "label_gold_agreement": ai.gold, "label_annotator_agreement": ai.annotator,
            "annotator_label_gold_agreement": ann.gold, "annotator_label_annotator_agreement": ann.annotator,
            "principles": {name: sum(name in p.annotator.split(":")[1].split("+") for p in pairs)
                           for name in critic.PRINCIPLES},
            "dpo_gap_closed": runs["ai"]["gap_closed"], "annotator_dpo_gap_closed": runs["annotator"]["gap_closed"],
            "ai_dpo": runs["ai"], "annotator_dpo": runs["annotator"]}


PARTS = ("live", "full", "rlaif", "rlaif_live")   # what build_pipeline stores, one key each


def _build_part(name: str) -> dict:
    """One stored part: a pipeline run ("live", "full") or an RLAIF comparison ("rlaif", "rlaif_live")."""
    import tempfile

    from .pretrain import load_reference
    reference = load_reference()
    if name in ("live", "full"):
        cfg = LIVE if name == "live" else FULL
        with tempfile.TemporaryDirectory(prefix="pipeline-") as folder:
            pairs = simulated_pairs(reference, folder, cfg)
        start = time.perf_counter()
        result = run(reference, pairs, cfg, desc=f"{name}: ")
        return {"figures": result.figures, "seconds": time.perf_counter() - start, "config": asdict(cfg)}
    if name == "rlaif":
        return {**rlaif_comparison(reference, desc="RLAIF: "), "config": asdict(RLAIF_DPO),
                "samples_per_prompt": RLAIF_SAMPLES}
    if name == "rlaif_live":
        return {**rlaif_comparison(reference, RLAIF_LIVE_SAMPLES, RLAIF_LIVE, desc="RLAIF live: "),
                "config": asdict(RLAIF_LIVE), "samples_per_prompt": RLAIF_LIVE_SAMPLES}
    raise ValueError(f"unknown part {name!r}: one of {PARTS}")


def build_pipeline(path: Path = PIPELINE_PATH, parts: tuple[str, ...] = PARTS) -> dict:
    """``make artifacts``: the pipeline at full length and the live run lesson 06 repeats, and the RLAIF comparison
    at full length and live; their figures, each with the settings that made it. ``parts`` rebuilds only those and
    keeps the others from ``path`` (each part is computed from its own seed, so none depends on another)."""
    stored = load_pipeline(path) if path.exists() and set(parts) != set(PARTS) else {}
    stored = {name: stored[name] for name in PARTS if name in stored}   # parts no longer built are dropped
    for name in parts:
        stored[name] = _build_part(name)
    save_results(stored, path)
    return stored


def load_pipeline(path: Path = PIPELINE_PATH) -> dict:
    """The figures :func:`build_pipeline` stored: ``{"live": ..., "full": ..., "rlaif": ..., "rlaif_live": ...}``."""
    return load_results(path, "pipeline")
