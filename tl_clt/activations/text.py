"""From a user's data to token sequences: plain texts, Hugging Face `datasets` datasets (streamed
or from local files) and token tensors, each turned into BOS-prefixed windows of at most
`seq_len` tokens with a mask of the positions whose activations are kept (BOS and padding are
dropped: their norms are outliers)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from tl_clt.errors import InputError

#: How many texts are tokenised in one call to the (fast) tokenizer.
TOKENIZE_GROUP = 256


class TokenBatch(NamedTuple):
    """Token ids of a batch of sequences and the positions whose activations are used: the one
    batch type of token sequences (activation sources, held-out evaluation, feature-index
    token sources). `keep` is False at padding and at a leading BOS; `real` adds position 0
    back (the positions that hold a token)."""

    tokens: Int[Tensor, "batch pos"]
    keep: Bool[Tensor, "batch pos"]

    @property
    def real(self) -> Bool[Tensor, "batch pos"]:
        """Positions holding a token (BOS included), as opposed to padding."""
        return self.keep | (torch.arange(self.tokens.shape[1], device=self.tokens.device) == 0)


class TokenSeq(NamedTuple):
    """One sequence: token ids and which positions to keep (False at BOS)."""

    ids: Int[Tensor, " pos"]
    keep: Bool[Tensor, " pos"]


def is_hf_dataset(data: Any) -> bool:
    """True for a `datasets.Dataset` / `IterableDataset` (duck-typed: no import needed)."""
    return type(data).__module__.startswith("datasets") and hasattr(data, "features")


def iter_texts(data: Iterable[Any], text_column: str = "text") -> Iterator[str]:
    """Texts of an iterable of strings or of a Hugging Face dataset's `text_column`."""
    hf = is_hf_dataset(data)
    for i, item in enumerate(data):
        if hf or isinstance(item, dict):
            if text_column not in item:
                raise InputError(
                    f"the dataset has no column {text_column!r} (columns: {sorted(item)}); "
                    "name the text column with text_column=..."
                )
            item = item[text_column]
        if not isinstance(item, str):
            raise InputError(f"item {i} of the text source is a {type(item).__name__}, not a str")
        yield item


def text_sequences(texts: Iterable[str], tokenizer: Any, seq_len: int) -> Iterator[TokenSeq]:
    """Tokenise texts (in groups, no special tokens) and cut each into windows of seq_len - 1
    tokens, each prefixed with the tokenizer's BOS (when it has one). Empty texts are skipped."""
    if seq_len < 2:
        raise InputError(f"seq_len must be at least 2 (BOS + one token), got {seq_len}")
    bos = tokenizer.bos_token_id
    width = seq_len - 1 if bos is not None else seq_len
    group: list[str] = []
    for text in texts:
        group.append(text)
        if len(group) == TOKENIZE_GROUP:
            yield from _windows(group, tokenizer, bos, width)
            group = []
    if group:
        yield from _windows(group, tokenizer, bos, width)


def _windows(texts: list[str], tokenizer: Any, bos: int | None, width: int) -> Iterator[TokenSeq]:
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        for start in range(0, len(ids), width):
            window = torch.tensor(ids[start : start + width], dtype=torch.long)
            keep = torch.ones(len(window), dtype=torch.bool)
            if bos is not None:
                window = torch.cat([torch.tensor([bos]), window])
                keep = torch.cat([torch.tensor([False]), keep])
            yield TokenSeq(window, keep)


def token_sequences(
    data: Tensor | TokenBatch | Iterable[Tensor | TokenBatch], bos: int | None, pad: int | None
) -> Iterator[TokenSeq]:
    """Rows of token tensors ([batch, pos] or [pos]). Without an explicit mask, position 0 is
    dropped when it holds BOS, and trailing `pad` tokens are dropped when pad differs from BOS."""
    items = [data] if isinstance(data, (Tensor, TokenBatch)) else data
    for item in items:
        tokens, keep = (item.tokens, item.keep) if isinstance(item, TokenBatch) else (item, None)
        if not isinstance(tokens, Tensor) or tokens.dtype not in (
            torch.long,
            torch.int32,
            torch.int64,
        ):
            raise InputError(f"expected integer token tensors, got {type(tokens).__name__}")
        tokens = tokens.reshape(-1, tokens.shape[-1]).long().cpu()
        keep = _default_keep(tokens, bos, pad) if keep is None else keep.reshape(tokens.shape).cpu()
        for row, row_keep in zip(tokens, keep):
            real = int(row_keep.nonzero().max()) + 1 if row_keep.any() else 0
            if real:
                yield TokenSeq(row[:real], row_keep[:real].bool())


def _default_keep(tokens: Tensor, bos: int | None, pad: int | None) -> Tensor:
    keep = torch.ones_like(tokens, dtype=torch.bool)
    if bos is not None:
        keep[:, 0] &= tokens[:, 0] != bos
    if pad is not None and pad != bos:
        keep &= tokens != pad
    return keep


def pad_sequences(seqs: list[TokenSeq], pad: int) -> TokenBatch:
    """Right-pad sequences into one batch (padding is never kept; causal attention means it
    cannot change the real positions)."""
    width = max(len(s.ids) for s in seqs)
    tokens = torch.full((len(seqs), width), pad, dtype=torch.long)
    keep = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s.ids)] = s.ids
        keep[i, : len(s.ids)] = s.keep
    return TokenBatch(tokens, keep)


def load_text_dataset(
    source: str | os.PathLike,
    split: str = "train",
    streaming: bool = False,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """A Hugging Face dataset from local files (.txt: one text per line; .json/.jsonl, .csv,
    .parquet) or, when `source` is not a local path, from the hub by name (needs a network)."""
    import datasets

    path = Path(source)
    kw: dict[str, Any] = {"split": split, "streaming": streaming}
    if cache_dir is not None:
        kw["cache_dir"] = str(cache_dir)
    if path.exists():
        files = (
            sorted(str(p) for p in path.rglob("*") if p.is_file()) if path.is_dir() else [str(path)]
        )
        if not files:
            raise InputError(f"{path} holds no files")
        if all(Path(f).stat().st_size == 0 for f in files):
            raise InputError(f"{path} is empty; give a file with at least one text")
        builder = _builder(files[0])
        return _load(
            source, lambda: datasets.load_dataset(builder, data_files={split: files}, **kw)
        )
    return _load(source, lambda: datasets.load_dataset(str(source), name, **kw))


def _load(source: str | os.PathLike, load: Any):
    """`load()`, its failures (an unreadable file, an unknown dataset, no network) as an
    InputError naming `source`."""
    try:
        return load()
    except InputError:
        raise
    except Exception as exc:  # datasets raises many kinds (DatasetGenerationError, ...)
        cause = exc.__cause__ or exc
        raise InputError(
            f"cannot read the text source {source}: {type(cause).__name__}: {cause}. Give a "
            ".txt/.jsonl/.csv/.parquet file or directory, or a dataset name with network access"
        ) from exc


def _builder(file: str) -> str:
    suffix = Path(file).suffix.lower()
    builders = {
        ".txt": "text",
        ".json": "json",
        ".jsonl": "json",
        ".csv": "csv",
        ".parquet": "parquet",
    }
    if suffix not in builders:
        raise InputError(f"cannot read {file}: use .txt, .json, .jsonl, .csv or .parquet files")
    return builders[suffix]
