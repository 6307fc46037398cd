"""A word-level tokenizer in the standard Hugging Face format, so models that have no hub
tokenizer still work with `to_tokens` / `to_str_tokens` under TransformerLens 3.x and 4.x."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
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
