"""The feature index's SQLite file: its schema, and writing a pass's results into it.

Tables (every per-feature table is keyed, and so indexed, by (layer, feature) first):

| table      | one row per                          | columns                                      |
|------------|--------------------------------------|----------------------------------------------|
| meta       | setting or total                     | key, value (JSON)                            |
| vocab      | token id                             | id, token                                    |
| features   | feature                              | n_fire, n_seq_fire, act_sum, max_act, hist, pool_train, pool_holdout |
| examples   | kept context (top / sample / holdout)| kind, rank, quantile, seq, pos, value, tokens, acts |
| pool       | shared random position (per split)   | split, idx, seq, pos, tokens                 |
| logits     | promoted (rank > 0) / suppressed (rank < 0) token | rank, token, value, z           |
| labels     | (feature, explainer)                 | label, rule (JSON), train_score, score, chance, tpr, tnr, n_pos, n_neg, above_chance |
| checkpoint | resumable pass state                 | key, value (JSON progress / safetensors blob) |

Blobs are little-endian arrays: window tokens int32 (-1 outside the sequence), window
activations float32, histogram counts int64, pool indices int32 (pool entries where the feature
fires). A window holds `left` tokens, the peak, then `right` tokens (IndexConfig).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tl_clt.labels.stream import GROUPS, POOLS, IndexConfig
from tl_clt.labels.types import FeatureLabel

#: The index file's format (in its identity); readers refuse another.
FORMAT = "tl_clt.labels/1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vocab (id INTEGER PRIMARY KEY, token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS features (
    layer INTEGER NOT NULL, feature INTEGER NOT NULL, n_fire INTEGER NOT NULL,
    n_seq_fire INTEGER NOT NULL, act_sum REAL NOT NULL, max_act REAL NOT NULL,
    hist BLOB NOT NULL, pool_train BLOB NOT NULL, pool_holdout BLOB NOT NULL,
    PRIMARY KEY (layer, feature)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS examples (
    layer INTEGER NOT NULL, feature INTEGER NOT NULL, kind TEXT NOT NULL, rank INTEGER NOT NULL,
    quantile INTEGER, seq INTEGER NOT NULL, pos INTEGER NOT NULL, value REAL NOT NULL,
    tokens BLOB NOT NULL, acts BLOB NOT NULL,
    PRIMARY KEY (layer, feature, kind, rank)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pool (
    split TEXT NOT NULL, idx INTEGER NOT NULL, seq INTEGER NOT NULL, pos INTEGER NOT NULL,
    tokens BLOB NOT NULL, PRIMARY KEY (split, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logits (
    layer INTEGER NOT NULL, feature INTEGER NOT NULL, rank INTEGER NOT NULL,
    token INTEGER NOT NULL, value REAL NOT NULL, z REAL NOT NULL,
    PRIMARY KEY (layer, feature, rank)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS labels (
    layer INTEGER NOT NULL, feature INTEGER NOT NULL, explainer TEXT NOT NULL,
    label TEXT NOT NULL, rule TEXT, train_score REAL, score REAL, chance REAL, tpr REAL,
    tnr REAL, n_pos INTEGER, n_neg INTEGER, above_chance INTEGER,
    PRIMARY KEY (layer, feature, explainer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoint (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""
#: The labels table's columns, in the order `FeatureIndex` reads them.
LABEL_COLUMNS = (
    "layer, feature, explainer, label, rule, train_score, score, chance, tpr, tnr, n_pos, n_neg, "
    "above_chance"
)
N_QUANTILES = 5


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (or create) an index file for writing; an InputError if it is not one."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise damaged(path, exc) from exc
    return conn


def damaged(path: str | Path, exc: Exception):
    """The error for an index file SQLite cannot read."""
    from tl_clt.errors import InputError

    return InputError(
        f"{path} is not a feature index or is damaged ({exc}); build it again with "
        "tl-clt label --overwrite (build_feature_index(..., overwrite=True))"
    )


def get_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}


def set_meta(conn: sqlite3.Connection, items: dict[str, Any]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        [(k, json.dumps(v, sort_keys=True)) for k, v in items.items()],
    )


# ---------------------------------------------------------------------- blobs
def blob(values: Tensor | np.ndarray, dtype: str) -> bytes:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.dtype(dtype)).tobytes()


def unblob(data: bytes, dtype: str) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(dtype))


# ---------------------------------------------------------------------- checkpoints
def save_progress(
    conn: sqlite3.Connection, progress: dict[str, Any], state: dict[str, Tensor] | None
) -> None:
    """Record progress and the pass state (one transaction, with whatever the caller wrote)."""
    from safetensors.torch import save

    conn.execute(
        "INSERT OR REPLACE INTO checkpoint VALUES ('progress', ?)", (json.dumps(progress),)
    )
    if state is None:
        conn.execute("DELETE FROM checkpoint WHERE key = 'state'")
    else:
        cpu = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        conn.execute("INSERT OR REPLACE INTO checkpoint VALUES ('state', ?)", (save(cpu),))


def load_progress(
    conn: sqlite3.Connection, device
) -> tuple[dict[str, Any], dict[str, Tensor] | None]:
    from safetensors.torch import load

    rows = dict(conn.execute("SELECT key, value FROM checkpoint"))
    progress = json.loads(rows["progress"]) if "progress" in rows else {}
    state = None
    if "state" in rows:
        state = {k: v.to(device) for k, v in load(bytes(rows["state"])).items()}
    return progress, state


# ---------------------------------------------------------------------- pass results
def write_features(
    conn: sqlite3.Connection, st: dict[str, Tensor], gids: Tensor, n_features: int
) -> None:
    """Write the statistics and kept contexts of the features `gids` (global ids: layer *
    n_features + feature) from a finished pass state."""
    st = {k: v.detach().cpu() for k, v in st.items()}
    layers, feats = (gids // n_features).tolist(), (gids % n_features).tolist()
    max_act = torch.where(torch.isfinite(st["top.key"][:, 0]), st["top.value"][:, 0], 0.0)
    columns = [st[k].tolist() for k in ("n_fire", "n_seq_fire", "act_sum")]
    columns.append(max_act.double().tolist())
    hist = st["hist"].numpy().astype("<i8", copy=False)
    fires = [st[f"{p}.fires"].T.contiguous().numpy() for p in POOLS]  # [n, pool]
    rows = []
    for j, (layer, feat) in enumerate(zip(layers, feats)):
        pools = [np.flatnonzero(f[j]).astype("<i4").tobytes() for f in fires]
        rows.append((layer, feat, *(c[j] for c in columns), hist[j].tobytes(), *pools))
    conn.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany(
        "INSERT OR REPLACE INTO examples VALUES (?,?,?,?,?,?,?,?,?,?)",
        _example_rows(st, layers, feats),
    )


def _example_rows(st: dict[str, Tensor], layers: list[int], feats: list[int]) -> list[tuple]:
    rows = []
    for kind in GROUPS:
        key, value = st[f"{kind}.key"], st[f"{kind}.value"]
        filled = torch.isfinite(key)
        # every group is listed strongest first; the sample's quantile ranks it (0 = weakest)
        order = torch.sort(
            torch.where(filled, value, -torch.inf), dim=1, descending=True, stable=True
        ).indices
        counts = filled.sum(1).tolist()
        fields = [st[f"{kind}.{f}"].gather(1, order).tolist() for f in ("seq", "pos")]
        fields.append(value.double().gather(1, order).tolist())  # float32 values, exactly
        toks = st[f"{kind}.tokens"].gather(1, order[..., None].expand_as(st[f"{kind}.tokens"]))
        acts = st[f"{kind}.acts"].gather(1, order[..., None].expand_as(st[f"{kind}.acts"]))
        toks = toks.numpy().astype("<i4", copy=False)
        acts = acts.numpy().astype("<f4", copy=False)
        for j, n in enumerate(counts):
            seqs, poss, vals = (f[j] for f in fields)
            for rank in range(n):
                quantile = (n - 1 - rank) * N_QUANTILES // n if kind == "sample" else None
                rows.append(
                    (layers[j], feats[j], kind, rank, quantile, seqs[rank], poss[rank], vals[rank],
                     toks[j, rank].tobytes(), acts[j, rank].tobytes())
                )  # fmt: skip
    return rows


def write_pools(conn: sqlite3.Connection, st: dict[str, Tensor]) -> None:
    rows = []
    for name in POOLS:
        key = st[f"{name}.key"].cpu()
        for i in torch.isfinite(key).nonzero()[:, 0].tolist():
            rows.append(
                (name.removeprefix("pool_"), i, int(st[f"{name}.seq"][i]), int(st[f"{name}.pos"][i]),
                 blob(st[f"{name}.tokens"][i], "<i4"))
            )  # fmt: skip
    conn.executemany("INSERT OR REPLACE INTO pool VALUES (?,?,?,?,?)", rows)


def write_vocab(conn: sqlite3.Connection, tokens: list[str]) -> None:
    conn.executemany("INSERT OR REPLACE INTO vocab VALUES (?, ?)", list(enumerate(tokens)))


def write_logits(
    conn: sqlite3.Connection, layer: int, top: Tensor, idx: Tensor, z: Tensor, sign: int
) -> None:
    """One layer's kept logit effects: `top`/`idx`/`z` [n_features, n] (strongest first);
    sign +1 for promoted tokens (ranks 1..n), -1 for suppressed (ranks -1..-n)."""
    rows = [
        (layer, f, sign * (r + 1), int(idx[f, r]), float(top[f, r]), float(z[f, r]))
        for f in range(top.shape[0])
        for r in range(top.shape[1])
    ]
    conn.executemany("INSERT OR REPLACE INTO logits VALUES (?,?,?,?,?,?)", rows)


def index_config(meta: dict[str, Any]) -> IndexConfig:
    return IndexConfig(**meta["config"])


def write_label(conn: sqlite3.Connection, label: FeatureLabel) -> None:
    """Insert or replace one label (with its scores) in the labels table (the caller commits)."""
    s = label.score
    score = (
        (None,) * 7
        if s is None
        else (s.score, s.chance, s.tpr, s.tnr, s.n_pos, s.n_neg, int(s.above_chance))
    )
    rule = json.dumps(label.rule.to_json()) if label.rule else None
    conn.execute(
        f"INSERT OR REPLACE INTO labels ({LABEL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (label.layer, label.feature, label.explainer, label.text, rule, label.train_score, *score),
    )
