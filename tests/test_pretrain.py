"""Pretraining is deterministic from its seed, fits its corpus, and the committed reference matches the code."""
import dataclasses

import torch

from helpers import world
from helpers.checkpoint import default_config
from helpers.model import LanguageModel
from helpers.pretrain import PretrainConfig, language_modeling_loss, load_reference, train_language_model
from helpers.tokenizer import Tokenizer, encode_pairs


def _tiny_run(seed: int, steps: int = 4) -> LanguageModel:
    tok = Tokenizer()
    torch.manual_seed(seed)
    model = LanguageModel(dataclasses.replace(default_config(tok), n_embd=16, n_head=2, n_layer=1))
    docs = world.corpus(500, seed=seed)
    train_language_model(model, docs, PretrainConfig(steps=steps, batch_size=8, warmup=2, seed=seed), tok)
    return model


def test_pretraining_is_deterministic_from_its_seed():
    a, b, c = _tiny_run(0), _tiny_run(0), _tiny_run(1)
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y), f"{name} differs between two runs with the same seed"
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values()))


def test_language_modeling_loss_counts_response_tokens_only():
    tok = Tokenizer()
    torch.manual_seed(0)
    model = LanguageModel(dataclasses.replace(default_config(tok), n_embd=16, n_head=2, n_layer=1)).eval()
    p = world.prompts("train")[0]
    batch = encode_pairs(tok, [p.text], [world.response(p, "correct")])
    logits = model(batch.input_ids, batch.attention_mask)
    logp = torch.log_softmax(logits, -1)
    targets = [(t, int(batch.input_ids[0, t + 1])) for t in range(batch.input_ids.shape[1] - 1)
               if batch.response_mask[0, t + 1]]
    expected = -sum(logp[0, t, y] for t, y in targets) / len(targets)
    assert torch.allclose(language_modeling_loss(model, batch), expected, atol=1e-6)


def test_committed_reference_fits_its_corpus_better_than_chance():
    """The reference has learned the corpus: its loss on fresh corpus documents is far below uniform guessing."""
    tok = Tokenizer()
    model = load_reference()
    docs = world.corpus(256, seed=12345)
    batch = encode_pairs(tok, [d[0] for d in docs], [d[1] for d in docs])
    with torch.no_grad():
        loss = float(language_modeling_loss(model, batch))
    uniform = float(torch.log(torch.tensor(float(len(tok)))))
    assert loss < 0.2 * uniform, f"reference loss {loss:.3f} vs uniform {uniform:.3f}"
