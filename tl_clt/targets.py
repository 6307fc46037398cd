"""Logit targets of an attribution graph: the most likely next tokens (until their cumulative
probability reaches 0.95, at most 10), tokens the caller names, or one logit difference. Each
target is a direction on the last position's logits: one-hot minus uniform for a token (its
logit minus the mean logit, i.e. the unembedding column minus the mean column applied after the
frozen final norm), or +1/−1 for a difference."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from tl_clt.errors import InputError
from tl_clt.graph import Node, NodeKind
from tl_clt.replacement import CleanRun, ReplacementModel
from tl_clt.tokenization import visible


class LogitDifference(NamedTuple):
    """A single logit target: logit(positive) − logit(negative) at the last position."""

    positive: str | int
    negative: str | int


Targets = Sequence[str | int] | LogitDifference | None


class LogitTargets(NamedTuple):
    directions: Float[Tensor, "n d_vocab"]  # applied to the last position's logits
    nodes: list[Node]


def logit_targets_for(
    replacement: ReplacementModel,
    run: CleanRun,
    targets: Targets = None,
    max_logits: int = 10,
    logit_probability: float = 0.95,
) -> LogitTargets:
    """The logit target nodes and their directions on the last position's logits."""
    lens = replacement.lens
    logits = run.logits[0, -1].float()
    vocab = logits.shape[-1]
    probs = torch.softmax(logits, -1)
    if isinstance(targets, LogitDifference):
        a, b = (token_id(lens, t, vocab) for t in targets)
        name = f"{visible(_token_str(lens, a))} - {visible(_token_str(lens, b))}"
        node = Node(NodeKind.LOGIT, run.tokens.shape[1] - 1, token_id=a, negative_id=b,
                    token=name, activation=float(logits[a] - logits[b]))  # fmt: skip
        return LogitTargets(logit_direction(node, vocab)[None].to(logits.device), [node])
    if targets is None:
        order = torch.argsort(probs, descending=True)
        cum = torch.cumsum(probs[order], 0)
        n = min(int((cum < logit_probability).sum()) + 1, max_logits, vocab)
        ids = order[:n].tolist()
    else:
        if isinstance(targets, str | int):  # one token, not a sequence of characters
            targets = [targets]
        ids = [token_id(lens, t, vocab) for t in targets]
        if not ids or len(set(ids)) != len(ids):
            raise InputError("targets must name at least one token, each at most once")
    direction = torch.full((len(ids), vocab), -1.0 / vocab, device=logits.device)
    direction[torch.arange(len(ids)), ids] += 1.0
    centred = logits - logits.mean()
    nodes = [
        Node(NodeKind.LOGIT, run.tokens.shape[1] - 1, token_id=t, token=_token_str(lens, t),
             activation=float(centred[t]), probability=float(probs[t]))
        for t in ids
    ]  # fmt: skip
    return LogitTargets(direction, nodes)


def logit_direction(node: Node, d_vocab: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """A logit node's direction on the last position's logits, from its token ids: one-hot
    minus uniform for a token (its logit minus the mean logit), +1/−1 for a logit difference."""
    if node.kind is not NodeKind.LOGIT or node.token_id is None:
        raise InputError(
            f"{node.label()} is not a logit node with token ids (a logit difference saved "
            "before its ids were recorded has none: rebuild the graph with attribute)"
        )
    d = torch.zeros(d_vocab, dtype=dtype)
    if node.negative_id is not None:
        d[node.token_id] += 1.0
        d[node.negative_id] -= 1.0
        return d
    d -= 1.0 / d_vocab
    d[node.token_id] += 1.0
    return d


def token_id(lens: Any, token: str | int, vocab: int | None = None) -> int:
    """The id of one token named by its text or id: text must encode as exactly one token of
    the vocabulary; an id must lie in [0, vocab) (default: the model's d_vocab).

    Text is encoded on its own, as given, by the tokenizer without special tokens (no BOS):
    the way it would be tokenised after the prompt if the prompt's text ended where it
    starts; whitespace is kept ("\n" is a newline token where the vocabulary has one). With a subword tokenizer a word
    after a space is a different token from the same word at the start of a text (" Paris"
    and "Paris" in GPT-2's byte-level BPE; SentencePiece adds the space itself); text that is
    several tokens is refused (an `InputError` naming them), never cut to its first token."""
    vocab = lens.d_vocab if vocab is None else vocab
    if isinstance(token, str):
        if lens.tokenizer is None:
            raise InputError(f"target {token!r}: the model has no tokenizer; name the token's id")
        ids = list(lens.tokenizer(token, add_special_tokens=False)["input_ids"])
        if len(ids) != 1:
            texts = lens.token_texts(ids)
            parts = ", ".join(f"{visible(t)!r} (id {i})" for t, i in zip(texts, ids))
            raise InputError(
                f"target {token!r} is {len(ids)} tokens, not one: {parts or 'none'}; name a "
                "single token, as the text of one token or as its id (an int; on the command "
                "line id:N)"
            )
        unk = lens.unk_token_id
        if unk is not None and ids[0] == unk and token.strip() != lens.tokenizer.unk_token:
            raise InputError(
                f"target {token!r} is not in the tokenizer's vocabulary (it encodes as "
                f"{lens.tokenizer.unk_token!r}); name a token of the vocabulary"
            )
        token = ids[0]
    if isinstance(token, bool) or not isinstance(token, numbers.Integral | torch.Tensor):
        raise InputError(f"a target is a token's text (str) or id (int), got {token!r}")
    if not 0 <= int(token) < vocab:
        raise InputError(f"target token id {token} is outside the vocabulary [0, {vocab})")
    return int(token)


def _token_str(lens: Any, token_id: int) -> str:
    return lens.token_text(token_id)
