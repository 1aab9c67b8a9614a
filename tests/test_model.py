"""The tiny transformer: log-prob functions, generation with padding, the scalar head, config checks, dropout.

All models here are tiny (one block, width 16) with weights drawn at a larger scale than the usual init, so that
the outputs vary strongly with position and context and a padding or masking mistake shows up far above the
tolerances.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from helpers import world
from helpers.model import KVCache, LanguageModel, ModelConfig, ScalarModel, sequence_logprobs, token_logprobs
from helpers.tokenizer import Tokenizer, pad_sequences

TOK = Tokenizer()
WORLD_CFG = ModelConfig(vocab_size=len(TOK), n_layer=1, n_head=2, n_embd=16, dropout=0.0, pad_id=TOK.pad_id,
                        eos_id=TOK.eos_id)
# a vocabulary of 8 ids (pad 0, bos 1, sep 2, eos 3, words 4..7): <eos> is likely, so rows end at different steps
SMALL_CFG = ModelConfig(vocab_size=8, block_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.0, pad_id=0,
                        eos_id=3)


def randomized(module: torch.nn.Module, seed: int = 0, std: float = 0.5) -> torch.nn.Module:
    """Redraw every parameter from N(0, std^2): a random but far from uniform function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


def lm(cfg: ModelConfig = WORLD_CFG, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return randomized(LanguageModel(cfg), seed)


def world_prompts(k: int = 5) -> list[list[int]]:
    """Encoded prompts of different lengths."""
    ps = sorted({p.text for p in world.prompts("test")}, key=len)
    chosen = [ps[0], ps[len(ps) // 3], ps[-1], ps[len(ps) // 2], ps[1]][:k]
    return [TOK.encode_prompt(t) for t in chosen]


def small_prompts(n: int = 12, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 1 + (i * 5) % 9
        out.append([1] + torch.randint(4, 8, (length,), generator=g).tolist() + [2])
    return out


def log_softmax_at(row: torch.Tensor, index: int) -> float:
    """log softmax(row)[index] in double precision, by hand."""
    xs = [float(x) for x in row]
    m = max(xs)
    return xs[index] - (m + math.log(sum(math.exp(x - m) for x in xs)))


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


# ----------------------------------------------------------------------------------------------------------------
# token_logprobs and sequence_logprobs

def random_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, T, V = 3, 9, 7
    logits = torch.randn(B, T, V, generator=g) * 3
    input_ids = torch.randint(0, V, (B, T), generator=g)
    # rows: prompt of 3 then 4 response tokens then 2 pads; prompt of 5 then 4; prompt of 2 then 2 then 5 pads
    response_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0, 0],
                                  [0, 0, 0, 0, 0, 1, 1, 1, 1],
                                  [0, 0, 1, 1, 0, 0, 0, 0, 0]])
    return logits, input_ids, response_mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_logprobs_is_log_softmax_of_the_next_token(seed):
    logits, ids, _ = random_case(seed)
    got = token_logprobs(logits, ids)
    assert got.shape == (3, 8)
    for b in range(3):
        for t in range(8):
            assert float(got[b, t]) == pytest.approx(log_softmax_at(logits[b, t], int(ids[b, t + 1])), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_logprobs_sums_log_probs_of_response_tokens_only(seed):
    logits, ids, mask = random_case(seed)
    got = sequence_logprobs(logits, ids, mask)
    assert got.shape == (3,)
    for b in range(3):
        # token t is predicted by the logits at position t - 1
        expected = sum(log_softmax_at(logits[b, t - 1], int(ids[b, t])) for t in range(1, 9) if mask[b, t])
        assert float(got[b]) == pytest.approx(expected, abs=1e-4)


def test_sequence_logprobs_ignores_logits_and_ids_at_prompt_and_padding_positions():
    logits, ids, mask = random_case(0)
    before = sequence_logprobs(logits, ids, mask)
    changed_logits, changed_ids = logits.clone(), ids.clone()
    g = torch.Generator().manual_seed(9)
    for b in range(3):
        for t in range(9):
            predicts_response = t + 1 < 9 and bool(mask[b, t + 1])
            if not predicts_response:
                changed_logits[b, t] = torch.randn(7, generator=g) * 50
            if not mask[b, t] and not (t + 1 < 9 and mask[b, t + 1]):
                changed_ids[b, t] = (changed_ids[b, t] + 1) % 7   # a prompt or pad token no response token follows
    assert torch.allclose(sequence_logprobs(changed_logits, changed_ids, mask), before, atol=1e-5)
    # control: the logits at the last prompt position (<sep>) predict the first response token, so they matter
    control = logits.clone()
    control[0, 2] = torch.randn(7, generator=g) * 50
    assert not torch.allclose(sequence_logprobs(control, ids, mask)[0], before[0], atol=1e-3)


def test_sequence_logprobs_rejects_a_mask_on_position_0():
    logits, ids, mask = random_case(0)
    mask = mask.clone()
    mask[1, 0] = 1
    with pytest.raises(ValueError, match="position 0"):
        sequence_logprobs(logits, ids, mask)


@pytest.mark.parametrize("which", ["logits_T", "logits_B", "logits_2d", "mask_T", "mask_B", "ids_B"])
def test_log_prob_functions_reject_mismatched_shapes(which):
    logits, ids, mask = random_case(0)
    if which == "logits_T":
        logits = logits[:, :-1]
    elif which == "logits_B":
        logits = logits[:-1]
    elif which == "logits_2d":
        logits = logits[:, :, 0]
    elif which == "mask_T":
        mask = mask[:, :-1]
    elif which == "mask_B":
        mask = mask[:-1]
    elif which == "ids_B":
        ids, mask = ids[:-1], mask[:-1]
    with pytest.raises(ValueError):
        sequence_logprobs(logits, ids, mask)
    if which.startswith("logits") or which == "ids_B":
        with pytest.raises(ValueError):
            token_logprobs(logits, ids)


# ----------------------------------------------------------------------------------------------------------------
# the forward pass: causality and padding

def test_logits_at_a_position_do_not_depend_on_later_tokens():
    model = lm()
    ids = torch.tensor([world_prompts(1)[0] + [TOK.stoi["it"], TOK.stoi["is"]]])
    changed = ids.clone()
    changed[0, 5:] = TOK.stoi["cow"]
    a, b = model(ids), model(changed)
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-5)
    assert not torch.allclose(a[0, 5:], b[0, 5:], atol=1e-3)


def test_a_prompts_logits_are_the_same_alone_and_in_a_padded_batch():
    model = lm()
    prompts = world_prompts(5)
    short = min(prompts, key=len)
    alone = model(torch.tensor([short]))[0]                                         # [T, V]
    n = len(short)
    # right padding, as pad_sequences makes
    batch = pad_sequences(prompts, [[] for _ in prompts], TOK.pad_id)
    i = prompts.index(short)
    assert batch.input_ids.shape[1] > n
    right = model(batch.input_ids, batch.attention_mask)[i, :n]
    assert torch.allclose(right, alone, atol=1e-5)
    # left padding, as generate makes
    T = max(len(p) for p in prompts)
    ids = torch.tensor([[TOK.pad_id] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    left = model(ids, mask)[i, T - n:]
    assert torch.allclose(left, alone, atol=1e-5)


def test_a_kv_cache_fed_token_by_token_gives_the_full_forward_logits():
    """generate's cache: left-padded prompts first, then one token per step, finished rows masked as padding."""
    model = lm()
    prompts = world_prompts(5)
    T = max(len(p) for p in prompts)
    ids = torch.tensor([[TOK.pad_id] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    g = torch.Generator().manual_seed(0)
    extra = torch.randint(4, len(TOK), (len(prompts), 6), generator=g)
    extra_mask = torch.ones_like(extra)
    extra_mask[1, 3:] = 0                                    # row 1 "ended": padding from step 3 on
    extra[1, 3:] = TOK.pad_id
    full_ids, full_mask = torch.cat([ids, extra], 1), torch.cat([mask, extra_mask], 1)
    full = model(full_ids, full_mask)                                                # [B, T + 6, V]
    cache = KVCache.empty(model.cfg.n_layer)
    steps = [model(ids, mask, cache)]
    for t in range(extra.shape[1]):
        steps.append(model(extra[:, t:t + 1], full_mask[:, :T + t + 1], cache))
    cached = torch.cat(steps, 1)
    real = full_mask.bool()
    assert cache.length == full_ids.shape[1]
    assert torch.allclose(cached[real], full[real], atol=1e-5)
    with pytest.raises(ValueError, match="cached tokens"):
        model(extra[:, :1], full_mask[:, :1], cache)


def test_transformer_rejects_a_sequence_longer_than_the_context():
    model = lm(SMALL_CFG)
    with pytest.raises(ValueError, match="32"):
        model(torch.ones(1, 33, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------------
# generate

@pytest.mark.parametrize("temperature", [0.7, 1.0])
@pytest.mark.parametrize("cfg, prompts", [(WORLD_CFG, world_prompts()), (SMALL_CFG, small_prompts())],
                         ids=["world-vocab", "small-vocab"])
def test_generate_logprobs_equal_rescored_token_logprobs(cfg, prompts, temperature):
    """Sampling (left-padded, rows ending at different steps) and scoring (right-padded) agree token by token."""
    model = lm(cfg)
    gen = model.generate(prompts, max_new_tokens=12, temperature=temperature,
                         generator=torch.Generator().manual_seed(3))
    assert [len(r) for r in gen.responses] == [len(lp) for lp in gen.logprobs]
    batch = pad_sequences(prompts, gen.responses, cfg.pad_id)
    scored = token_logprobs(model(batch.input_ids, batch.attention_mask) / temperature, batch.input_ids)
    for i, (p, r) in enumerate(zip(prompts, gen.responses)):
        expected = scored[i, len(p) - 1: len(p) - 1 + len(r)]
        assert torch.allclose(torch.tensor(gen.logprobs[i]), expected, atol=1e-5), i
    # and the sum over the response is sequence_logprobs of the same batch
    seq = sequence_logprobs(model(batch.input_ids, batch.attention_mask) / temperature, batch.input_ids,
                            batch.response_mask)
    assert torch.allclose(seq, torch.tensor([sum(lp) for lp in gen.logprobs]), atol=1e-4)
    if cfg is SMALL_CFG:
        assert len({len(r) for r in gen.responses}) > 2, "rows should end at different steps"


@pytest.mark.parametrize("max_new_tokens", [1, 4, 20])
def test_generate_stops_at_eos_and_respects_max_new_tokens(max_new_tokens):
    model = lm(SMALL_CFG)
    gen = model.generate(small_prompts(16), max_new_tokens=max_new_tokens, generator=torch.Generator().manual_seed(1))
    for r in gen.responses:
        assert 1 <= len(r) <= max_new_tokens
        assert SMALL_CFG.eos_id not in r[:-1], "a token after <eos>"
        if r[-1] != SMALL_CFG.eos_id:
            assert len(r) == max_new_tokens
    if max_new_tokens == 20:
        ended_early = [r for r in gen.responses if r[-1] == SMALL_CFG.eos_id and len(r) < 20]
        assert ended_early and max(len(r) for r in gen.responses) > min(len(r) for r in ended_early)


def test_generate_samples_from_the_same_distribution_it_scores_specials_included():
    """generate samples from the full softmax (so sampling and scoring agree exactly); a stray special token is
    then visible in the decoded text (see test_tokenizer) rather than silently dropped. A random model at high
    temperature does sample them: this guards against a sampler that quietly renormalises."""
    model = lm(SMALL_CFG)
    gen = model.generate(small_prompts(16), max_new_tokens=20, temperature=3.0,
                         generator=torch.Generator().manual_seed(1))
    assert any({0, 1, 2} & set(r) for r in gen.responses)


def test_generate_never_overruns_the_context():
    model = lm(SMALL_CFG)
    prompts = small_prompts(12)
    room = SMALL_CFG.block_size - max(len(p) for p in prompts)
    for max_new_tokens in (None, 1000):
        gen = model.generate(prompts, max_new_tokens=max_new_tokens, temperature=0.3,
                             generator=torch.Generator().manual_seed(0))
        assert max(len(r) for r in gen.responses) <= room


def greedy_by_hand(model: LanguageModel, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    out = []
    for _ in range(steps):
        token = int(model(torch.tensor([ids]))[0, -1].argmax())
        out.append(token)
        ids.append(token)
        if token == model.cfg.eos_id:
            break
    return out


@pytest.mark.parametrize("cfg, prompts", [(WORLD_CFG, world_prompts()), (SMALL_CFG, small_prompts(8))],
                         ids=["world-vocab", "small-vocab"])
def test_top_k_1_is_greedy_decoding(cfg, prompts):
    model = lm(cfg)
    gen = model.generate(prompts, max_new_tokens=10, top_k=1, generator=torch.Generator().manual_seed(5))
    for p, r, lp in zip(prompts, gen.responses, gen.logprobs):
        assert r == greedy_by_hand(model, p, 10)
        assert all(x == pytest.approx(0.0, abs=1e-6) for x in lp)


def test_top_k_samples_only_among_the_k_most_likely_tokens():
    model = lm()
    prompts = world_prompts()
    gen = model.generate(prompts, max_new_tokens=8, top_k=3, generator=torch.Generator().manual_seed(2))
    batch = pad_sequences(prompts, gen.responses, TOK.pad_id)
    logits = model(batch.input_ids, batch.attention_mask)
    for i, (p, r) in enumerate(zip(prompts, gen.responses)):
        for j, token in enumerate(r):
            top3 = set(torch.topk(logits[i, len(p) - 1 + j], 3).indices.tolist())
            assert token in top3


def test_a_seeded_generator_gives_the_same_samples_twice():
    model = lm()
    prompts = world_prompts()
    a = model.generate(prompts, max_new_tokens=10, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompts, max_new_tokens=10, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompts, max_new_tokens=10, generator=torch.Generator().manual_seed(8))
    assert a.responses == b.responses and a.logprobs == b.logprobs
    assert a.responses != c.responses


@pytest.mark.parametrize("length", [32, 40])
def test_generate_rejects_a_prompt_that_fills_the_context(length):
    model = lm(SMALL_CFG)
    with pytest.raises(ValueError, match="32"):
        model.generate([[1, 4, 2], [1] + [4] * (length - 2) + [2]], max_new_tokens=2)


@pytest.mark.parametrize("max_new_tokens", [0, -1, 2.5])
def test_generate_rejects_a_max_new_tokens_below_1(max_new_tokens):
    with pytest.raises(ValueError, match=r"max_new_tokens must be an int >= 1"):
        lm(SMALL_CFG).generate([[1, 4, 2]], max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("top_k", [0, -3, 1.5])
def test_generate_rejects_a_top_k_below_1(top_k):
    with pytest.raises(ValueError, match=r"top_k must be None or an int >= 1"):
        lm(SMALL_CFG).generate([[1, 4, 2]], max_new_tokens=2, top_k=top_k)


@pytest.mark.parametrize("prompts", [[[]], [[1, 4, 2], []]])
def test_generate_rejects_an_empty_prompt_naming_it(prompts):
    with pytest.raises(ValueError, match=f"prompt {len(prompts) - 1} is empty"):
        lm(SMALL_CFG).generate(prompts, max_new_tokens=2)


def test_generate_rejects_an_empty_prompt_list():
    with pytest.raises(ValueError):
        lm(SMALL_CFG).generate([], max_new_tokens=2)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_generate_rejects_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        lm(SMALL_CFG).generate([[1, 4, 2]], temperature=temperature)


# ----------------------------------------------------------------------------------------------------------------
# the scalar head

def scalar(seed: int = 0) -> ScalarModel:
    torch.manual_seed(seed)
    return randomized(ScalarModel(WORLD_CFG), seed)


def test_score_reads_the_output_at_each_rows_eos():
    model = scalar()
    p = world.prompts("test")[0]
    texts = [world.response(p, b, 0) for b in ("correct", "verbose", "insult")]
    prompts = [TOK.encode_prompt(p.text)] * 3
    batch = pad_sequences(prompts, [TOK.encode_response(t) for t in texts], TOK.pad_id)
    values = model(batch.input_ids, batch.attention_mask)                              # [B, T]
    got = model.score(batch.input_ids, batch.attention_mask)
    for b in range(3):
        eos = batch.input_ids[b].tolist().index(TOK.eos_id)
        assert float(got[b]) == pytest.approx(float(values[b, eos]), abs=1e-6)
        if eos < batch.input_ids.shape[1] - 1:
            assert abs(float(values[b, eos]) - float(values[b, -1])) > 1e-3   # the last column is something else
    # extra padding columns change nothing
    extra = 5
    ids = torch.cat([batch.input_ids, torch.full((3, extra), TOK.pad_id)], dim=1)
    mask = torch.cat([batch.attention_mask, torch.zeros(3, extra, dtype=torch.long)], dim=1)
    assert torch.allclose(model.score(ids, mask), got, atol=1e-5)


@pytest.mark.parametrize("fault, message", [("all_zero", "attention_mask row 1 has no real token"),
                                            ("two", "attention_mask must hold only 0 and 1")])
def test_forward_and_score_reject_a_mask_without_real_tokens_or_with_other_values(fault, message):
    batch = pad_sequences([TOK.encode_prompt("what is 2 plus 2 ?")] * 2, [[TOK.eos_id]] * 2, TOK.pad_id)
    mask = batch.attention_mask.clone()
    if fault == "all_zero":
        mask[1] = 0
    else:
        mask[0, 1] = 2
    from helpers.reward import RewardModel
    for call in (lm().__call__, scalar().__call__, scalar().score, RewardModel(WORLD_CFG).score):
        with pytest.raises(ValueError, match=message):
            call(batch.input_ids, mask)


@pytest.mark.parametrize("fault, message", [("all_zero", "response_mask row 0 marks no response token"),
                                            ("two", "response_mask must hold only 0 and 1")])
def test_sequence_logprobs_rejects_a_mask_without_response_tokens_or_with_other_values(fault, message):
    logits, ids, mask = random_case(0)
    mask = mask.clone()
    if fault == "all_zero":
        mask[0] = 0
    else:
        mask[1, 5] = 2
    with pytest.raises(ValueError, match=message):
        sequence_logprobs(logits, ids, mask)


def test_scalar_model_from_language_model_copies_the_transformer():
    policy = lm(seed=4)
    model = ScalarModel.from_language_model(policy)
    ours, theirs = model.transformer.state_dict(), policy.transformer.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ids = torch.tensor([world_prompts(1)[0]])
    assert torch.allclose(model.transformer(ids), policy.transformer(ids))
    # a copy, not a shared module: training the reward model must not move the policy
    with torch.no_grad():
        model.transformer.token_embedding.weight.add_(1.0)
    assert not torch.equal(model.transformer.token_embedding.weight, policy.transformer.token_embedding.weight)


# ----------------------------------------------------------------------------------------------------------------
# config and dropout

def test_config_rejects_pad_equal_to_eos():
    with pytest.raises(ValueError, match="pad_id"):
        ModelConfig(pad_id=3, eos_id=3)


def test_config_rejects_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match="n_head"):
        ModelConfig(n_embd=18, n_head=4)


def test_dropout_is_active_in_train_mode_and_off_in_eval_mode():
    cfg = dataclasses.replace(WORLD_CFG, dropout=0.3)
    model = lm(cfg, seed=1)
    no_dropout = lm(WORLD_CFG, seed=1)
    ids = torch.tensor([world_prompts(1)[0]])
    model.train()
    torch.manual_seed(0)
    a, b = model(ids), model(ids)
    assert not torch.allclose(a, b, atol=1e-4)
    model.eval()
    c, d = model(ids), model(ids)
    assert torch.equal(c, d)
    # in eval mode the dropout model computes exactly the function of the same weights without dropout
    assert torch.allclose(c, no_dropout(ids), atol=1e-6)
