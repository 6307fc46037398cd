"""Token sources for the feature index: fixed-shape batches of token sequences, in a
deterministic order, so that an interrupted pass can resume by skipping the batches it has
done. A source yields `TokenBatch`es (`tl_clt.activations.text.TokenBatch`, the one type for
tokens with a mask): `keep` marks the positions whose activations are used, `real` the
positions that hold a token (`keep` plus the BOS at position 0); the index reads `real`.

- `TensorSource`: a tensor of token sequences [n_seq, seq_len].
- `TextSource`: texts tokenised by a model (BOS prepended, one text per row, right-padded).

A list of texts or a token tensor is turned into one of these by `as_source`. The shipped
model's corpus is `tl_clt.toy.corpus_texts()`; nothing here knows of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from tl_clt.activations.text import TokenBatch
from tl_clt.errors import InputError

__all__ = ["TensorSource", "TextSource", "TokenBatch", "TokenSource", "as_source"]


@runtime_checkable
class TokenSource(Protocol):
    """What `build_feature_index` reads. `batches(start)` yields the batches from number
    `start` on, the same ones every time; `fingerprint` names the data (checked on resume)."""

    fingerprint: str

    def batches(self, start: int = 0) -> Iterator[TokenBatch]: ...

    def __len__(self) -> int: ...


@dataclass
class TensorSource:
    """Token sequences from a tensor [n_seq, seq_len] (every position real and kept)."""

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
            keep = torch.zeros((len(rows), width), dtype=torch.bool)
            for j, r in enumerate(rows):
                toks[j, : len(r)], keep[j, 1 : len(r)] = r, True  # not the BOS, not padding
            yield TokenBatch(toks, keep)


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
