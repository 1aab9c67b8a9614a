"""Lesson 06's pipeline: labels go through the real labeling session and files, and repeat exactly."""
import dataclasses

from helpers import labeling, pipeline, world
from helpers.pretrain import load_reference


def test_simulated_labels_go_through_label_files_and_repeat_exactly(tmp_path):
    reference = load_reference()
    cfg = dataclasses.replace(pipeline.SHORT, prompt_stride=40)
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
    cfg = dataclasses.replace(pipeline.SHORT, prompt_stride=60)
    items = pipeline.label_items(reference, cfg)
    assert pipeline.simulate_labels(items, tmp_path) == len(items)
    assert pipeline.simulate_labels(items, tmp_path) == 0
    assert len(labeling.read_labels(tmp_path).labels) == len(items)
