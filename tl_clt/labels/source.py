"""Token sources for the feature index: fixed-shape batches of token sequences, in a
deterministic order, so that an interrupted pass can resume by skipping the batches it has
done. A source yields `TokenBatch`es: tokens plus a mask of real (non-padding) positions.

- `TensorSource`: a tensor of token sequences [n_seq, seq_len].
- `TextSource`: texts tokenised by a model (BOS prepended, one text per row, right-padded).
- `default_source()`: the shipped model's corpus (`tl_clt.toy`), resolved on first use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from tl_clt.errors import InputError


class TokenBatch(NamedTuple):
    tokens: Int[Tensor, "batch pos"]
    real: Bool[Tensor, "batch pos"]  # False at padding


@runtime_checkable
class TokenSource(Protocol):
    """What `build_feature_index` reads. `batches(start)` yields the batches from number
    `start` on, the same ones every time; `fingerprint` names the data (checked on resume)."""

    fingerprint: str

    def batches(self, start: int = 0) -> Iterator[TokenBatch]: ...

    def __len__(self) -> int: ...


@dataclass
class TensorSource:
    """Token sequences from a tensor [n_seq, seq_len] (every position real)."""

    tokens: Tensor  # [n_seq, seq_len], checked below with a message
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.tokens.shape[0] == 0 or self.tokens.shape[1] == 0:
            raise InputError(
                f"a token source needs a non-empty 2-d tensor [n_sequences, seq_len]; got shape "
                f"{tuple(self.tokens.shape)}"
            )
        if self.batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {self.batch_size}")
        data = self.tokens.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
        shape = "x".join(map(str, self.tokens.shape))
        self.fingerprint = f"tensor:{shape}:{hashlib.sha256(data).hexdigest()[:16]}"

    def __len__(self) -> int:
        return -(-self.tokens.shape[0] // self.batch_size)

    def batches(self, start: int = 0) -> Iterator[TokenBatch]:
        for i in range(start, len(self)):
            toks = self.tokens[i * self.batch_size : (i + 1) * self.batch_size]
            yield TokenBatch(toks, torch.ones_like(toks, dtype=torch.bool))


class TextSource:
    """Texts tokenised by `lens` (each with a BOS, cut to `max_len` tokens), `batch_size` texts
    per batch, right-padded."""

    def __init__(
        self, texts: Iterable[str], lens: Any, batch_size: int = 64, max_len: int | None = None
    ) -> None:
        self.texts = [t for t in texts if t and t.strip()]
        if not self.texts:
            raise InputError("the text source is empty; give at least one non-blank text")
        self.lens, self.batch_size = lens, batch_size
        self.max_len = min(max_len or lens.n_ctx, lens.n_ctx)
        digest = hashlib.sha256("\x00".join(self.texts).encode()).hexdigest()[:16]
        self.fingerprint = f"texts:{len(self.texts)}:{self.max_len}:{digest}"
        pad = getattr(lens.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def __len__(self) -> int:
        return -(-len(self.texts) // self.batch_size)

    def batches(self, start: int = 0) -> Iterator[TokenBatch]:
        for i in range(start, len(self)):
            chunk = self.texts[i * self.batch_size : (i + 1) * self.batch_size]
            rows = [self.lens.to_tokens(t)[0, : self.max_len].cpu() for t in chunk]
            width = max(len(r) for r in rows)
            toks = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            real = torch.zeros((len(rows), width), dtype=torch.bool)
            for j, r in enumerate(rows):
                toks[j, : len(r)], real[j, : len(r)] = r, True
            yield TokenBatch(toks, real)


def as_source(source: Any, lens: Any, batch_size: int) -> TokenSource:
    """`source` as a TokenSource: a TokenSource as is, a 2-d tensor of tokens, or texts."""
    if isinstance(source, TokenSource):
        return source
    if isinstance(source, Tensor):
        return TensorSource(source, batch_size)
    if isinstance(source, str):
        raise InputError("give a list of texts, not a single string, as the token source")
    if isinstance(source, Iterable):
        return TextSource(list(source), lens, batch_size)
    raise InputError(
        f"cannot read tokens from a {type(source).__name__}; give a tensor [n_seq, seq_len], a "
        "list of texts, or a TokenSource"
    )


def default_source(lens: Any, batch_size: int = 64) -> TokenSource:
    """The shipped corpus as texts for `lens` (needs `tl_clt.toy`)."""
    return TextSource(shipped_texts(), lens, batch_size)


def shipped_texts() -> Sequence[str]:
    """The shipped corpus's training texts, from `tl_clt.toy`."""
    toy = _toy()
    for name in ("corpus_texts", "load_corpus"):
        fn = getattr(toy, name, None)
        if callable(fn):
            texts = fn()
            if callable(getattr(texts, "train_texts", None)):  # a toy Corpus
                texts = texts.train_texts()
            return [getattr(t, "text", t) for t in texts]
    raise InputError("tl_clt.toy offers no corpus texts (load_corpus()); pass a token source")


def shipped_model_and_clt() -> tuple[Any, Any]:
    """The shipped model (a Lens) and its CLT, from `tl_clt.toy`."""
    toy = _toy()
    if not callable(getattr(toy, "load_clt", None)):
        raise InputError(
            "the shipped CLT is not available yet (tl_clt.toy.load_clt); pass a model and a CLT"
        )
    from tl_clt.lens import Lens

    model = toy.load_model()
    return (model if isinstance(model, Lens) else Lens(model)), toy.load_clt()


def _toy():
    try:
        import tl_clt.toy as toy
    except ImportError as exc:
        raise InputError(
            "the shipped model (tl_clt.toy) is not installed; pass a model, a CLT and a token source"
        ) from exc
    return toy


def shipped_token_classes() -> dict[str, list[str]]:
    """Token classes of the shipped corpus: `tl_clt.toy.token_classes()` if it exists, else
    read from its lexicon (each state: its name, capital and cities; each language: its antonym
    words; each rhyme: its rhyming words); empty without `tl_clt.toy`."""
    try:
        toy = _toy()
    except InputError:
        return {}
    fn = getattr(toy, "token_classes", None)
    if callable(fn):
        return dict(fn())
    try:
        from tl_clt.toy import lexicon as lx

        classes = {
            state: [state, capital, *cities] for state, (capital, cities) in lx.STATES.items()
        }
        for i, language in enumerate(lx.LANGUAGES):
            classes[language] = [w for pairs in lx.ANTONYMS for w in pairs[i]]
        for sound, pairs in lx.RHYMES.items():
            classes[f"-{sound} rhymes"] = [word for word, _ in pairs]
    except (ImportError, AttributeError, TypeError, ValueError, IndexError):
        return {}
    return classes
