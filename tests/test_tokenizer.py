"""The word-level tokenizer and the collate functions: ids, right padding and the response mask convention."""
from __future__ import annotations

import pytest
import torch

from helpers import world
from helpers.checkpoint import default_config
from helpers.tokenizer import (BOS, EOS, PAD, SEP, SPECIALS, Tokenizer, collate_preferences, encode_pairs,
                               pad_sequences)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


def test_special_tokens_are_four_distinct_ids_and_pad_is_not_eos(tok):
    ids = [tok.pad_id, tok.bos_id, tok.sep_id, tok.eos_id]
    assert len(set(ids)) == 4
    assert tok.pad_id != tok.eos_id
    assert [tok.itos[i] for i in ids] == [PAD, BOS, SEP, EOS]
    assert set(SPECIALS) == {PAD, BOS, SEP, EOS}


def test_vocabulary_is_the_worlds_words_plus_the_specials(tok):
    assert len(tok) == len(world.vocabulary()) + 4
    assert set(tok.itos) == set(world.vocabulary()) | set(SPECIALS)
    assert len(set(tok.itos)) == len(tok)
    assert all(tok.stoi[w] == i for i, w in enumerate(tok.itos))


@pytest.mark.parametrize("word", ["zebra", "Paris", "4+5", "hello,"])
def test_unknown_word_raises_a_value_error_naming_it(tok, word):
    with pytest.raises(ValueError, match=word.replace("+", r"\+")):
        tok.encode_words(f"what is {word} ?")


@pytest.mark.parametrize("special", [PAD, BOS, SEP, EOS])
def test_special_token_written_as_text_is_not_a_word(tok, special):
    with pytest.raises(ValueError, match=special):
        tok.encode_words(f"i do not know {special}")


def test_words_clashing_with_specials_are_rejected():
    with pytest.raises(ValueError, match="<eos>"):
        Tokenizer(["hello", "<eos>"])


def test_encode_then_decode_gives_back_every_prompt_and_response(tok):
    for split in ("train", "test"):
        for p in world.prompts(split):
            assert tok.decode(tok.encode_words(p.text)) == p.text
            for text in world.candidates(p).values():
                ids = tok.encode_response(text)
                assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
                assert tok.decode(ids) == text
                assert tok.decode(torch.tensor(ids)) == text


def test_encode_prompt_and_response_frame_the_words(tok):
    words = [tok.stoi[w] for w in "what is 4 plus 5 ?".split()]
    assert tok.encode_prompt("what is 4 plus 5 ?") == [tok.bos_id] + words + [tok.sep_id]
    assert tok.encode_response("it is 9 .") == [tok.stoi["it"], tok.stoi["is"], tok.stoi["9"], tok.stoi["."],
                                                tok.eos_id]


def test_decode_stops_at_the_first_eos_and_writes_out_stray_special_tokens(tok):
    a, b, c = tok.stoi["i"], tok.stoi["do"], tok.stoi["know"]
    assert tok.decode([a, b, c, tok.eos_id, a, a, tok.pad_id]) == "i do know"
    ids = [a, tok.sep_id, b, tok.pad_id, c, tok.bos_id, tok.eos_id]
    assert tok.decode(ids) == "i <sep> do <pad> know <bos>"


@pytest.mark.parametrize("bad", [-1, -300, 10_000])
def test_decode_rejects_an_id_outside_the_vocabulary_naming_the_range(tok, bad):
    a = tok.stoi["i"]
    for ids in ([a, bad, tok.eos_id], torch.tensor([a, bad, tok.eos_id])):
        with pytest.raises(ValueError, match=rf"ids must lie in \[0, {len(tok)}\).*{bad}"):
            tok.decode(ids)
    assert tok.decode([a, tok.eos_id, bad]) == "i"  # what follows <eos> is not decoded, so not checked


def test_decode_rejects_a_batch_of_responses(tok):
    with pytest.raises(ValueError, match="one response"):
        tok.decode(torch.tensor([[4, 5, tok.eos_id]]))


def test_a_response_with_a_stray_special_token_parses_as_malformed(tok):
    """A sampled <pad> inside a response must not vanish from the text the gold reward judges."""
    from helpers import world
    p = next(q for q in world.prompts("test") if q.category == "unanswerable")
    ids = tok.encode_words("i do not know .")
    assert world.parse(p, tok.decode(ids)) == "idk"
    ids.insert(2, tok.pad_id)
    assert world.parse(p, tok.decode(ids)) == world.MALFORMED


# ----------------------------------------------------------------------------------------------------------------
# pad_sequences and the response mask

PROMPTS = [[1, 10, 11, 2], [1, 12, 2]]          # <bos> ... <sep>, with bos=1 and sep=2
RESPONSES = [[20, 3], [21, 22, 23, 3]]           # ... <eos>, with eos=3
# written by hand: right padding with pad=0; the mask is 1 on response tokens and <eos> only
EXPECTED_IDS = [[1, 10, 11, 2, 20, 3, 0], [1, 12, 2, 21, 22, 23, 3]]
EXPECTED_ATTENTION = [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]
EXPECTED_RESPONSE = [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]]


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["short-first", "long-first"])
def test_pad_sequences_masks_response_tokens_and_eos_only(order):
    batch = pad_sequences([PROMPTS[i] for i in order], [RESPONSES[i] for i in order], pad_id=0)
    expected = lambda rows: torch.tensor([rows[i] for i in order], dtype=torch.long)  # noqa: E731
    assert torch.equal(batch.input_ids, expected(EXPECTED_IDS))
    assert torch.equal(batch.attention_mask, expected(EXPECTED_ATTENTION))
    assert torch.equal(batch.response_mask, expected(EXPECTED_RESPONSE))
    assert batch.input_ids.dtype == batch.attention_mask.dtype == batch.response_mask.dtype == torch.long


def test_pad_sequences_with_an_empty_response_masks_nothing_in_that_row():
    batch = pad_sequences([[1, 10, 2], [1, 11, 12, 2]], [[], [20, 3]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 10, 2, 0, 0, 0], [1, 11, 12, 2, 20, 3]]
    assert batch.response_mask.tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]


def test_encode_pairs_builds_the_same_layout_from_text(tok):
    s = tok.stoi
    batch = encode_pairs(tok, ["what is 4 plus 5 ?", "hi , tell me 1 plus 1 ."], ["it is 9 .", "i do not know ."])
    row0 = [tok.bos_id, s["what"], s["is"], s["4"], s["plus"], s["5"], s["?"], tok.sep_id,
            s["it"], s["is"], s["9"], s["."], tok.eos_id]
    row1 = [tok.bos_id, s["hi"], s[","], s["tell"], s["me"], s["1"], s["plus"], s["1"], s["."], tok.sep_id,
            s["i"], s["do"], s["not"], s["know"], s["."], tok.eos_id]
    pad = tok.pad_id
    assert batch.input_ids.tolist() == [row0 + [pad] * 3, row1]
    assert batch.response_mask.tolist() == [[0] * 8 + [1] * 5 + [0] * 3, [0] * 10 + [1] * 6]
    assert batch.attention_mask.tolist() == [[1] * 13 + [0] * 3, [1] * 16]


def test_pad_sequences_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="empty"):
        pad_sequences([], [], pad_id=0)


def test_pad_sequences_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        pad_sequences([[1, 2], [1, 2]], [[3]], pad_id=0)


@pytest.mark.parametrize("max_len, ok", [(7, True), (8, True), (6, False), (3, False)])
def test_pad_sequences_rejects_sequences_longer_than_max_len(max_len, ok):
    if ok:
        assert pad_sequences(PROMPTS, RESPONSES, pad_id=0, max_len=max_len).input_ids.shape == (2, 7)
    else:
        with pytest.raises(ValueError, match=str(max_len)):
            pad_sequences(PROMPTS, RESPONSES, pad_id=0, max_len=max_len)


def test_every_prompt_with_its_longest_response_fits_the_models_context(tok):
    block = default_config(tok).block_size
    for split in ("train", "validation", "test"):
        for p in world.prompts(split):
            longest = max((world.response(p, b, v) for b in world.APPLICABLE[p.category] for v in range(12)),
                          key=lambda t: len(t.split()))
            assert len(tok.encode_prompt(p.text)) + len(tok.encode_response(longest)) <= block, (p.text, longest)


# ----------------------------------------------------------------------------------------------------------------
# collate_preferences

def test_collate_preferences_pads_chosen_and_rejected_with_their_masks(tok):
    s = tok.stoi
    pairs = [world.PreferencePair("what is 4 plus 5 ?", "it is 9 .", "what a stupid question , go away ."),
             world.PreferencePair("hi , tell me 1 plus 1 .", "it is 2 .", "i do not know .")]
    batch = collate_preferences(pairs, tok)
    p0 = [tok.bos_id] + [s[w] for w in "what is 4 plus 5 ?".split()] + [tok.sep_id]
    p1 = [tok.bos_id] + [s[w] for w in "hi , tell me 1 plus 1 .".split()] + [tok.sep_id]
    enc = lambda text: [s[w] for w in text.split()] + [tok.eos_id]  # noqa: E731
    pad = tok.pad_id

    def expected(rows):
        T = max(len(p) + len(r) for p, r in rows)
        ids = [p + r + [pad] * (T - len(p) - len(r)) for p, r in rows]
        att = [[1] * (len(p) + len(r)) + [0] * (T - len(p) - len(r)) for p, r in rows]
        resp = [[0] * len(p) + [1] * len(r) + [0] * (T - len(p) - len(r)) for p, r in rows]
        return ids, att, resp

    for got, rows in [(batch.chosen, [(p0, enc(pairs[0].chosen)), (p1, enc(pairs[1].chosen))]),
                      (batch.rejected, [(p0, enc(pairs[0].rejected)), (p1, enc(pairs[1].rejected))])]:
        ids, att, resp = expected(rows)
        assert got.input_ids.tolist() == ids
        assert got.attention_mask.tolist() == att
        assert got.response_mask.tolist() == resp
    # padded separately: the rejected side holds the longer response here
    assert batch.chosen.input_ids.shape[1] < batch.rejected.input_ids.shape[1]


def test_collate_preferences_rejects_an_empty_list(tok):
    with pytest.raises(ValueError, match="empty"):
        collate_preferences([], tok)


def test_collate_preferences_respects_max_len(tok):
    pairs = [world.PreferencePair("what is 4 plus 5 ?", "it is 9 .", "i do not know .")]
    with pytest.raises(ValueError):
        collate_preferences(pairs, tok, max_len=10)
