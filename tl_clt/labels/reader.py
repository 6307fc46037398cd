"""`FeatureIndex`: read access to a feature index file, one feature at a time (nothing is
loaded whole, so an index of a large CLT is as cheap to open as a small one's). Writing is
`tl_clt.labels.store`'s (`store.write_label(index.conn, label)`); views are functions of an
index: `tl_clt.labels.text.describe` (plain text), `tl_clt.viz.features.feature_card` and
`feature_browser` (HTML)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from tl_clt.errors import IndexMismatchError, InputError
from tl_clt.labels import store
from tl_clt.labels.stream import IndexConfig, is_holdout
from tl_clt.labels.types import (
    Context,
    DetectionScore,
    Example,
    ExampleKind,
    FeatureExamples,
    FeatureId,
    FeatureLabel,
    FeatureStats,
    LogitEffects,
    Rule,
    Split,
    TokenEffect,
    normalise_token,
)
from tl_clt.tokenization import separator

#: Index files up to this size are checked whole (SQLite's quick_check) when opened.
CHECK_BYTES = 256 * 2**20


def check_index_for(index: Any, clt: Any) -> None:
    """`index.check_transcoder(clt)` when both are given (a `ReplacementModel` stands for its
    transcoder; objects without that method, e.g. test doubles, pass)."""
    check = getattr(index, "check_transcoder", None)
    if check is not None and clt is not None:
        check(getattr(clt, "clt", clt))


def clt_fingerprint(clt: Any) -> str:
    """A hash of a transcoder's config and every weight: what a feature index records of the
    transcoder it was built for."""
    state = sorted(clt.state_dict().items())
    # remembered on the transcoder until a tensor is replaced or written to in place (its
    # version counter moves): a large transcoder is hashed once, not at every check
    key = tuple((name, t.data_ptr(), t._version) for name, t in state)
    cached = getattr(clt, "_tl_clt_fingerprint", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256(json.dumps(clt.cfg.to_dict(), sort_keys=True).encode())
    for name, t in state:
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest = h.hexdigest()[:24]
    object.__setattr__(clt, "_tl_clt_fingerprint", (key, digest))
    return digest


class FeatureIndex:
    """A feature index built by `build_feature_index` (open an existing one with
    `FeatureIndex(path)`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"no feature index at {self.path}; build one with tl-clt label")
        self.conn = sqlite3.connect(str(self.path))
        try:
            if self.path.stat().st_size <= CHECK_BYTES:  # larger files: checked as they are read
                (result,) = self.conn.execute("PRAGMA quick_check(1)").fetchone()
                if result != "ok":
                    raise sqlite3.DatabaseError(result)
            self.meta = store.get_meta(self.conn)
        except (sqlite3.DatabaseError, ValueError) as exc:
            self.conn.close()
            raise store.damaged(self.path, exc) from exc
        if "identity" not in self.meta or "n_tokens" not in self.meta:
            self.conn.close()
            raise InputError(f"{self.path} is not a finished feature index; run tl-clt label again")
        ident = self.meta["identity"]
        if ident.get("format") != store.FORMAT:
            self.conn.close()
            raise InputError(
                f"{self.path} is a feature index of format {ident.get('format')!r}; this version "
                f"of tl_clt reads {store.FORMAT!r}. Rebuild it with tl-clt label --overwrite, "
                "or use the tl_clt version that made it"
            )
        self.config = IndexConfig(**ident["config"])
        self.n_layers: int = ident["n_layers"]
        self.n_features: int = ident["n_features"]
        self.n_tokens: int = self.meta["n_tokens"]

    def check_transcoder(self, clt: Any) -> None:
        """Refuse a transcoder other than the one the index was built for (its labels and
        examples would describe other features): `IndexMismatchError`."""
        built, given = self.meta["identity"].get("clt"), clt_fingerprint(clt)
        if built != given:
            raise IndexMismatchError(
                f"{self.path} was built for another transcoder (fingerprint {built}, this one "
                f"{given}): its labels would name other features. Rebuild it for this "
                "transcoder (tl-clt label --overwrite) or use the index built for it"
            )

    def __repr__(self) -> str:
        return f"FeatureIndex({str(self.path)!r}, {self.n_layers} layers x {self.n_features} features, {self.n_tokens} tokens)"

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ basics
    @cached_property
    def vocab(self) -> list[str]:
        return [t for (t,) in self.conn.execute("SELECT token FROM vocab ORDER BY id")]

    @cached_property
    def separator(self) -> str:
        """What goes between token texts to show a context as running text: a space for a
        word-level vocabulary, nothing for a subword one (`tl_clt.tokenization.separator`)."""
        return separator(self.vocab)

    @cached_property
    def normalised_vocab(self) -> list[str]:
        return [normalise_token(t) for t in self.vocab]

    def check(self, layer: int, feature: int) -> FeatureId:
        if not (0 <= layer < self.n_layers and 0 <= feature < self.n_features):
            raise InputError(
                f"feature {layer}:{feature} is out of range: the index has layers 0..{self.n_layers - 1} "
                f"and features 0..{self.n_features - 1}"
            )
        return FeatureId(int(layer), int(feature))

    def stats(self, layer: int, feature: int) -> FeatureStats:
        self.check(layer, feature)
        row = self.conn.execute(
            "SELECT n_fire, n_seq_fire, act_sum, max_act, hist FROM features WHERE layer=? AND feature=?",
            (layer, feature),
        ).fetchone()
        if row is None:
            raise InputError(f"feature {layer}:{feature} is not in the index")
        n_fire, n_seq, act_sum, max_act, hist = row
        return FeatureStats(
            layer, feature, self.n_tokens, n_fire, n_seq, act_sum, max_act,
            tuple(int(x) for x in store.unblob(hist, "<i8")), tuple(self.meta["identity"]["hist_edges"]),
        )  # fmt: skip

    def live_features(self) -> list[FeatureId]:
        rows = self.conn.execute(
            "SELECT layer, feature FROM features WHERE n_fire > 0 ORDER BY layer, feature"
        )
        return [FeatureId(*r) for r in rows]

    def n_live(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM features WHERE n_fire > 0").fetchone()[0]

    # ------------------------------------------------------------------ contexts
    def _window(self, token_blob: bytes, act_blob: bytes) -> tuple[list[int], list[float], int]:
        toks, acts = store.unblob(token_blob, "<i4"), store.unblob(act_blob, "<f4")
        keep = [i for i, t in enumerate(toks) if t >= 0]
        peak = self.config.left - keep[0] if keep else 0
        return [int(toks[i]) for i in keep], [float(acts[i]) for i in keep], peak

    def examples(self, layer: int, feature: int, kind: ExampleKind = "top") -> list[Example]:
        """Kept contexts of one kind, strongest first."""
        self.check(layer, feature)
        rows = self.conn.execute(
            "SELECT rank, quantile, seq, pos, value, tokens, acts FROM examples "
            "WHERE layer=? AND feature=? AND kind=? ORDER BY rank",
            (layer, feature, kind),
        )
        out = []
        for rank, quantile, seq, pos, value, tb, ab in rows:
            ids, acts, peak = self._window(tb, ab)
            tokens = tuple(self.vocab[i] for i in ids)
            out.append(
                Example(
                    kind, rank, seq, pos, value, tuple(ids), tokens, tuple(acts), peak, quantile
                )
            )
        return out

    def is_holdout(self, seqs: Iterable[int]) -> list[bool]:
        seqs = list(seqs)
        if not seqs:
            return []
        return is_holdout(torch.tensor(seqs, dtype=torch.int64), self.config).tolist()

    @cached_property
    def _pools(self) -> dict[str, list[Context]]:
        pools: dict[str, list[Context]] = {"train": [], "holdout": []}
        for split, tb in self.conn.execute("SELECT split, tokens FROM pool ORDER BY split, idx"):
            toks = store.unblob(tb, "<i4")
            words = tuple(self.normalised_vocab[t] if t >= 0 else None for t in toks)
            pools[split].append(Context(words, self.config.left))
        return pools

    def negatives(self, layer: int, feature: int, split: Split) -> list[Context]:
        """Shared random positions of a split where the feature does not fire."""
        self.check(layer, feature)
        col = "pool_train" if split == "train" else "pool_holdout"
        (fires,) = self.conn.execute(
            f"SELECT {col} FROM features WHERE layer=? AND feature=?", (layer, feature)
        ).fetchone()
        firing = set(store.unblob(fires, "<i4").tolist())
        return [c for i, c in enumerate(self._pools[split]) if i not in firing]

    def logit_effects(self, layer: int, feature: int) -> LogitEffects:
        self.check(layer, feature)
        rows = self.conn.execute(
            "SELECT rank, token, value, z FROM logits WHERE layer=? AND feature=? ORDER BY rank",
            (layer, feature),
        ).fetchall()
        effect = lambda r: TokenEffect(self.vocab[r[1]], r[1], r[2], r[3])  # noqa: E731
        promote = [effect(r) for r in sorted((r for r in rows if r[0] > 0), key=lambda r: r[0])]
        suppress = [effect(r) for r in sorted((r for r in rows if r[0] < 0), key=lambda r: -r[0])]
        return LogitEffects(tuple(promote), tuple(suppress))

    def feature_examples(
        self, layer: int, feature: int, token_classes: Mapping[str, Iterable[str]] | None = None
    ) -> FeatureExamples:
        """Everything an explainer may see: training-split contexts only."""
        top = self.examples(layer, feature, "top")
        top = [e for e, held in zip(top, self.is_holdout(e.seq for e in top)) if not held]
        classes = {name: frozenset(map(str, toks)) for name, toks in (token_classes or {}).items()}
        return FeatureExamples(
            layer, feature, top, self.examples(layer, feature, "sample"),
            self.negatives(layer, feature, "train"), self.stats(layer, feature),
            self.logit_effects(layer, feature), classes, self.separator,
        )  # fmt: skip

    def holdout_contexts(self, layer: int, feature: int) -> tuple[list[Context], list[Context]]:
        """Held-out firing contexts (at their peaks, sampled in proportion to the peak
        activation) and held-out positions where the feature does not fire."""
        pos = [e.context() for e in self.examples(layer, feature, "holdout")]
        return pos, self.negatives(layer, feature, "holdout")

    # ------------------------------------------------------------------ labels
    def labels(
        self, explainer: str | None = None, layer: int | None = None
    ) -> Iterator[FeatureLabel]:
        sql, args = f"SELECT {store.LABEL_COLUMNS} FROM labels WHERE 1=1", []
        if explainer is not None:
            sql, args = sql + " AND explainer=?", [*args, explainer]
        if layer is not None:
            sql, args = sql + " AND layer=?", [*args, layer]
        for row in self.conn.execute(sql + " ORDER BY layer, feature, explainer", args):
            yield _label(row)

    def label(self, layer: int, feature: int, explainer: str = "offline") -> FeatureLabel | None:
        self.check(layer, feature)
        row = self.conn.execute(
            f"SELECT {store.LABEL_COLUMNS} FROM labels WHERE layer=? AND feature=? AND explainer=?",
            (layer, feature, explainer),
        ).fetchone()
        return None if row is None else _label(row)

    def search(
        self, query: str = "", layer: int | None = None, explainer: str = "offline", limit: int = 50
    ) -> list[FeatureLabel]:
        """Labels containing `query` (case-insensitive), or the feature named "L:F"."""
        if ":" in query and all(p.strip().isdigit() for p in query.split(":", 1)):
            lab = self.label(*map(int, query.split(":", 1)), explainer)
            return [lab] if lab else []
        sql = (
            f"SELECT {store.LABEL_COLUMNS} FROM labels WHERE explainer=? "
            "AND instr(lower(label), lower(?)) > 0"
        )
        args: list[Any] = [explainer, query]
        if layer is not None:
            sql, args = sql + " AND layer=?", [*args, layer]
        rows = self.conn.execute(sql + " ORDER BY layer, feature LIMIT ?", [*args, limit])
        return [_label(r) for r in rows]


def _label(row: tuple) -> FeatureLabel:
    import json

    layer, feature, explainer, text, rule, train, score, chance, tpr, tnr, n_pos, n_neg, above = row
    det = None
    if score is not None:
        det = DetectionScore(score, chance, tpr, tnr, n_pos, n_neg, bool(above))
    rule_obj = Rule.from_json(json.loads(rule)) if rule else None
    return FeatureLabel(layer, feature, explainer, text, rule_obj, train, det)
