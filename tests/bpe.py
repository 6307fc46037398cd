"""Models with subword tokenizers, for tests of what people are shown: a byte-level BPE
tokenizer (GPT-2's scheme: "Ġ" for a space, "Ċ" for a newline, bytes of multi-byte characters
as separate tokens) and a SentencePiece-style one ("▁" for a space, Metaspace), each trained at
test time on generated text in a few milliseconds, on a tiny random GPT-2 model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from conftest import clt_for

from tl_clt.lens import Lens, load_model
from tl_clt.lens.build import tiny_hf_model
from tl_clt.replacement import ReplacementModel

Kind = Literal["byte_level", "metaspace"]
RAW_SYMBOLS = ("\u0120", "\u010a", "\u2581")  # Ġ Ċ ▁: vocabulary symbols no person should see
CITIES = ("Paris", "Dallas", "Austin", "Tokyo", "Zürich", "Kraków", "Lyon")


def corpus(n: int = 300) -> list[str]:
    """Generated lines with spaces, newlines, tabs, punctuation, digits and multi-byte
    characters, so the tokenizer learns words with a leading space and keeps rare characters
    as byte tokens."""
    lines = []
    for i in range(n):
        a, b = CITIES[i % len(CITIES)], CITIES[(3 * i + 1) % len(CITIES)]
        lines.append(f"The road from {a} to {b} is long.\n\tIt took {i % 17} days — café 😀")
    return lines


def bpe_tokenizer(directory: str | Path, kind: Kind = "byte_level", vocab_size: int = 320):
    """A BPE tokenizer trained on `corpus()`, saved to `directory` and reloaded from there
    (TransformerLens re-reads a tokenizer from its directory)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if kind == "byte_level":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                   "unk_token": "<|endoftext|>"}  # fmt: skip
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        special = {"bos_token": "<s>", "eos_token": "<s>", "unk_token": "<unk>"}
        alphabet = []
    names = list(dict.fromkeys(special.values()))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=names,
                                  initial_alphabet=alphabet, show_progress=False)  # fmt: skip
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    Path(directory).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


def save_bpe_model(directory: str | Path, kind: Kind = "byte_level") -> Path:
    """A tiny random GPT-2 model with a `kind` tokenizer, saved as a checkpoint directory."""
    directory = Path(directory)
    tok = bpe_tokenizer(directory, kind)
    hf = tiny_hf_model("gpt2", n_layers=2, d_vocab=len(tok), n_ctx=64)
    hf.save_pretrained(directory)
    return directory


_MODELS: dict[str, Lens] = {}


def bpe_lens(kind: Kind = "byte_level") -> Lens:
    """The tiny model with a `kind` tokenizer, built once per test session."""
    if kind not in _MODELS:
        _MODELS[kind] = load_model(save_bpe_model(tempfile.mkdtemp(prefix=f"tl_clt_{kind}_"), kind))
    return _MODELS[kind]


def bpe_replacement(kind: Kind = "byte_level", n_features: int = 32) -> ReplacementModel:
    lens = bpe_lens(kind)
    return ReplacementModel(lens, clt_for(lens, n_features=n_features))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others are
    shifted to code points from 256 up (so a space is "Ġ", a newline "Ċ")."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def byte_level_text(symbol: str) -> str:
    """What a byte-level vocabulary symbol stands for, computed from GPT-2's byte alphabet:
    its bytes as UTF-8, a byte that is part of a multi-byte character replaced by U+FFFD."""
    return bytes(_TO_BYTE[c] for c in symbol).decode("utf-8", errors="replace")


def expected_texts(lens: Lens, ids: list[int]) -> list[str]:
    """The decoded text of each id by the tokenizer's own convention (byte alphabet or "▁"),
    independent of `tl_clt.tokenization`; special tokens as they are."""
    tok = lens.tokenizer
    out = []
    for i, symbol in zip(ids, tok.convert_ids_to_tokens(ids)):
        if i in tok.all_special_ids:
            out.append(symbol)
        elif tok.backend_tokenizer.decoder.__class__.__name__ == "ByteLevel":
            out.append(byte_level_text(symbol))
        else:
            out.append(symbol.replace("\u2581", " "))
    return out


def strings(value) -> list[str]:
    """Every string inside a JSON-like value (keys and values)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in strings(v)]
    return []


def raw_symbols(text: str) -> list[str]:
    """The vocabulary symbols found in `text`."""
    return [s for s in RAW_SYMBOLS if s in text]
