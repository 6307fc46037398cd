"""A word-level tokenizer in the standard Hugging Face format, so models that have no hub
tokenizer still work with `to_tokens` / `to_str_tokens` under TransformerLens 3.x and 4.x."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tl_clt._files import atomic_write_text
from tl_clt.errors import InputError

BOS, PAD, UNK = "<bos>", "<pad>", "<unk>"
SPECIALS = (BOS, PAD, UNK)


def word_level_tokenizer(
    words: Iterable[str], directory: str | os.PathLike, lowercase: bool = False
):
    """Build a whitespace-split word-level tokenizer over `words` (specials first: <bos>,
    <pad>, <unk>), save it to `directory` and return it reloaded from there (TransformerLens 4
    needs a saved tokenizer: an unsaved one lacks `name_or_path`). With `lowercase`, text is
    lower-cased before the lookup ("Dallas" is "dallas"); every word must then be lower case."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for word in (*SPECIALS, *words):
        if not word or any(ch.isspace() for ch in word):
            raise InputError(f"vocabulary word {word!r} is empty or contains whitespace")
        if lowercase and word != word.lower():
            raise InputError(
                f"vocabulary word {word!r} has capitals, which a lower-casing tokenizer can never "
                "produce; lower-case the vocabulary or pass lowercase=False"
            )
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=PAD, unk_token=UNK
    )
    save_tokenizer(fast, directory)
    return load_tokenizer(directory)


#: The class a saved fast tokenizer names in tokenizer_config.json: one that transformers 4.x
#: and 5.x both load (5.x writes "TokenizersBackend", a name 4.x does not know).
PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def save_tokenizer(tokenizer, directory: str | os.PathLike) -> None:
    """`tokenizer.save_pretrained(directory)`, with tokenizer_config.json naming a class that
    both transformers majors load (so a saved model opens beside libraries pinned to 4.x)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
        atomic_write_text(path, json.dumps(config, indent=2) + "\n")


def load_tokenizer(directory: str | os.PathLike):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


# ---------------------------------------------------------------------- token text
SPACE, NEWLINE, TAB = "\u2423", "\u21b5", "\u21e5"  # ␣ ↵ ⇥
_VISIBLE = {0x0A: NEWLINE, 0x09: TAB, 0x7F: "\u2421"} | {
    c: chr(0x2400 + c) for c in range(0x20) if c not in (0x0A, 0x09)
}
_VISIBLE_SPACES = _VISIBLE | {0x20: SPACE}


def visible(text: str, spaces: bool = True) -> str:
    """`text` with its whitespace made visible: a newline as "↵", a tab as "⇥", any other
    control character as its Unicode control picture and, with `spaces` (a token shown on its
    own), a space as "␣". With `spaces=False` (running text), spaces stay spaces."""
    return text.translate(_VISIBLE_SPACES if spaces else _VISIBLE)


def token_texts(tokenizer, ids: Iterable[int]) -> list[str]:
    """The decoded text of each token id: what the token stands for in running text (a
    leading space included), never its vocabulary symbol. A token holding only part of a
    multi-byte character decodes to U+FFFD ("\ufffd"); an id outside the tokenizer is
    "<id N>".

    A tokenizer without a decoder (a word-level one) joins tokens with spaces when it decodes:
    its tokens' texts are the tokens themselves. Otherwise each token is decoded after an
    anchor (a special token) and the anchor's text is cut off, since decoders drop the leading
    space of the first token of a text (SentencePiece's "▁")."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [f"<id {i}>" for i in ids]
    size = len(tokenizer)
    known = [i for i in ids if 0 <= i < size]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.decoder is None:
        texts = [str(t) for t in tokenizer.convert_ids_to_tokens(known)]
    else:
        texts = _anchored(tokenizer, known)
    found = dict(zip(known, texts))
    return [found.get(i, f"<id {i}>") for i in ids]


def _anchored(tokenizer, ids: Sequence[int]) -> list[str]:
    decode = dict(clean_up_tokenization_spaces=False, skip_special_tokens=False)
    anchor = next((a for a in tokenizer.all_special_ids if tokenizer.decode([a], **decode)), None)
    if anchor is None:
        return [tokenizer.decode([i], **decode) for i in ids]
    prefix = tokenizer.decode([anchor], **decode)
    pairs = tokenizer.batch_decode([[anchor, i] for i in ids], **decode)
    return [
        p[len(prefix) :] if p.startswith(prefix) else tokenizer.decode([i], **decode)
        for i, p in zip(ids, pairs)
    ]


def decode(tokenizer, ids: Iterable[int]) -> str:
    """The running text of a token sequence, as the tokenizer decodes it (special tokens
    kept, no clean-up of spaces before punctuation)."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return " ".join(f"<id {i}>" for i in ids)
    return tokenizer.decode(ids, clean_up_tokenization_spaces=False, skip_special_tokens=False)


def separator(vocab: Sequence[str]) -> str:
    """What goes between token texts to show running text: a space for a word-level
    vocabulary (its words carry no spacing of their own: under 5% of them start with
    whitespace), nothing for a subword one (" Paris" carries its space)."""
    with_space = sum(1 for t in vocab if t[:1].isspace() or t.startswith("\u0120"))
    return " " if with_space < 0.05 * max(len(vocab), 1) else ""
