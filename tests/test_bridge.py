"""The bridge to Hugging Face / TRL (helpers/hf_export.py, helpers/trl_train.py): exact export and back, short TRL
DPO and GRPO runs on the course's data, the same DPO run as two processes, and the course<->TRL names table checked
against the installed TRL. Offline: the network guard is on, and HF_HUB_OFFLINE=1."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import hf_export, trl_train, world
from helpers.model import sequence_logprobs
from helpers.pretrain import load_reference
from helpers.reward import load_preferences
from helpers.tokenizer import Tokenizer, collate_preferences, encode_pairs, pad_sequences
from helpers.verifiable import verifiable_reward

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5


@pytest.fixture(scope="module")
def reference():
    return load_reference()


@pytest.fixture(scope="module")
def folder(reference, tmp_path_factory):
    return hf_export.save_pretrained(reference, tmp_path_factory.mktemp("bridge") / "reference")


def test_split_sequences() -> tuple[list[str], list[str]]:
    """Every test-split prompt with every candidate response the world has for it (2,440 sequences)."""
    prompts, responses = [], []
    for p in world.prompts("test"):
        for text in world.candidates(p).values():
            prompts.append(p.text)
            responses.append(text)
    return prompts, responses


test_split_sequences.__test__ = False   # a helper, not a test


def left_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int):
    """The same rows moved to the right end (left padding), as batched generation lays out prompts."""
    ids, mask = torch.full_like(input_ids, pad_id), torch.zeros_like(attention_mask)
    T = input_ids.shape[1]
    for i, n in enumerate(attention_mask.sum(-1).tolist()):
        ids[i, T - n:], mask[i, T - n:] = input_ids[i, :n], 1
    return ids, mask


# ----------------------------------------------------------------------------------------------- the export

def test_config_matches_the_course_architecture(reference):
    c = hf_export.hf_config(reference.cfg)
    assert (c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size) == (2, 4, 64, 64, len(Tokenizer()))
    assert c.activation_function == "gelu" and c.tie_word_embeddings and c.layer_norm_epsilon == 1e-5
    assert c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0
    hf = hf_export.to_hf_model(reference)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()   # tied, like the course's head


def test_exported_logits_equal_the_course_logits_on_the_test_split_in_padded_batches(reference):
    prompts, responses = test_split_sequences()
    tok = Tokenizer()
    hf = hf_export.to_hf_model(reference)
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(prompts), 512):   # right-padded batches of mixed lengths
            b = encode_pairs(tok, prompts[i:i + 512], responses[i:i + 512])
            ours = reference(b.input_ids, b.attention_mask)
            theirs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            real = b.attention_mask.bool()                       # padding positions are never read
            worst = max(worst, (ours - theirs)[real].abs().max().item())
    assert worst <= TOL


def test_left_padding_needs_the_course_positions_and_gets_them(reference):
    """GPT-2 counts positions over padding: on left-padded rows it differs from the course model unless it is
    given the course's positions (explicitly, or through use_course_positions)."""
    prompts, responses = test_split_sequences()
    b = encode_pairs(Tokenizer(), prompts[::7], responses[::7])
    ids, mask = left_padded(b.input_ids, b.attention_mask, reference.cfg.pad_id)
    real = mask.bool()
    hf = hf_export.to_hf_model(reference)
    with torch.no_grad():
        ours = reference(ids, mask)
        gpt2_positions = hf(input_ids=ids, attention_mask=mask).logits
        given = hf(input_ids=ids, attention_mask=mask, position_ids=hf_export.course_position_ids(mask)).logits
        hooked = hf_export.use_course_positions(hf)(input_ids=ids, attention_mask=mask).logits
    assert (ours - gpt2_positions)[real].abs().max().item() > 1.0            # where they differ
    assert (ours - given)[real].abs().max().item() <= TOL
    assert (ours - hooked)[real].abs().max().item() <= TOL
    # rows without padding are untouched: GPT-2's own positions are the course's there
    full = mask.all(-1)
    assert full.any() and (ours - gpt2_positions)[full].abs().max().item() <= TOL


def test_hf_generate_samples_the_same_distribution_as_the_course_model(reference):
    """Greedy decoding from left-padded prompts gives the course model's greedy responses (generate passes the
    course's positions itself)."""
    tok = Tokenizer()
    ps = list(world.prompts("test"))[:24]
    hf = hf_export.to_hf_model(reference)
    prompt_ids = [tok.encode_prompt(p.text) for p in ps]
    ids, mask = left_padded(*(lambda b: (b.input_ids, b.attention_mask))(
        pad_sequences(prompt_ids, [[] for _ in ps], tok.pad_id)), tok.pad_id)
    out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=30,
                      eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)[:, ids.shape[1]:]
    for row, pid in zip(out.tolist(), prompt_ids):   # greedy with the course model, one prompt at a time
        seq = list(pid)
        with torch.no_grad():
            for _ in range(30):
                nxt = int(reference(torch.tensor([seq]))[0, -1].argmax())
                seq.append(nxt)
                if nxt == tok.eos_id:
                    break
        assert tok.decode(row) == tok.decode(seq[len(pid):])


def test_round_trip_gives_identical_weights_in_memory_and_through_a_folder(reference, folder):
    back = hf_export.from_hf_model(hf_export.to_hf_model(reference))
    loaded, _ = hf_export.load_pretrained(folder)
    from_folder = hf_export.from_hf_model(loaded)
    for name, w in reference.state_dict().items():
        assert torch.equal(back.state_dict()[name], w), name
        assert torch.equal(from_folder.state_dict()[name], w), name
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}


def test_exported_tokenizer_gives_the_course_ids_and_special_tokens(folder):
    tok = Tokenizer()
    _, fast = hf_export.load_pretrained(folder)
    assert (fast.pad_token_id, fast.bos_token_id, fast.sep_token_id, fast.eos_token_id) == \
        (tok.pad_id, tok.bos_id, tok.sep_id, tok.eos_id)
    assert fast.get_vocab() == tok.stoi
    prompts, responses = test_split_sequences()
    for prompt, response in list(zip(prompts, responses))[::11]:
        text = hf_export.prompt_text(prompt) + hf_export.response_text(response) + fast.eos_token
        assert fast(text)["input_ids"] == tok.encode_prompt(prompt) + tok.encode_response(response)
        assert fast.decode(tok.encode_response(response), skip_special_tokens=True) == response
    with pytest.raises(ValueError, match="unknown word"):
        hf_export.check_known_words(fast, "what is two plus xylophone")


# ------------------------------------------------------------------------------------------------ TRL runs

@pytest.fixture(scope="module")
def dpo_run(folder):
    """16 pairs, batch 16: every step sees the whole set, so step 1's metrics can be recomputed by the course."""
    pairs = load_preferences("train")[:16]
    result = trl_train.train_trl_dpo(pairs, folder, trl_train.TRLSettings(batch_size=16, max_steps=2))
    return pairs, result


def test_trl_dpo_runs_offline_and_its_first_step_agrees_with_the_course(dpo_run, reference):
    pairs, result = dpo_run
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    first = result.history[0]
    assert result.steps == 2 and first["step"] == 1
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)   # policy == reference at step 1
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    batch = collate_preferences(pairs, Tokenizer())
    with torch.no_grad():   # TRL's summed log-probs are the course's, on TRL's right-padded batches
        for side in ("chosen", "rejected"):
            b = getattr(batch, side)
            course = sequence_logprobs(reference(b.input_ids, b.attention_mask), b.input_ids, b.response_mask)
            assert first[f"logps/{side}"] == pytest.approx(course.mean().item(), abs=1e-4)
    moved = max((result.policy.state_dict()[k] - w).abs().max().item() for k, w in reference.state_dict().items())
    assert moved > 0   # the policy came back trained, as a course LanguageModel


def test_trl_dpo_nll_weight_adds_trls_sft_term(folder):
    pairs = load_preferences("train")[:16]
    with_nll = trl_train.train_trl_dpo(pairs, folder, trl_train.TRLSettings(batch_size=16, max_steps=1,
                                                                            nll_weight=0.5))
    first = with_nll.history[0]
    # step 1: log 2 plus 0.5 x the chosen tokens' mean NLL (TRL averages over all chosen tokens of the batch)
    tok = Tokenizer()
    tokens = sum(len(tok.encode_response(p.chosen)) for p in pairs)
    assert first["loss"] == pytest.approx(math.log(2) - 0.5 * first["logps/chosen"] * len(pairs) / tokens, abs=1e-4)


@pytest.fixture(scope="module")
def grpo_run(folder):
    """Lesson 05's verifiable reward as TRL's reward function; beta > 0, so TRL builds a reference too."""
    prompts = list(world.prompts("train"))
    return trl_train.train_trl_grpo(prompts, folder, verifiable_reward,
                                    trl_train.TRLSettings(batch_size=16, num_generations=4, max_steps=2,
                                                          grpo_beta=0.04))


def test_trl_grpo_runs_with_a_course_reward_function(grpo_run):
    assert grpo_run.steps == 2
    row = grpo_run.history[0]
    assert math.isfinite(row["reward"]) and row["completions/mean_length"] > 0
    # step 1: policy == the reference TRL built from the folder; a KL of 0 shows both got the course's positions
    assert row["kl"] == pytest.approx(0.0, abs=1e-6)
    assert grpo_run.policy.cfg.block_size == 64


def test_reward_function_decodes_with_the_course_tokenizer_and_scores_with_the_course_reward():
    tok = Tokenizer()
    p = next(p for p in world.prompts("train") if p.category == "answerable")
    texts = [world.response(p, "correct"), world.response(p, "insult")]
    fn = trl_train.reward_function(trl_train.gold_reward)
    got = fn(prompts=[hf_export.prompt_text(p.text)] * 2, completions=["", ""],
             completion_ids=[tok.encode_response(t) for t in texts], course_prompt=[p.text] * 2)
    assert got == [world.gold_reward(p, t) for t in texts]
    # a stray <sep> inside a response is kept as a word, so the strict parser calls it malformed
    stray = fn(prompts=[""], completions=[""], course_prompt=[p.text],
               completion_ids=[tok.encode_words(texts[0])[:2] + [tok.sep_id] + [tok.eos_id]])
    assert stray == [world.gold_reward(p, tok.decode(tok.encode_words(texts[0])[:2] + [tok.sep_id]))]


# ------------------------------------------------------------------------------------ the names table

def test_every_trl_name_in_the_table_exists_in_the_installed_trl(dpo_run, grpo_run):
    import trl

    fields = {"DPOConfig": {f.name for f in dataclasses.fields(trl.DPOConfig)},
              "GRPOConfig": {f.name for f in dataclasses.fields(trl.GRPOConfig)}}
    logged = {"dpo log": {k for row in dpo_run[1].history for k in row},
              "grpo log": {k for row in grpo_run.history for k in row}}
    missing = []
    for course, name, where, _ in trl_train.NAMES:
        if where in fields:
            ok = name in fields[where]
        elif where in logged:
            ok = name in logged[where]
        elif where == "GRPOTrainer":
            ok = name in inspect.signature(trl.GRPOTrainer).parameters
        elif where.startswith("trl"):
            module = __import__(where, fromlist=[name])
            ok = hasattr(module, name)
        else:
            assert where == "-", (course, where)
            ok = True
        if not ok:
            missing.append((course, name, where))
    assert missing == [], f"TRL {trl.__version__} lacks these names the table lists: {missing}"
    # what the table says TRL does not have, it does not have
    assert not hasattr(trl, "PPOTrainer")
    assert trl.GRPOConfig(output_dir="unused", use_cpu=True, bf16=False).beta == 0.0
    table = trl_train.names_table({"dpo log": dpo_run[1].history, "grpo log": grpo_run.history})
    assert "not logged" not in table and "`rewards/margins`" in table


def test_cdpo_label_smoothing_is_ignored_by_trls_sigmoid_loss(folder):
    """The table's claim, checked: label smoothing (cDPO) changes nothing in TRL's sigmoid loss. (At step 1 every
    cDPO loss is log 2, so compare the second step, where the course's cdpo_loss would differ.)"""
    pairs = load_preferences("train")[:16]
    settings = trl_train.TRLSettings(batch_size=16, max_steps=2)
    plain = trl_train.train_trl_dpo(pairs, folder, settings)
    smoothed = trl_train.train_trl_dpo(pairs, folder, settings, label_smoothing=0.3)
    assert plain.history[1]["loss"] == pytest.approx(smoothed.history[1]["loss"], abs=1e-6)


# ------------------------------------------------------------------------------------------ two processes

def test_two_processes_give_the_one_process_result(folder, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "two.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "helpers.trl_train", "dpo",
                          "--folder", str(folder), "--out", str(out), "--pairs", "64", "--steps", "3",
                          "--batch", "16", "--expect-world-size", "2"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    assert two["world_size"] == 2 and two["steps"] == 3
    one = trl_train.train_trl_dpo(load_preferences("train")[:64], folder,
                                  trl_train.TRLSettings(batch_size=16, max_steps=3))
    two_history = json.loads(two["history"])
    for a, b in zip(one.history[:3], two_history[:3]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], abs=1e-5)
    policy = load_reference()
    policy.load_state_dict(two["state_dict"])
    b = collate_preferences(load_preferences("validation")[:128], Tokenizer()).chosen
    real = b.attention_mask.bool()
    with torch.no_grad():
        diff = (policy(b.input_ids, b.attention_mask) - one.policy(b.input_ids, b.attention_mask))[real]
    assert diff.abs().max().item() <= 1e-4
