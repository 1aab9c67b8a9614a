"""``make bench`` sections for reward modeling (lesson 02): the course preference set, the course reward model and
Best-of-N, ``preferences.*``, ``reward_model.*`` and ``best_of_n.*``.

Protocol (issue 4): the course reward model was early-stopped on the validation pairs; every figure here is on the
test split: accuracy against the annotator's test labels next to the Bayes-optimal ceiling, agreement with the gold
ordering (on the test pairs, the reference's own samples, and on every pair of the test prompts' candidate
responses), and on pairs that differ only in whether the answer is right. The section also retrains the reward
model from its recipe and checks that it reproduces the committed one (``build_s``), and times the notebook's live
training of a plain reward model (``train_s``, with its figures under ``live``).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .. import reward, world
from ..pretrain import PretrainConfig, load_reference
from .reference import timed


def right_vs_wrong_probe(prompts: list[world.Prompt], variants: int = 3) -> tuple[list, list, list]:
    """(prompts, correct responses, wrong responses): for each answerable prompt, ``variants`` pairs worded the same
    way that differ only in whether the answer is right."""
    rows = [(p, world.response(p, "correct", v), world.response(p, "wrong", v))
            for p in prompts if p.category == "answerable" for v in range(variants)]
    return tuple(list(x) for x in zip(*rows))


def reward_model_figures(model) -> dict:
    """Test-split figures of one reward model."""
    test_pairs = reward.load_preferences("test")
    test_prompts = list(world.prompts("test"))
    gaps = [world.gold_reward(world.find_prompt(p.prompt), p.chosen)
            - world.gold_reward(world.find_prompt(p.prompt), p.rejected) for p in test_pairs]
    ceiling = world.bayes_accuracy(gaps, reward.COURSE_TAU)
    accuracy = reward.pairwise_accuracy(model, test_pairs)
    on_samples = reward.gold_agreement(model, [world.find_prompt(p.prompt) for p in test_pairs],
                                       [p.chosen for p in test_pairs], [p.rejected for p in test_pairs])
    clear = reward.gold_agreement(model, [world.find_prompt(p.prompt) for p in test_pairs],
                                  [p.chosen for p in test_pairs], [p.rejected for p in test_pairs], min_gap=0.1)
    on_candidates = reward.gold_agreement(model, *reward.candidate_pairs(test_prompts))
    right_wrong = reward.gold_agreement(model, *right_vs_wrong_probe(test_prompts))
    return {"heldout_accuracy": accuracy, "bayes_accuracy": ceiling, "accuracy_vs_ceiling": accuracy / ceiling,
            "gold_agreement_samples": on_samples["all"], "gold_agreement_samples_by_kind": on_samples["by_kind"],
            "gold_agreement_samples_gap_over_0.1": clear["all"],
            "gold_agreement_samples_gap_over_0.1_by_kind": clear["by_kind"],
            "gold_agreement_candidates": on_candidates["all"],
            "gold_agreement_candidates_by_kind": on_candidates["by_kind"],
            "right_vs_wrong": right_wrong["all"], "right_vs_wrong_by_kind": right_wrong["by_kind"]}


def bench_reward_model() -> dict:
    torch.set_num_threads(PretrainConfig().threads)
    committed = reward.load_reward_model()
    figures = reward_model_figures(committed)
    pairs = {s: reward.load_preferences(s) for s in ("train", "validation")}
    start = time.perf_counter()
    live = reward.train_reward_model(pairs["train"], reward.live_validation_pairs(), reward.LIVE_CONFIG)
    live_s = time.perf_counter() - start
    live_figures = reward_model_figures(live.model)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        reward.build_reward_model(Path(tmp) / "reward_model.pt")
        build_s = time.perf_counter() - start
        fresh = torch.load(Path(tmp) / "reward_model.pt", weights_only=True)["state_dict"]
    saved = torch.load(reward.REWARD_MODEL_PATH, weights_only=True)["state_dict"]
    reproduces = fresh.keys() == saved.keys() and all(torch.equal(fresh[k], saved[k]) for k in saved)
    # the "gold ranking accuracy": agreement with the gold ordering on test pairs whose gold rewards differ
    return {"reward_model": figures | {
        "gold_ranking_accuracy": figures["gold_agreement_samples"],
        "train_s": live_s, "build_s": build_s, "rebuild_reproduces_committed": reproduces,
        "live": {k: live_figures[k] for k in ("accuracy_vs_ceiling", "gold_agreement_samples",
                                               "gold_agreement_candidates", "right_vs_wrong")}}}


def bench_best_of_n() -> dict:
    """Best-of-N with the course reward model on the test prompts: gold reward at N = 1 and N = 16, each with its
    95 % interval, and whether the gain clears both intervals."""
    torch.set_num_threads(PretrainConfig().threads)
    curve = reward.best_of_n(load_reference(), reward.load_reward_model(), list(world.prompts("test")),
                             ns=(1, 4, 16), seed=1)
    return {"best_of_n": {"gold_reward_n1": curve.gold[1], "gold_reward_n1_interval": list(curve.gold_interval[1]),
                          "gold_reward_n16": curve.gold[16],
                          "gold_reward_n16_interval": list(curve.gold_interval[16]),
                          "proxy_n1": curve.proxy[1], "proxy_n16": curve.proxy[16],
                          "gain_beyond_both_intervals": curve.gold_interval[16][0] > curve.gold_interval[1][1]}}


def bench_preferences() -> dict:
    """The course preference set: its size, its agreement with the gold ordering, and whether rebuilding it from
    its seed gives the committed file byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preferences.jsonl"
        _, seconds = timed(lambda: reward.build_preferences(path))
        reproduces = path.read_bytes() == reward.PREFERENCES_PATH.read_bytes()
    pairs = reward.read_preferences(reward.PREFERENCES_PATH)
    deltas = [world.gold_reward(world.find_prompt(p.prompt), p.chosen)
              - world.gold_reward(world.find_prompt(p.prompt), p.rejected) for p in pairs]
    differ = [d for d in deltas if d != 0]
    return {"preferences": {"pairs": len(pairs), "build_s": seconds, "rebuild_reproduces_committed": reproduces,
                            "agree_with_gold": sum(d > 0 for d in differ) / len(differ),
                            "bayes_accuracy": world.bayes_accuracy(differ, reward.COURSE_TAU)}}
