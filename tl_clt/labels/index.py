"""`build_feature_index`: one streaming pass of a CLT over a token source, written to one
SQLite file (see `tl_clt.labels.store` for the tables).

Phases:
1. check the replacement model (model + CLT) and turn the text or token source into batches;
2. open the database; a file made with other settings is refused, one made with the same
   settings is resumed from its last checkpoint;
3. stream the batches: read every layer's MLP input from the unmodified model (what the CLT's
   encoders see when it is spliced in with its error term), encode it, and fold the
   activations into the per-feature statistics (`tl_clt.labels.stream`), checkpointing the
   state every `checkpoint_seconds`; with `features_per_pass`, the features are split into
   slices, one pass each, so memory stays bounded for any CLT;
4. write each slice's statistics and contexts, then the logit effects;
5. label every live feature with the offline summariser and score the labels.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_clt._files import clean_temporaries, locked
from tl_clt.clt import CrossLayerTranscoder
from tl_clt.errors import FileWriteError, IndexMismatchError, InputError
from tl_clt.labels import store
from tl_clt.labels.logits import top_logit_effects
from tl_clt.labels.reader import FeatureIndex, clt_fingerprint
from tl_clt.labels.source import TokenSource, as_source
from tl_clt.labels.stream import HIST_EDGES, IndexConfig, new_state, update
from tl_clt.labels.summarise import VERSION
from tl_clt.lens import Lens
from tl_clt.replacement import ReplacementModel

FORMAT = store.FORMAT


def build_feature_index(
    replacement: Any,  # a ReplacementModel; anything else gets an InputError naming the order
    source: Any,
    path: str | os.PathLike = "features.db",
    config: IndexConfig | None = None,
    *,
    batch_size: int = 32,
    features_per_pass: int | None = None,
    checkpoint_seconds: float = 60.0,
    overwrite: bool = False,
    label: bool = True,
    token_classes: Mapping[str, Iterable[str]] | None = None,
    progress: bool = True,
) -> FeatureIndex:
    """Index every feature of `replacement`'s CLT over `source` into the SQLite file `path`,
    and return it.

    `replacement` is `ReplacementModel(model, clt)`; `source` is a tensor of token sequences
    [n_seq, seq_len], a list of texts, or a `TokenSource` (for the shipped model, its corpus is
    `tl_clt.toy.corpus_texts()`). Re-running with the same arguments resumes an interrupted
    run (or returns the finished index); `overwrite=True` starts afresh in a temporary file
    beside `path` that replaces it only once complete (until then the old index stays). One
    builder at a time per path: a second gets a FileWriteError. With `label`, every
    live feature gets an offline label and a detection score (`token_classes` names token
    classes for the labels, e.g. `tl_clt.toy.token_classes()`); an index already labelled by
    this summariser version with the same classes (or run again without classes) keeps its
    labels.
    """
    cfg = config or IndexConfig()
    lens, clt = _resolve(replacement, source)
    src = as_source(source, lens, batch_size)
    L, F = clt.cfg.n_layers, clt.cfg.n_features
    per_pass = min(features_per_pass or L * F, L * F)
    if per_pass < 1:
        raise InputError(f"features_per_pass must be positive, got {features_per_pass}")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file path for the feature index")
    with locked(path, timeout=0.0):
        clean_temporaries(path.parent, path.name)  # a killed --overwrite build's file
        work = path.parent / f".{path.name}.new.tmp" if overwrite else path
        try:
            index = _build(work, cfg, lens, clt, src, per_pass, checkpoint_seconds, progress)
            _label(index, label, token_classes, progress)
            index.close()
            if work != path:
                os.replace(work, path)
        except BaseException as exc:
            if work != path:  # the old index stays as it was
                work.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.OperationalError):  # disk full, read-only, ...
                raise _write_error(path, exc) from exc
            raise
    return FeatureIndex(path)


def _build(path, cfg, lens, clt, src, per_pass, checkpoint_seconds, progress) -> FeatureIndex:
    conn = store.connect(path)
    try:
        _check_identity(conn, _identity(cfg, lens, clt, src), path)
        with conn:
            if not conn.execute("SELECT 1 FROM vocab LIMIT 1").fetchone():
                store.write_vocab(conn, lens.vocabulary())  # decoded texts
        _stream(conn, cfg, lens, clt, src, per_pass, checkpoint_seconds, progress)
        _logits(conn, cfg, lens, clt)
    finally:
        conn.close()
    return FeatureIndex(path)


def _write_error(path: Path, exc: sqlite3.OperationalError) -> FileWriteError:
    return FileWriteError(
        errno.EIO,
        f"cannot write the feature index {path}: {exc}; check that the disk has space and the "
        "directory is writable",
    )


def _label(index: FeatureIndex, label: bool, token_classes, progress: bool) -> None:
    classes = "" if token_classes is None else classes_fingerprint(token_classes)
    labelled = index.meta.get("label_classes")  # set once labels and scores are written
    stale = index.meta.get("summariser_version") != VERSION
    if label and (labelled is None or stale or (token_classes is not None and labelled != classes)):
        from tl_clt.labels.explainers import label_features
        from tl_clt.labels.scoring import score_labels

        label_features(index, token_classes=token_classes, progress=progress)
        score_labels(index, progress=progress)
        done = {"label_classes": classes, "summariser_version": VERSION}
        with index.conn:
            store.set_meta(index.conn, done)
        index.meta.update(done)


def classes_fingerprint(token_classes: Mapping[str, Iterable[str]]) -> str:
    """A short hash of token classes (names and members, order ignored): an index labelled
    with the same classes is not labelled again."""
    canon = sorted((str(k), sorted(map(str, v))) for k, v in token_classes.items())
    return hashlib.sha256(json.dumps(canon).encode()).hexdigest()[:16]


def _resolve(replacement: Any, source: Any) -> tuple[Lens, CrossLayerTranscoder]:
    if not isinstance(replacement, ReplacementModel):
        raise InputError(
            "build_feature_index(replacement, source, path, ...) takes a ReplacementModel first, "
            f"got a {type(replacement).__name__}; pass ReplacementModel(model, clt)"
        )
    if source is None:
        raise InputError(
            "build_feature_index needs a token source: a list of texts, a tensor of token "
            "sequences [n_seq, seq_len] or a TokenSource (the shipped model's corpus is "
            "tl_clt.toy.corpus_texts())"
        )
    return replacement.lens, replacement.clt.eval()


def _identity(cfg: IndexConfig, lens: Lens, clt: CrossLayerTranscoder, src: TokenSource) -> dict:
    return {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "clt": clt_fingerprint(clt),
        "clt_config": clt.cfg.to_dict(),
        "model": lens.name,
        "source": src.fingerprint,
        "n_batches": len(src),
        "n_layers": clt.cfg.n_layers,
        "n_features": clt.cfg.n_features,
        "hist_edges": HIST_EDGES,
    }


def _check_identity(conn, identity: dict, path: Path) -> None:
    meta = store.get_meta(conn)
    if not meta:
        with conn:
            store.set_meta(conn, {"identity": identity, "config": identity["config"]})
        return
    old = meta.get("identity")
    if old != identity:
        changed = sorted(k for k in identity if old is None or old.get(k) != identity[k])
        raise IndexMismatchError(
            f"{path} holds an index made with other settings (differing: {', '.join(changed)}); "
            "pass overwrite=True (--overwrite) to replace it, or choose another path"
        )


def activations(
    lens: Lens, clt: CrossLayerTranscoder, tokens: Int[Tensor, "batch pos"], layers: range
) -> Float[Tensor, "batch pos n"]:
    """Feature activations of `layers` (concatenated, layer-major) from the model's own MLP
    inputs (the splice only observes: the model runs unchanged), in one forward pass that
    stops after the last of `layers`."""
    rm = ReplacementModel(lens, clt, check_identity=False)
    with rm.splice(output="observe", layers=layers) as run:
        lens.run(tokens.to(lens.device), stop_at_layer=layers[-1] + 1)
    return torch.cat([run.features[layer] for layer in layers], dim=-1)


def _stream(conn, cfg, lens, clt, src, per_pass, checkpoint_seconds, show) -> None:
    L, F = clt.cfg.n_layers, clt.cfg.n_features
    chunks = [(g0, min(g0 + per_pass, L * F)) for g0 in range(0, L * F, per_pass)]
    progress, state = store.load_progress(conn, clt.device)
    chunk, batch, seq = progress.get("chunk", 0), progress.get("batch", 0), progress.get("seq", 0)
    bar = tqdm(total=len(chunks) * len(src), initial=chunk * len(src) + batch, disable=not show,
               desc="indexing features", unit="batch")  # fmt: skip
    with torch.no_grad():
        for c in range(chunk, len(chunks)):
            g0, g1 = chunks[c]
            layers = range(g0 // F, (g1 - 1) // F + 1)
            gids = torch.arange(g0, g1, device=clt.device)
            if state is None:
                state = new_state(cfg, g1 - g0, clt.device)
            last_save = time.monotonic()
            for b, token_batch in enumerate(src.batches(batch), start=batch):
                tokens, real = token_batch.tokens, token_batch.real
                acts = activations(lens, clt, tokens, layers)[
                    ..., g0 - layers.start * F : g1 - layers.start * F
                ]
                tokens, real = tokens.to(acts.device), real.to(acts.device)
                update(state, cfg, tokens, real, acts, seq, gids)
                seq += tokens.shape[0]
                bar.update(1)
                if time.monotonic() - last_save >= checkpoint_seconds and b + 1 < len(src):
                    with conn:
                        store.save_progress(conn, {"chunk": c, "batch": b + 1, "seq": seq}, state)
                    last_save = time.monotonic()
            with conn:
                store.write_features(conn, state, gids.cpu(), F)
                if c == 0:
                    store.write_pools(conn, state)
                    store.set_meta(conn, {"n_tokens": int(state["n_tokens"]), "n_sequences": seq})
                store.save_progress(conn, {"chunk": c + 1, "batch": 0, "seq": 0}, None)
            state, batch, seq = None, 0, 0
    bar.close()


def _logits(conn, cfg: IndexConfig, lens: Lens, clt: CrossLayerTranscoder) -> None:
    meta = store.get_meta(conn)
    if meta.get("logits_done"):
        return
    for layer in range(clt.cfg.n_layers):
        up, down = top_logit_effects(lens, clt, layer, cfg.n_logits)
        with conn:
            store.write_logits(conn, layer, up.values, up.indices, up.z, +1)
            store.write_logits(conn, layer, down.values, down.indices, down.z, -1)
    with conn:
        store.set_meta(conn, {"logits_done": True})
