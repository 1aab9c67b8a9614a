"""The surprise-term measurements: zeroing the gate leaves the head's score, the probe reads only <eos>, and the
stored PPO ablation matches the configuration that builds it."""
import torch

from helpers import reward, surprise
from helpers.tokenizer import Tokenizer, encode_pairs


def test_without_surprise_scores_with_the_head_alone_and_leaves_the_original_alone():
    course = reward.load_reward_model()
    gate_before = course.gate.weight.clone()
    zeroed = surprise.without_surprise(course)
    batch = encode_pairs(Tokenizer(), ["what is 4 plus 5 ?"] * 2, ["it is 9 .", "it is 11 ."])
    at_eos, knowledge = course.score_parts(batch.input_ids, batch.attention_mask)
    assert knowledge.abs().max() > 0                                     # the term is not zero as trained
    assert torch.allclose(zeroed.score(batch.input_ids, batch.attention_mask), at_eos, atol=1e-6)
    assert torch.equal(course.gate.weight, gate_before)


def test_eos_features_are_the_hidden_state_at_eos_of_each_row():
    model = reward.load_reward_model()
    prompts = [p for p in surprise.world.prompts("train") if p.category == "answerable"][:2]
    texts = ["it is 9 .", "the answer is 12 ."]                     # different lengths: the first row is padded
    feats = surprise.eos_features(model, prompts, texts)
    for k, (p, t) in enumerate(zip(prompts, texts)):
        one = encode_pairs(Tokenizer(), [p.text], [t])
        alone = model.transformer(one.input_ids, one.attention_mask)[0, -1]   # no padding: <eos> is last
        assert torch.allclose(feats[k], alone, atol=1e-5)


def test_the_stored_ablation_was_built_with_the_configuration_that_builds_it():
    stored = surprise.load_ppo_ablation()
    assert stored["config"] == {k: getattr(surprise.ABLATION_PPO, k) for k in stored["config"]}
    assert set(stored["policies"]) == {"reference", "as trained", "surprise zeroed"}
    for row in stored["policies"].values():
        for count, n in (row[k] for k in ("false_answer", "harmful_compliance", "fabrication", "malformed")):
            assert 0 <= count <= n
