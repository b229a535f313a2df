"""Tokenizers: round trips, HF tokenizer.json, chat templates vs transformers, delimiters."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasonjax.models import (CharTokenizer, TokenizerError, apply_chat_template, check_vocab,
                              delimiter_automaton, load_tokenizer, train_sentencepiece)
from reasonjax.models.tokenizer import HFTokenizer, SentencePieceTokenizer, pad_batch

TEXTS = [f"Step {i}: {i} * {i + 3} = {i * (i + 3)}\nso far {i * 7}\n\nAnswer: {i}\n\n"
         for i in range(200)]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    d = tmp_path_factory.mktemp("sp")
    return train_sentencepiece(TEXTS, d / "tok", vocab_size=360, user_symbols=["\n"])


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory, bpe_tokenizer_dir):
    return bpe_tokenizer_dir(tmp_path_factory.mktemp("hf"), TEXTS, 400, {
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
        "chat_template": CHATML})


def test_char_tokenizer_round_trip_and_errors(tmp_path):
    tok = CharTokenizer()
    text = "12 + 7 = 19\nanswer: 19"
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) == len(text) + 2
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special=False) == "<bos>" + text + "<eos>"
    with pytest.raises(TokenizerError, match=r"character 'é' at offset 3"):
        tok.encode("abcé")
    assert CharTokenizer(unknown="unk").encode("é") == [3]
    back = load_tokenizer(tok.save(tmp_path))
    assert back.encode(text) == tok.encode(text) and back.vocab_size == 100


def test_sentencepiece_keeps_newlines_exactly(sp, tmp_path):
    for text in TEXTS[:20] + ["  two  spaces\n\n\nthree newlines", "ünïcode → bytes"]:
        assert sp.decode(sp.encode(text)) == text
    ids = sp.encode("hi", add_bos=True, add_eos=True)
    assert ids[0] == sp.bos_id == 1 and ids[-1] == sp.eos_id == 2
    assert isinstance(load_tokenizer(sp.path), SentencePieceTokenizer)
    with pytest.raises(TokenizerError, match="vocab_size must exceed"):
        train_sentencepiece(TEXTS, tmp_path / "small", vocab_size=50)


def test_hf_tokenizer_json(hf_tok):
    tok = load_tokenizer(hf_tok)
    assert isinstance(tok, HFTokenizer)
    text = "Step 3: 3 * 6 = 18\n\nAnswer: 3"
    assert tok.decode(tok.encode(text)) == text
    assert tok.eos_id == tok.special_tokens()["<|im_end|>"]
    assert tok.pad_id == tok.special_tokens()["<|endoftext|>"]
    assert tok.decode(tok.encode(text, add_eos=True)) == text
    assert tok.token_texts()[tok.eos_id] == ""


def test_chat_template_matches_transformers(hf_tok):
    from transformers import PreTrainedTokenizerFast

    ref_tok = PreTrainedTokenizerFast(tokenizer_file=str(hf_tok / "tokenizer.json"))
    ref_tok.chat_template = CHATML
    messages = [{"role": "system", "content": "Solve step by step."},
                {"role": "user", "content": "What is 3 * 6?"}]
    tok = load_tokenizer(hf_tok)
    for gen in (True, False):
        ours = apply_chat_template(tok, messages, add_generation_prompt=gen)
        ref = ref_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        assert ours == ref
    assert tok.encode(ours)[0] == tok.special_tokens()["<|im_start|>"]
    with pytest.raises(TokenizerError, match="no chat template"):
        apply_chat_template(CharTokenizer(), messages)
    with pytest.raises(TokenizerError, match=r"messages\[0\]"):
        apply_chat_template(tok, [{"content": "x"}])


def test_sandboxed_template_cannot_reach_python(hf_tok, tmp_path):
    tok = load_tokenizer(hf_tok)
    tok.chat_template = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(Exception):
        apply_chat_template(tok, [{"role": "user", "content": "x"}])


def _first_completion_brute(texts, ids, delimiter):
    acc = ""
    for j, i in enumerate(ids):
        acc += texts[i]
        if delimiter in acc:
            return j
    return None


def _first_completion_automaton(auto, ids):
    state = 0
    for j, i in enumerate(ids):
        if auto.completes[state, i]:
            return j
        state = auto.next_state[state, i]
    return None


@pytest.mark.parametrize("delimiter", ["\n\n", "\n", "Answer:", "aab"])
def test_delimiter_automaton_matches_brute_force(sp, hf_tok, delimiter):
    for tok in (sp, load_tokenizer(hf_tok), CharTokenizer()):
        auto = delimiter_automaton(tok, delimiter)
        texts = tok.token_texts()
        assert auto.next_state.shape == auto.completes.shape == (len(delimiter), len(texts))

        @settings(max_examples=150, deadline=None)
        @given(st.lists(st.integers(0, len(texts) - 1), max_size=30), st.randoms())
        def check(ids, rnd):
            # Mix in tokens that contain delimiter characters so matches actually happen.
            rich = [i for i, t in enumerate(texts) if set(t) & set(delimiter)]
            ids = [rnd.choice(rich) if rnd.random() < 0.5 else i for i in ids]
            assert (_first_completion_automaton(auto, ids)
                    == _first_completion_brute(texts, ids, delimiter))

        check()


def test_special_tokens_do_not_break_a_partial_match():
    tok = CharTokenizer()
    auto = delimiter_automaton(tok, "\n\n")
    nl = tok.encode("\n")[0]
    assert _first_completion_automaton(auto, [nl, tok.eos_id, nl]) == 2
    assert _first_completion_automaton(auto, [nl, tok.encode("x")[0], nl]) is None


def test_delimiter_inside_and_across_bpe_tokens(hf_tok):
    tok = load_tokenizer(hf_tok)
    auto = delimiter_automaton(tok, "\n\n")
    texts = tok.token_texts()
    inside = [i for i, t in enumerate(texts) if "\n\n" in t]
    single = [i for i, t in enumerate(texts) if t == "\n"]
    assert inside and single, "the trained BPE has both merged and single newlines"
    assert auto.completes[0, inside].all()
    s = single[0]
    assert not auto.completes[0, s] and auto.next_state[0, s] == 1 and auto.completes[1, s]


def test_pad_batch_and_vocab_check():
    tokens, mask = pad_batch([[5, 6, 7], [8]], 4, pad_id=0, side="left")
    np.testing.assert_array_equal(tokens, [[0, 5, 6, 7], [0, 0, 0, 8]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
    with pytest.raises(TokenizerError, match="sequence 0 has 3 tokens"):
        pad_batch([[1, 2, 3]], 2, 0)
    check_vocab(128, CharTokenizer())
    with pytest.raises(TokenizerError, match="vocab_size 64 is smaller than the tokenizer's 100"):
        check_vocab(64, CharTokenizer())
