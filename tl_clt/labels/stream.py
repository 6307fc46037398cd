"""The streaming part of the feature index: per-feature statistics kept in bounded memory while
token batches go by, as a dict of tensors (so a checkpoint is a safetensors blob).

Per feature g (a column of the activations [batch, pos, G]):
- counts: firing tokens, firing sequences, sum of activations, and a histogram of the firing
  activations on fixed log10 bins (`HIST_EDGES`, plus an underflow and an overflow bin);
- example slots, each one sequence's peak (its largest activation of g, first position on ties)
  with a window of tokens and activations around it:
  "top": the k largest peaks, ties to the earlier sequence (so a stream equals a full sort);
  "sample": a uniform sample of the training sequences where g fires: those with the smallest
  hash h(seq, g), order-free;
  "holdout": a sample of the held-out sequences where g fires, drawn with probability
  proportional to the peak activation a (weighted reservoir sampling: the largest log(u)/a,
  u a uniform hash of (seq, g)), so scores weigh clear firings above the faint tail;
- two pools ("pool_train", "pool_holdout") of random counted positions shared by all features
  (smallest h(seq, pos)), with which features fire there: the non-firing ones are negatives.

Every choice depends only on the data and the seed, never on batch boundaries, so a resumed or
feature-chunked pass ends with the same state as one uninterrupted pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

#: log10 bin edges of the activation histogram: 1e-4 ... 1e4, ten bins per decade.
HIST_EDGES: list[float] = [-4.0 + i / 10 for i in range(81)]
N_BINS = len(HIST_EDGES) + 1
GROUPS = ("top", "sample", "holdout")
POOLS = ("pool_train", "pool_holdout")


@dataclass(frozen=True)
class IndexConfig:
    """What the index keeps per feature (part of the database's identity).

    Attributes:
        k: top activating contexts per feature.
        n_samples: uniform sample of firing contexts (training split), shown by quantile.
        n_holdout: firing contexts in the held-out split, sampled in proportion to their peak
            activation (for scoring).
        n_pool: random positions per split, shared by all features (negatives).
        left, right: tokens kept before and after the peak in each context window.
        holdout_percent: share of sequences held out from labelling, for scoring.
        seed: seed of every sampling hash.
        exclude_first: leave each sequence's first position (BOS) out of every statistic.
        n_logits: tokens kept per feature and sign in the logit effects.
    """

    k: int = 20
    n_samples: int = 20
    n_holdout: int = 20
    n_pool: int = 500
    left: int = 10
    right: int = 3
    holdout_percent: int = 20
    seed: int = 0
    exclude_first: bool = True
    n_logits: int = 10

    def __post_init__(self) -> None:
        from tl_clt.errors import ConfigError

        for name in ("k", "n_samples", "n_holdout", "n_pool", "n_logits"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"IndexConfig.{name} must be at least 1, got {getattr(self, name)}"
                )
        if self.left < 0 or self.right < 0:
            raise ConfigError("IndexConfig.left and .right must be >= 0")
        if not 0 < self.holdout_percent < 100:
            raise ConfigError(f"holdout_percent must lie in (0, 100), got {self.holdout_percent}")

    @property
    def width(self) -> int:
        return self.left + self.right + 1

    def sizes(self) -> dict[str, int]:
        return {"top": self.k, "sample": self.n_samples, "holdout": self.n_holdout}

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------- hashing
def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


_M0, _M1, _M2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _srl(x: Tensor, s: int) -> Tensor:
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic)."""
    x = x + _M0
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


def hash_ints(*parts: Tensor | int, seed: int) -> Int[Tensor, "..."]:
    """A 53-bit hash of integer tensors (broadcast together): exact as float64."""
    h = _mix(torch.tensor(seed, dtype=torch.int64))
    for p in parts:
        h = _mix(h ^ torch.as_tensor(p, dtype=torch.int64))
    return _srl(h, 11)


def is_holdout(seq: Int[Tensor, " n"], cfg: IndexConfig) -> Bool[Tensor, " n"]:
    return hash_ints(seq, seed=cfg.seed + 1) % 100 < cfg.holdout_percent


def sample_priority(seq: Tensor, gid: Tensor, cfg: IndexConfig) -> Tensor:
    """Uniform sampling key of (sequence, feature): larger is kept (minus a hash)."""
    return -hash_ints(seq, gid, seed=cfg.seed + 2).double()


def weighted_priority(seq: Tensor, gid: Tensor, value: Tensor, cfg: IndexConfig) -> Tensor:
    """Activation-weighted sampling key: log(u) / value, u uniform in (0, 1) from a hash;
    keeping the largest keys samples in proportion to `value` (Efraimidis and Spirakis)."""
    u = (hash_ints(seq, gid, seed=cfg.seed + 4).double() + 0.5) / 2.0**53
    return torch.log(u) / value.double()


def pool_priority(seq: Tensor, pos: Tensor, cfg: IndexConfig) -> Tensor:
    return -hash_ints(seq, pos, seed=cfg.seed + 3).double()


# ---------------------------------------------------------------------- state
def new_state(cfg: IndexConfig, n: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """Empty statistics for `n` features."""
    W, kw = cfg.width, {"device": device}
    st = {
        "n_tokens": torch.zeros(1, dtype=torch.int64, **kw),
        "n_fire": torch.zeros(n, dtype=torch.int64, **kw),
        "n_seq_fire": torch.zeros(n, dtype=torch.int64, **kw),
        "act_sum": torch.zeros(n, dtype=torch.float64, **kw),
        "hist": torch.zeros(n, N_BINS, dtype=torch.int64, **kw),
    }
    for name, size in cfg.sizes().items():
        st[f"{name}.key"] = torch.full((n, size), -math.inf, dtype=torch.float64, **kw)
        st[f"{name}.seq"] = torch.full((n, size), -1, dtype=torch.int64, **kw)
        st[f"{name}.pos"] = torch.full((n, size), -1, dtype=torch.int64, **kw)
        st[f"{name}.value"] = torch.zeros(n, size, dtype=torch.float32, **kw)
        st[f"{name}.tokens"] = torch.full((n, size, W), -1, dtype=torch.int32, **kw)
        st[f"{name}.acts"] = torch.zeros(n, size, W, dtype=torch.float32, **kw)
    for name in POOLS:
        st[f"{name}.key"] = torch.full((cfg.n_pool,), -math.inf, dtype=torch.float64, **kw)
        st[f"{name}.seq"] = torch.full((cfg.n_pool,), -1, dtype=torch.int64, **kw)
        st[f"{name}.pos"] = torch.full((cfg.n_pool,), -1, dtype=torch.int64, **kw)
        st[f"{name}.tokens"] = torch.full((cfg.n_pool, W), -1, dtype=torch.int32, **kw)
        st[f"{name}.fires"] = torch.zeros(cfg.n_pool, n, dtype=torch.bool, **kw)
    return st


class _Batch:
    """One batch, ready for the updates: activations zeroed where not counted."""

    def __init__(self, cfg, tokens, real, acts, seq0):
        counted = real.clone()
        if cfg.exclude_first:
            counted[:, 0] = False
        self.tokens, self.real, self.counted = tokens, real, counted
        self.acts = acts.float() * counted[..., None]
        self.seq = seq0 + torch.arange(tokens.shape[0], device=tokens.device)
        self.offsets = torch.arange(-cfg.left, cfg.right + 1, device=tokens.device)

    def windows(self, rows: Tensor, centres: Tensor, cols: Tensor | None):
        """Token ids (-1 outside the sequence) and activations of feature columns `cols`
        around (row, centre) pairs."""
        T = self.tokens.shape[1]
        pos = centres[:, None] + self.offsets[None, :]
        pc = pos.clamp(0, T - 1)
        valid = (pos >= 0) & (pos < T) & self.real[rows[:, None], pc]
        toks = torch.where(valid, self.tokens[rows[:, None], pc], -1).to(torch.int32)
        if cols is None:
            return toks, None
        acts = torch.where(valid, self.acts[rows[:, None], pc, cols[:, None]], 0.0)
        return toks, acts


def update(
    st: dict[str, Tensor],
    cfg: IndexConfig,
    tokens: Int[Tensor, "batch pos"],
    real: Bool[Tensor, "batch pos"],
    acts: Float[Tensor, "batch pos n"],
    seq0: int,
    gids: Int[Tensor, " n"],
) -> None:
    """Fold one batch into the statistics. Rows are sequences seq0, seq0+1, ...; `gids` are
    the global ids of the activations' feature columns (they seed the sampling hashes)."""
    b = _Batch(cfg, tokens, real, acts, seq0)
    n = acts.shape[-1]
    flat = b.acts.view(-1, n)
    rows, cols = flat.nonzero(as_tuple=True)  # activations are >= 0: the firing ones
    vals = flat[rows, cols]
    st["n_tokens"] += b.counted.sum()
    st["n_fire"] += torch.bincount(cols, minlength=n)
    st["act_sum"] += flat.sum(0).double()  # a plain reduction: deterministic on GPUs too
    _histogram(st["hist"], cols, vals)
    peak_val, peak_pos = _peaks(rows, cols, vals, tokens.shape, n)
    fired = peak_val > 0
    st["n_seq_fire"] += fired.sum(0)
    held = is_holdout(b.seq, cfg)[:, None]
    seqs, cols = b.seq[:, None], gids[None, :].to(b.seq.device)
    neg = torch.tensor(-math.inf, dtype=torch.float64, device=acts.device)
    keys = {
        "top": torch.where(fired, peak_val.double(), neg),
        "sample": torch.where(fired & ~held, sample_priority(seqs, cols, cfg), neg),
        "holdout": torch.where(fired & held, weighted_priority(seqs, cols, peak_val, cfg), neg),
    }
    for name, key in keys.items():
        _merge_slots(st, name, key.T, b, peak_pos, peak_val)
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    pos_prio = pool_priority(b.seq[:, None], positions[None, :], cfg)
    for name, split in (("pool_train", ~held), ("pool_holdout", held)):
        key = torch.where(b.counted & split, pos_prio, neg)
        _merge_pool(st, name, key.flatten(), b)


def _peaks(
    rows: Tensor, cols: Tensor, vals: Tensor, shape: torch.Size, n: int
) -> tuple[Tensor, Tensor]:
    """Each sequence's largest activation of each feature and its first position [B, n]
    (0 and 0 where the feature does not fire), from the firing entries only."""
    B, T = shape
    key = (rows // T) * n + cols
    peak = vals.new_zeros(B * n).scatter_reduce_(0, key, vals, "amax")
    first = vals.new_zeros(B * n, dtype=torch.int64).fill_(T)
    top = vals == peak[key]
    first.scatter_reduce_(0, key[top], rows[top] % T, "amin")
    first[peak == 0] = 0
    return peak.view(B, n), first.view(B, n)


def _histogram(hist: Tensor, cols: Tensor, vals: Tensor) -> None:
    edges = torch.tensor(HIST_EDGES, dtype=torch.float32, device=vals.device)
    bins = torch.bucketize(torch.log10(vals), edges, right=True)
    hist += torch.bincount(cols * N_BINS + bins, minlength=hist.numel()).view_as(hist)


def _top(st_key: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (into [kept, new]) of the kept entries after adding `key`, and the rows that
    changed. Stable: on equal keys the kept entry, then the earlier new one, wins."""
    k = st_key.shape[-1]
    both = torch.cat([st_key, key], dim=-1)
    order = torch.sort(both, dim=-1, descending=True, stable=True).indices[..., :k]
    return order, (order != torch.arange(k, device=order.device)).any(-1)


def _merge_slots(st, name, key: Tensor, b: _Batch, peak_pos: Tensor, peak_val: Tensor) -> None:
    order, changed = _top(st[f"{name}.key"], key)
    rows = changed.nonzero()[:, 0]
    if rows.numel() == 0:
        return
    k = order.shape[1]
    order = order[rows]
    new = order >= k
    old = order.clamp(max=k - 1)
    for field in ("key", "seq", "pos", "value", "tokens", "acts"):
        t = st[f"{name}.{field}"]
        idx = old if t.dim() == 2 else old[..., None].expand(-1, -1, t.shape[-1])
        t[rows] = t[rows].gather(1, idx)
    r, s = new.nonzero(as_tuple=True)  # (row within `rows`, slot) filled from this batch
    g = rows[r]
    src = order[r, s] - k  # batch row
    centre = peak_pos[src, g]
    st[f"{name}.key"][g, s] = key[g, src]
    st[f"{name}.seq"][g, s] = b.seq[src]
    st[f"{name}.pos"][g, s] = centre
    st[f"{name}.value"][g, s] = peak_val[src, g]
    toks, acts = b.windows(src, centre, g)
    st[f"{name}.tokens"][g, s] = toks
    st[f"{name}.acts"][g, s] = acts


def _merge_pool(st, name, key: Tensor, b: _Batch) -> None:
    order, changed = _top(st[f"{name}.key"], key)
    if not bool(changed):
        return
    n = order.shape[0]
    new = order >= n
    old = order.clamp(max=n - 1)
    for field in ("key", "seq", "pos", "tokens", "fires"):
        t = st[f"{name}.{field}"]
        st[f"{name}.{field}"] = t[old]
    slots = new.nonzero()[:, 0]
    flat = order[slots] - n
    T = b.tokens.shape[1]
    row, centre = flat // T, flat % T
    st[f"{name}.key"][slots] = key[flat]
    st[f"{name}.seq"][slots] = b.seq[row]
    st[f"{name}.pos"][slots] = centre
    st[f"{name}.tokens"][slots] = b.windows(row, centre, None)[0]
    st[f"{name}.fires"][slots] = b.acts[row, centre] > 0
