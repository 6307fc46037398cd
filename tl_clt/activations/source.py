"""`ActivationSource`: every layer's MLP input and output from a TransformerLens model, in one
forward pass per batch that stops after the last MLP, mixed at token level and served as
batches for training.

Shuffling works on chunks of about `buffer_tokens` tokens (many whole sequences): a chunk's
activations are collected (or read from the disk cache), permuted with a generator seeded by
(seed, epoch, chunk) and cut into batches; a remainder smaller than a batch is dropped. Memory
is bounded by one chunk, and batch n can be produced again without recomputing the batches
before it (only their text is re-tokenised), which is what resuming a run needs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from tl_clt.activations.store import ActivationStore, tokens_digest, weights_checksum
from tl_clt.activations.text import (
    TokenBatch,
    TokenSeq,
    is_hf_dataset,
    iter_texts,
    pad_sequences,
    text_sequences,
    token_sequences,
)
from tl_clt.config import CLTConfig
from tl_clt.errors import InputError
from tl_clt.lens import Lens


class ActivationBatch(NamedTuple):
    """MLP inputs and outputs of N tokens at every layer."""

    x: Float[Tensor, "n n_layers d_model"]
    y: Float[Tensor, "n n_layers d_model"]


class Chunk(NamedTuple):
    index: int
    seqs: list[TokenSeq] | None  # None: read from a complete cache without the text
    n_tokens: int


class _Collected(Exception):
    """Raised by the last MLP output hook: nothing after the last MLP needs computing."""


class ActivationSource:
    """MLP activations of a model over some data, as shuffled batches.

    Args:
        model: a TransformerLens model or a `Lens`.
        data: an iterable of texts, a Hugging Face `datasets` dataset (its `text_column`), a
            [batch, pos] token tensor, a `TokenBatch`, or an iterable of token tensors.
        input_hook, output_hook: per-layer sites (CLTConfig.input_hook / output_hook).
        seq_len: longest sequence (BOS included); longer texts are cut into windows.
        model_batch_size: sequences per forward pass.
        buffer_tokens: size of a shuffle chunk, in tokens (bounds the memory used).
        holdout_sequences: the first sequences of the data, set aside for evaluation.
        cache_dir: where to cache activations (None: no cache).
        cache_write: write missing shards into the cache (only one process of a distributed
            job should; the others read what is already there).
        dtype: dtype of the activations served; device: where they live (model's device).
        seed: seed of the shuffle.
    """

    def __init__(
        self,
        model: Any,
        data: Any,
        *,
        input_hook: str = "ln2.hook_normalized",
        output_hook: str = "hook_mlp_out",
        seq_len: int = 128,
        model_batch_size: int = 32,
        buffer_tokens: int = 32768,
        holdout_sequences: int = 0,
        cache_dir: str | None = None,
        cache_write: bool = True,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int = 0,
        text_column: str = "text",
    ) -> None:
        if isinstance(data, str):
            raise InputError("data is a single string; give an iterable of texts, e.g. [text]")
        for name, value in (("seq_len", seq_len), ("model_batch_size", model_batch_size),
                            ("buffer_tokens", buffer_tokens)):  # fmt: skip
            if value < 1:
                raise InputError(f"{name} must be positive, got {value}")
        self.lens = model if isinstance(model, Lens) else Lens(model)
        self.data = data
        self.hooks = (input_hook, output_hook)
        self.in_names = [self.lens.mlp_in(layer, input_hook) for layer in range(self.lens.n_layers)]
        self.out_names = [
            self.lens.mlp_out(layer, output_hook) for layer in range(self.lens.n_layers)
        ]
        self.seq_len = min(seq_len, self.lens.n_ctx)
        self.model_batch_size = model_batch_size
        self.buffer_tokens = buffer_tokens
        self.holdout_sequences = holdout_sequences
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else self.lens.device
        self.seed = seed
        self.text_column = text_column
        tok = self.lens.tokenizer
        self.bos = None if tok is None else tok.bos_token_id
        pad = None if tok is None else tok.pad_token_id
        self.pad = pad if pad is not None else (self.bos if self.bos is not None else 0)
        self.cache = None if cache_dir is None else ActivationStore(cache_dir, self._fingerprint())
        self.cache_write = cache_write

    @classmethod
    def for_transcoder(
        cls, model: Any, data: Any, cfg: CLTConfig, **kwargs: Any
    ) -> ActivationSource:
        """A source reading the hooks `cfg` names."""
        return cls(model, data, input_hook=cfg.input_hook, output_hook=cfg.output_hook, **kwargs)

    def _fingerprint(self) -> dict[str, Any]:
        lens = self.lens
        return {
            "model": lens.name, "n_layers": lens.n_layers, "d_model": lens.d_model,
            "weights": weights_checksum(lens.model), "input_hook": self.hooks[0],
            "output_hook": self.hooks[1], "seq_len": self.seq_len,
            "buffer_tokens": self.buffer_tokens, "holdout_sequences": self.holdout_sequences,
            "dtype": str(self.dtype).removeprefix("torch."), "bos": self.bos,
        }  # fmt: skip

    def data_fingerprint(self, n_sequences: int = 16) -> str:
        """A short hash of what this source yields: its settings, the model's weights and the
        tokens of its first `n_sequences` sequences (a resumed run checks it is fed the same)."""
        h = hashlib.sha256(json.dumps(self._fingerprint(), sort_keys=True).encode())
        h.update(str(self.seed).encode())
        if self.data is not None:
            for seq in itertools.islice(self.sequences(), n_sequences):
                h.update(seq.ids.to("cpu", torch.int64).numpy().tobytes())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ sequences
    def sequences(self) -> Iterator[TokenSeq]:
        """Every sequence of the data, in order (one epoch), held-out ones included."""
        data = self.data
        if isinstance(data, (Tensor, TokenBatch)):
            yield from token_sequences(data, self.bos, self.pad)
            return
        if is_hf_dataset(data):
            yield from self._texts(iter_texts(data, self.text_column))
            return
        items = iter(data)
        first = next(items, None)
        if first is None:
            return
        items = itertools.chain([first], items)
        if isinstance(first, (Tensor, TokenBatch)):
            yield from token_sequences(items, self.bos, self.pad)
        else:
            yield from self._texts(iter_texts(items, self.text_column))

    def _texts(self, texts: Iterable[str]) -> Iterator[TokenSeq]:
        if self.lens.tokenizer is None:
            raise InputError("the model has no tokenizer; give token tensors instead of texts")
        yield from text_sequences(texts, self.lens.tokenizer, self.seq_len)

    def heldout(self) -> TokenBatch | None:
        """The held-out sequences (the first `holdout_sequences` of the data), padded."""
        seqs = list(itertools.islice(self.sequences(), self.holdout_sequences))
        return pad_sequences(seqs, self.pad) if seqs else None

    def chunks(self, epoch: int = 0) -> Iterator[Chunk]:
        """The shuffle chunks of one epoch (after the held-out sequences)."""
        if epoch > 0 and self.cache is not None and self.cache.complete_chunks is not None:
            for i in range(self.cache.complete_chunks):
                yield Chunk(i, None, self.cache.shards[i]["n_tokens"])
            return
        seqs: list[TokenSeq] = []
        count, index = 0, 0
        for seq in itertools.islice(self.sequences(), self.holdout_sequences, None):
            n = int(seq.keep.sum())
            if n == 0:
                continue
            seqs.append(seq)
            count += n
            if count >= self.buffer_tokens:
                yield Chunk(index, seqs, count)
                seqs, count, index = [], 0, index + 1
        if seqs:
            yield Chunk(index, seqs, count)

    # ------------------------------------------------------------------ activations
    def collect(self, batch: TokenBatch) -> ActivationBatch:
        """MLP inputs and outputs at the kept positions of one token batch, in one forward pass
        that stops after the last MLP. Rows are the kept positions in row-major order."""
        L = self.lens.n_layers
        keep = batch.keep.to(self.lens.device)
        xs: list[Tensor | None] = [None] * L
        ys: list[Tensor | None] = [None] * L

        def read(t: Tensor, hook: Any, layer: int, store: list, last: bool = False) -> None:
            store[layer] = t[keep].to(device=self.device, dtype=self.dtype)
            if last:
                raise _Collected

        hooks = [(n, partial(read, layer=i, store=xs)) for i, n in enumerate(self.in_names)]
        hooks += [
            (n, partial(read, layer=i, store=ys, last=i == L - 1))
            for i, n in enumerate(self.out_names)
        ]
        try:
            with torch.no_grad():
                self.lens.run(batch.tokens.to(self.lens.device), hooks, stop_at_layer=L)
        except _Collected:
            pass
        if any(t is None for t in xs + ys):
            raise RuntimeError("the forward pass did not reach every MLP hook")
        return ActivationBatch(torch.stack(xs, dim=1), torch.stack(ys, dim=1))

    def chunk_activations(self, chunk: Chunk) -> ActivationBatch:
        """A chunk's activations (read from the cache when it has them, else computed)."""
        digest = None if chunk.seqs is None else tokens_digest([s.ids for s in chunk.seqs])
        if self.cache is not None and self.cache.has(chunk.index):
            x, y = self.cache.read(chunk.index, digest or self.cache.shards[chunk.index]["tokens"])
            return ActivationBatch(x.to(self.device), y.to(self.device))
        if chunk.seqs is None:
            raise InputError(f"shard {chunk.index} is missing from the activation cache")
        shape = (chunk.n_tokens, self.lens.n_layers, self.lens.d_model)
        x = torch.empty(shape, dtype=self.dtype, device=self.device)
        y = torch.empty(shape, dtype=self.dtype, device=self.device)
        row = 0
        for start in range(0, len(chunk.seqs), self.model_batch_size):
            part = self.collect(
                pad_sequences(chunk.seqs[start : start + self.model_batch_size], self.pad)
            )
            n = part.x.shape[0]
            x[row : row + n], y[row : row + n] = part.x, part.y
            row += n
        if self.cache is not None and self.cache_write:
            self.cache.write(chunk.index, digest, x, y)
        return ActivationBatch(x, y)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[ActivationBatch]:
        """Shuffled batches of `batch_size` tokens, epoch after epoch, beginning at batch
        number `start` (the batches before it are skipped without computing them)."""
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        produced, epoch = 0, 0
        while True:
            epoch_batches, n_chunks = 0, 0
            for chunk in self.chunks(epoch):
                n = chunk.n_tokens // batch_size
                n_chunks, epoch_batches = n_chunks + 1, epoch_batches + n
                if produced + n <= start:
                    produced += n
                    continue
                x, y = self.chunk_activations(chunk)
                perm = torch.randperm(
                    chunk.n_tokens, generator=_generator(self.seed, epoch, chunk.index)
                )
                perm = perm.to(x.device)
                for b in range(n):
                    if produced >= start:
                        idx = perm[b * batch_size : (b + 1) * batch_size]
                        yield ActivationBatch(x[idx], y[idx])
                    produced += 1
            if epoch_batches == 0:
                raise InputError(
                    f"the data yielded no batch of {batch_size} tokens in epoch {epoch} (too little "
                    "text, or a one-shot iterator that is used up: give a list, a dataset, or a "
                    "cache_dir so later epochs re-read the cache)"
                )
            cache = self.cache if self.cache_write else None
            if epoch == 0 and cache is not None and all(map(cache.has, range(n_chunks))):
                cache.mark_complete(n_chunks)
            epoch += 1


def _generator(seed: int, epoch: int, chunk: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{epoch}:{chunk}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
