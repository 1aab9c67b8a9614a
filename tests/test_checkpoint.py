"""Saving and loading checkpoints: round trip, refusal of foreign checkpoints, safe loading, the reference model."""
from __future__ import annotations

import dataclasses
import math
import pickle

import pytest
import torch

from helpers import pretrain
from helpers.checkpoint import CheckpointError, default_config, load, save
from helpers.model import LanguageModel, ModelConfig, ScalarModel
from helpers.pretrain import load_reference
from helpers.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class Payload:
    """An arbitrary Python object: a checkpoint holding one must not be unpickled."""

    def __init__(self):
        self.note = "not a tensor"


def random_model(kind: type = LanguageModel, cfg: ModelConfig | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = kind(cfg or default_config())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_default_config_matches_the_tokenizer():
    tok = Tokenizer()
    cfg = default_config(tok)
    assert (cfg.vocab_size, cfg.pad_id, cfg.eos_id) == (len(tok), tok.pad_id, tok.eos_id)


@pytest.mark.parametrize("kind", [LanguageModel, ScalarModel])
def test_save_then_load_gives_back_the_same_weights_in_eval_mode(tmp_path, kind):
    model = random_model(kind).train()
    path = tmp_path / "sub" / "model.pt"
    save(model, path)
    loaded = load(path, kind)
    assert type(loaded) is kind
    assert loaded.cfg == model.cfg
    assert same_weights(loaded, model)
    assert not loaded.training
    ids = torch.tensor([[1, 10, 11, 2, 20]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_saved_file_holds_only_plain_data_and_loads_with_weights_only(tmp_path):
    path = tmp_path / "model.pt"
    save(random_model(), path)
    data = torch.load(path, weights_only=True)
    assert set(data) == {"config", "vocabulary", "kind", "state_dict"}
    assert data["kind"] == "LanguageModel"
    assert data["vocabulary"] == Tokenizer().itos
    assert data["config"] == dataclasses.asdict(default_config())


def test_a_checkpoint_of_another_config_is_refused_naming_the_config(tmp_path):
    tok = Tokenizer()
    tiny = ModelConfig(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, dropout=0.0, pad_id=tok.pad_id,
                       eos_id=tok.eos_id)
    path = tmp_path / "tiny.pt"
    save(random_model(cfg=tiny), path)
    with pytest.raises(ValueError, match="ModelConfig") as info:
        load(path)
    assert "n_embd" in str(info.value) and "make artifacts" in str(info.value)


def test_a_missing_checkpoint_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make artifacts"):
        load(tmp_path / "nowhere.pt")
    with pytest.raises(FileNotFoundError, match="make artifacts"):
        load_reference(tmp_path / "nowhere.pt")


@pytest.mark.parametrize("tamper", ["renamed_word", "dropped_word", "swapped_order"])
def test_a_checkpoint_with_another_vocabulary_is_refused(tmp_path, tamper):
    path = tmp_path / "model.pt"
    save(random_model(), path)
    data = torch.load(path, weights_only=True)
    vocab = list(data["vocabulary"])
    if tamper == "renamed_word":
        vocab[10] = "zebra"
    elif tamper == "dropped_word":
        vocab = vocab[:-1]
    else:
        vocab[10], vocab[11] = vocab[11], vocab[10]
    data["vocabulary"] = vocab
    torch.save(data, path)
    with pytest.raises(ValueError, match="vocabulary"):
        load(path)


@pytest.mark.parametrize("saved, wanted", [(ScalarModel, LanguageModel), (LanguageModel, ScalarModel)])
def test_a_checkpoint_of_another_model_kind_is_refused(tmp_path, saved, wanted):
    path = tmp_path / "model.pt"
    save(random_model(saved), path)
    with pytest.raises(ValueError, match=saved.__name__):
        load(path, wanted)


def test_loading_refuses_arbitrary_python_objects(tmp_path):
    path = tmp_path / "evil.pt"
    good = tmp_path / "good.pt"
    save(random_model(), good)
    data = torch.load(good, weights_only=True)
    data["payload"] = Payload()
    torch.save(data, path)
    # the same file loads fine without the safety switch, so the refusal comes from weights_only=True
    assert isinstance(torch.load(path, weights_only=False)["payload"], Payload)
    with pytest.raises(CheckpointError, match="weights_only") as info:
        load(path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError) and str(path) in str(info.value)


def _damaged(path, damage: str, good) -> None:
    """Write a damaged checkpoint to ``path``: the bytes or the object ``damage`` names, from the good file."""
    raw = good.read_bytes()
    data = torch.load(good, weights_only=True)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    elif damage == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "a_list":
        torch.save([1, 2, 3], path)
    elif damage == "a_tensor":
        torch.save(torch.zeros(3), path)
    elif damage == "no_vocabulary":
        torch.save({k: v for k, v in data.items() if k != "vocabulary"}, path)
    elif damage == "config_not_a_dict":
        torch.save(data | {"config": "big"}, path)
    elif damage == "missing_weight":
        data["state_dict"].pop("transformer.norm.weight")
        torch.save(data, path)
    elif damage == "folder":
        path.mkdir()


@pytest.mark.parametrize("damage", ["empty", "text", "truncated", "a_list", "a_tensor", "no_vocabulary",
                                    "config_not_a_dict", "missing_weight", "folder"])
def test_a_damaged_checkpoint_is_refused_naming_its_path_and_how_to_rebuild_it(tmp_path, damage):
    good = tmp_path / "good.pt"
    save(random_model(), good)
    path = tmp_path / f"{damage}.pt"
    _damaged(path, damage, good)
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "make artifacts" in message
    assert isinstance(info.value, ValueError)  # one type for every refusal, as before


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_checkpoint_with_nan_or_inf_weights_is_refused_naming_the_tensor(tmp_path, value):
    path = tmp_path / "model.pt"
    save(random_model(), path)
    data = torch.load(path, weights_only=True)
    data["state_dict"]["transformer.norm.weight"][3] = value
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"not finite \(nan or inf\) in transformer\.norm\.weight") as info:
        load(path)
    assert str(path) in str(info.value)


def test_load_reference_gives_the_committed_model_in_eval_mode():
    model = load_reference()
    assert isinstance(model, LanguageModel)
    assert not model.training
    assert model.cfg == default_config()
    assert all(not m.training for m in model.modules())
    assert pretrain.REFERENCE_PATH.stat().st_size < 5 * 2 ** 20   # small enough to commit


def test_scalar_from_reference_starts_from_the_reference_transformer():
    reference = load_reference()
    model = pretrain.scalar_from_reference()
    assert isinstance(model, ScalarModel)
    assert same_weights(model.transformer, reference.transformer)
