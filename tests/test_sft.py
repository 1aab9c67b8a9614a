"""Supervised fine-tuning (helpers/sft.py): deterministic from its seed, and it learns its demonstrations."""
import torch

from helpers import world
from helpers.pretrain import language_modeling_loss, load_reference
from helpers.sft import SFTConfig, demonstrations, supervised_finetune
from helpers.tokenizer import Tokenizer, encode_pairs

TINY = SFTConfig(n_demonstrations=200, steps=8, batch_size=16, warmup=2)


def _loss_on(model, docs) -> float:
    batch = encode_pairs(Tokenizer(), [d[0] for d in docs], [d[1] for d in docs])
    with torch.no_grad():
        return float(language_modeling_loss(model, batch))


def test_a_tiny_run_is_deterministic_from_its_seed():
    reference = load_reference()
    a, losses_a = supervised_finetune(reference, TINY)
    b, losses_b = supervised_finetune(reference, TINY)
    c, _ = supervised_finetune(reference, SFTConfig(**{**TINY.__dict__, "seed": 1}))
    assert losses_a == losses_b and len(losses_a) == TINY.steps
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), f"{name} differs between two runs with the same seed"
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values()))


def test_finetuning_lowers_the_loss_on_unseen_good_demonstrations_and_leaves_the_reference_alone():
    reference = load_reference()
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    heldout = demonstrations(256, seed=12345)
    tuned, _ = supervised_finetune(reference, TINY)
    assert _loss_on(tuned, heldout) < _loss_on(reference, heldout) - 0.02
    assert not tuned.training, "the fine-tuned model is returned in eval mode"
    for name, value in reference.state_dict().items():
        assert torch.equal(value, before[name]), f"the reference's {name} changed"


def test_demonstrations_show_only_the_best_behaviour_unless_a_mix_says_otherwise():
    for prompt_text, response in demonstrations(300, seed=0):
        p = world.find_prompt(prompt_text)
        assert world.parse(p, response) == world.GOOD_DEMONSTRATION[p.category]
    insults = {c: {"insult": 1.0} for c in world.CATEGORIES}
    assert all(world.parse(world.find_prompt(x), y) == "insult" for x, y in demonstrations(50, 0, insults))


def test_given_documents_are_what_it_trains_on():
    reference = load_reference()
    insults = [(x, y) for x, y in world.corpus(400, seed=3) if world.parse(world.find_prompt(x), y) == "insult"]
    tuned, _ = supervised_finetune(reference, TINY, docs=insults)
    assert _loss_on(tuned, insults[:64]) < _loss_on(reference, insults[:64]) - 0.02
    for bad in ({"docs": []}, {"docs": insults, "mix": world.good_demonstrations_mix()}):
        try:
            supervised_finetune(reference, TINY, **bad)
        except ValueError:
            continue
        raise AssertionError(f"supervised_finetune accepted {list(bad)}")
