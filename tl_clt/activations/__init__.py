"""Activations for training: every layer's MLP input and output from a TransformerLens model,
from texts, Hugging Face datasets or token tensors, token-shuffled, optionally cached on disk."""

from tl_clt.activations.source import ActivationBatch, ActivationSource, Chunk
from tl_clt.activations.store import ActivationStore
from tl_clt.activations.text import TokenBatch, TokenSeq, load_text_dataset, text_sequences

__all__ = [
    "ActivationBatch",
    "ActivationStore",
    "ActivationSource",
    "Chunk",
    "TokenBatch",
    "TokenSeq",
    "load_text_dataset",
    "text_sequences",
]
