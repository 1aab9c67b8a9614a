"""Lesson 06's pipeline: labels go through the real labeling session and files, and repeat exactly; the stored
figures were made with the settings the lesson reruns."""
import dataclasses
import json

from helpers import labeling, pipeline, world
from helpers.pretrain import load_reference


def test_simulated_labels_go_through_label_files_and_repeat_exactly(tmp_path):
    reference = load_reference()
    cfg = dataclasses.replace(pipeline.LIVE, prompt_stride=40)
    one = pipeline.simulated_pairs(reference, tmp_path / "one", cfg)
    two = pipeline.simulated_pairs(reference, tmp_path / "two", cfg)
    assert one and one == two
    assert (tmp_path / "one" / "simulated.jsonl").exists()
    # every pair is two reference samples for a training prompt, and the annotator mostly prefers the better one
    prompts = {p.text: p for p in world.prompts("train")}
    assert all(pair.prompt in prompts for pair in one)
    better = sum(world.gold_reward(prompts[p.prompt], p.chosen) >= world.gold_reward(prompts[p.prompt], p.rejected)
                 for p in one)
    assert better / len(one) > 0.6


def test_reopening_a_labelled_folder_adds_nothing(tmp_path):
    reference = load_reference()
    cfg = dataclasses.replace(pipeline.LIVE, prompt_stride=60)
    items = pipeline.label_items(reference, cfg)
    assert pipeline.simulate_labels(items, tmp_path) == len(items)
    assert pipeline.simulate_labels(items, tmp_path) == 0
    assert len(labeling.read_labels(tmp_path).labels) == len(items)


def _label(item: str, annotator: str, label: str = "a") -> labeling.Label:
    return labeling.Label(item=item, annotator=annotator, label=label, swap=False, prompt="p", first="x", second="y")


def test_labels_preferring_keeps_your_label_and_the_simulated_one_for_the_rest():
    labels = [_label("1", "simulated", "a"), _label("2", "simulated", "a"), _label("3", "simulated", "b"),
              _label("2", "me", "b"), _label("4", "me", "a")]
    kept = pipeline.labels_preferring(labels, "me")
    assert sorted((lab.item, lab.annotator) for lab in kept) == [("1", "simulated"), ("2", "me"), ("3", "simulated"),
                                                                ("4", "me")]
    assert pipeline.labels_preferring(labels, "nobody") == labels


def test_the_live_settings_are_a_smaller_slice_of_the_full_run():
    live, full = pipeline.LIVE, pipeline.FULL
    assert live.prompt_stride > full.prompt_stride
    assert live.reward.max_steps < full.reward.max_steps and live.dpo.max_steps < full.dpo.max_steps
    assert live.ppo.iterations < full.ppo.iterations and live.grpo.iterations < full.grpo.iterations
    assert live.seed == full.seed


def test_stored_live_runs_were_made_with_the_settings_lesson_06_reruns():
    stored = pipeline.load_pipeline()
    assert set(stored) == set(pipeline.PARTS)
    same = lambda cfg: json.loads(json.dumps(dataclasses.asdict(cfg)))   # noqa: E731  (tuples -> lists, as stored)
    assert stored["live"]["config"] == same(pipeline.LIVE)
    assert stored["rlaif_live"]["config"] == same(pipeline.RLAIF_LIVE)
    assert stored["rlaif_live"]["samples_per_prompt"] == pipeline.RLAIF_LIVE_SAMPLES
    assert stored["live"]["figures"]["labels"]["pairs"] < stored["full"]["figures"]["labels"]["pairs"]


def test_building_some_parts_keeps_the_others_and_drops_parts_no_longer_built(tmp_path, monkeypatch):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps({"live": {"old": 1}, "full": {"kept": 2}, "short": {"gone": 3}}))
    monkeypatch.setattr(pipeline, "_build_part", lambda name: {"built": name})
    stored = pipeline.build_pipeline(path, parts=("live", "rlaif_live"))
    assert stored == {"live": {"built": "live"}, "full": {"kept": 2}, "rlaif_live": {"built": "rlaif_live"}}
    assert json.loads(path.read_text()) == stored
