"""Explainers: anything that turns a feature's examples into a label.

An explainer is any callable `explainer(examples: FeatureExamples) -> str | Label`. The
offline summariser (`OfflineExplainer`, the default) needs nothing; to use a language model,
wrap a text-completion function of your own: `llm_explainer(lambda prompt: client(prompt))`.
No explainer but the one given is ever called, and nothing here opens a network connection.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping

from tqdm.auto import tqdm

from tl_clt.errors import InputError
from tl_clt.labels import store
from tl_clt.labels.reader import FeatureIndex
from tl_clt.labels.summarise import (
    OfflineExplainer,
    balanced_accuracy,
    builtin_classes,
    window_negatives,
)
from tl_clt.labels.text import marked_context
from tl_clt.labels.types import FeatureExamples, FeatureId, FeatureLabel, Label, normalise_token
from tl_clt.tokenization import visible

Explainer = Callable[[FeatureExamples], "str | Label"]


def explainer_name(explainer: Explainer) -> str:
    return str(getattr(explainer, "name", None) or getattr(explainer, "__name__", None) or "custom")


def label_features(
    index: FeatureIndex,
    explainer: Explainer | None = None,
    name: str | None = None,
    features: Iterable[tuple[int, int]] | None = None,
    token_classes: Mapping[str, Iterable[str]] | None = None,
    progress: bool = True,
) -> int:
    """Label `features` (default: every live feature) with `explainer` (default: the offline
    summariser) and store the labels under `name`; returns how many were labelled. Scores
    are added by `tl_clt.labels.scoring.score_labels`."""
    explainer = explainer or OfflineExplainer()
    name = name or explainer_name(explainer)
    classes = builtin_classes(index.vocab)
    for cls, members in (token_classes or {}).items():
        classes[str(cls)] = frozenset(normalise_token(str(t)) for t in members)
    todo = [FeatureId(*f) for f in features] if features is not None else index.live_features()
    for layer, feature in tqdm(
        todo, desc=f"labelling ({name})", disable=not progress, unit="feature"
    ):
        ex = index.feature_examples(layer, feature, classes)
        out = explainer(ex)
        label = out if isinstance(out, Label) else Label(str(out).strip())
        if not label.text:
            raise InputError(
                f"explainer {name!r} returned an empty label for feature {layer}:{feature}"
            )
        train = None
        if label.rule is not None:
            train = balanced_accuracy(label.rule, ex.positives, ex.negatives + window_negatives(ex))
        store.write_label(
            index.conn, FeatureLabel(layer, feature, name, label.text, label.rule, train, None)
        )
    index.conn.commit()
    return len(todo)


def prompt(ex: FeatureExamples, n: int = 10) -> str:
    """A plain-text description of a feature's examples, to send to a language model."""
    lines = [
        "Below are text excerpts where one feature of a language model activates. The token",
        "where it peaks is marked [[like this]]. Reply with a short label (a few words) saying",
        "which tokens or contexts it fires on and, if clear, which word it makes the model say.",
        "(A space in a token list is shown as \u2423, a newline as \u21b5.)",
        "",
    ]
    for e in (ex.top + ex.samples)[:n]:
        lines.append(f"({e.value:.2f}) " + marked_context(e, ex.separator))
    promoted = ", ".join(visible(t.token) for t in ex.logits.promote[:5])
    lines += ["", f"Tokens it promotes most: {promoted}", "Label:"]
    return "\n".join(lines)


def llm_explainer(complete: Callable[[str], str], name: str = "llm", n: int = 10) -> Explainer:
    """An explainer that sends `prompt(examples)` to `complete` (your own client: a function
    from prompt text to reply text) and keeps the reply's first line as the label."""

    def explain(ex: FeatureExamples) -> Label:
        reply = complete(prompt(ex, n)).strip()
        return Label((reply.splitlines() or ["(no reply)"])[0].strip()[:200])

    explain.name = name  # type: ignore[attr-defined]
    return explain


def load_explainer(spec: str) -> Explainer:
    """An explainer named "package.module:attribute" (a callable, or a class to instantiate
    without arguments)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"explainer {spec!r} should look like 'package.module:function'")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot load explainer {spec!r}: {exc}") from exc
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise InputError(f"explainer {spec!r} is not callable")
    return obj
