"""Token text for any tokenizer (`tl_clt.tokenization`, `Lens.token_texts`): a byte-level BPE
and a SentencePiece-style (Metaspace) vocabulary decode to the text each token stands for,
checked against the tokenizers' own byte and "▁" conventions computed here; whitespace is made
visible by one rule; a word-level vocabulary shows its words unchanged."""

from __future__ import annotations

import pytest
from bpe import RAW_SYMBOLS, bpe_lens, byte_level_text
from conftest import get_model

from tl_clt.lens import tiny_model
from tl_clt.tokenization import separator, token_texts, visible


def test_byte_level_tokens_decode_to_their_bytes_with_the_replacement_character():
    lens = bpe_lens("byte_level")
    tok = lens.tokenizer
    specials = set(tok.all_special_ids)
    symbols = tok.convert_ids_to_tokens(list(range(lens.d_vocab)))
    texts = lens.vocabulary()
    assert len(texts) == lens.d_vocab
    for i, (symbol, text) in enumerate(zip(symbols, texts)):
        assert text == (symbol if i in specials else byte_level_text(symbol)), (i, symbol)
    assert not any(s in t for t in texts for s in RAW_SYMBOLS)
    # the vocabulary does hold the cases that matter: a word with its space, a newline, a tab,
    # and bytes of a multi-byte character on their own
    assert {" Paris", "\n", "\t"} <= set(texts)
    assert any("\ufffd" in t for t in texts) and any("\u0120" in s for s in symbols)
    # a prompt's tokens, with "ü" split over two tokens: each shows U+FFFD, none crashes
    tokens = lens.tokens("The road from Zürich to Paris\n")
    ids = tokens[0].tolist()
    assert lens.token_texts(tokens) == [texts[i] for i in ids]
    assert "".join(lens.token_texts(tokens)[1:]).count("\ufffd") == 2
    assert lens.decode(tokens) == tok.decode(ids)  # running text: the character is whole
    assert lens.decode(tokens).endswith("The road from Zürich to Paris\n")


def test_metaspace_tokens_keep_the_space_their_symbol_stands_for():
    lens = bpe_lens("metaspace")
    tok = lens.tokenizer
    specials = set(tok.all_special_ids)
    symbols = tok.convert_ids_to_tokens(list(range(lens.d_vocab)))
    texts = lens.vocabulary()
    for i, (symbol, text) in enumerate(zip(symbols, texts)):
        assert text == (symbol if i in specials else symbol.replace("\u2581", " ")), (i, symbol)
    assert " Paris" in texts and "\u2581Paris" in symbols
    # decoding a token alone would drop its space (the decoder strips a text's first space)
    paris = symbols.index("\u2581Paris")
    assert tok.decode([paris]) == "Paris" and lens.token_text(paris) == " Paris"


def test_word_level_tokens_are_their_words():
    lens = get_model("gpt2")
    ids = list(range(lens.d_vocab))
    assert lens.vocabulary() == lens.tokenizer.convert_ids_to_tokens(ids)
    assert lens.token_texts(lens.tokens("w3 w1")) == ["<bos>", "w3", "w1"]
    assert [visible(t) for t in lens.vocabulary()] == lens.vocabulary()
    assert separator(lens.vocabulary()) == " "
    assert separator(bpe_lens("byte_level").vocabulary()) == ""


def test_visible_marks_whitespace_and_control_characters():
    assert visible(" Paris") == "\u2423Paris"
    assert visible("\n") == "\u21b5" and visible("\t") == "\u21e5"
    assert visible("\r") == "\u240d" and visible("\x00\x7f") == "\u2400\u2421"
    assert visible(" a b\n", spaces=False) == " a b\u21b5"
    assert visible("w1") == "w1" and visible("\ufffd") == "\ufffd"


def test_ids_outside_the_tokenizer_and_no_tokenizer():
    lens = bpe_lens("byte_level")
    n = len(lens.tokenizer)
    assert lens.token_texts([n, 5]) == [f"<id {n}>", lens.vocabulary()[5]]
    assert token_texts(None, [3]) == ["<id 3>"]


@pytest.mark.parametrize("family", ["llama", "neox"])
def test_other_families_show_word_level_words(family):
    lens = tiny_model(family)
    tokens = lens.tokens("w2 w7")
    assert lens.token_texts(tokens) == ["<bos>", "w2", "w7"]
    assert lens.decode(tokens[0, 1:]) == "w2 w7"


def test_byte_fallback_tokens_decode_to_their_bytes(tmp_path):
    """A Llama-style vocabulary: "▁" words, byte tokens "<0x0A>" for what it lacks, and a
    decoder that strips the text's first space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<unk>": 1} | {f"<0x{b:02X}>": 2 + b for b in range(256)}
    for word in ("\u2581", "a", "r", "i", "s", "P", "Pa", "Par", "Pari", "Paris", "\u2581Paris"):
        vocab.setdefault(word, len(vocab))
    merges = [("P", "a"), ("Pa", "r"), ("Par", "i"), ("Pari", "s"), ("\u2581", "Paris")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])  # fmt: skip
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", unk_token="<unk>"
    ).save_pretrained(tmp_path)
    fast = AutoTokenizer.from_pretrained(tmp_path)
    ids = fast("Paris Paris\nü", add_special_tokens=False)["input_ids"]
    symbols = fast.convert_ids_to_tokens(ids)
    assert symbols == ["\u2581Paris", "\u2581Paris", "<0x0A>", "<0xC3>", "<0xBC>"]
    assert token_texts(fast, ids) == [" Paris", " Paris", "\n", "\ufffd", "\ufffd"]
    assert [visible(t) for t in token_texts(fast, ids)] == [
        "␣Paris",
        "␣Paris",
        "↵",
        "\ufffd",
        "\ufffd",
    ]
    assert fast.decode(ids) == "Paris Paris\nü"  # the running text has the character whole
    assert fast.decode(ids[:1]) == "Paris"  # alone, the decoder strips the space
