"""The streaming statistics against brute force on hand-built activations (with exact ties,
padding and uneven batches): every kept slot, window, count and histogram bin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tl_clt.labels.stream import (
    HIST_EDGES,
    IndexConfig,
    hash_ints,
    new_state,
    update,
    weighted_priority,
)

CFG = IndexConfig(
    k=4, n_samples=3, n_holdout=3, n_pool=7, left=2, right=1, holdout_percent=30, seed=5
)
N_SEQ, T, G = 23, 9, 5


def corpus():
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (N_SEQ, T), generator=gen)
    real = torch.ones(N_SEQ, T, dtype=torch.bool)
    for row, length in ((3, 5), (10, 2), (17, 7)):  # right padding
        real[row, length:] = False
    # small integers: many exact ties within and across sequences; many zeros
    acts = torch.randint(-3, 4, (N_SEQ, T, G), generator=gen).clamp_min(0).float()
    acts[..., 4] = torch.rand(N_SEQ, T, generator=gen) * 1e-3  # tiny values: low histogram bins
    return tokens, real, acts


def stream(batch_size: int, cfg: IndexConfig = CFG):
    tokens, real, acts = corpus()
    st = new_state(cfg, G)
    gids = torch.arange(G) + 100
    for s in range(0, N_SEQ, batch_size):
        sl = slice(s, s + batch_size)
        update(st, cfg, tokens[sl], real[sl], acts[sl], s, gids)
    return st


def counted_acts():
    tokens, real, acts = corpus()
    counted = real.clone()
    counted[:, 0] = False
    return tokens, real, acts * counted[..., None], counted


def window(tokens, real, acts, seq, centre, g):
    toks, vals = [], []
    for p in range(centre - CFG.left, centre + CFG.right + 1):
        ok = 0 <= p < T and bool(real[seq, p])
        toks.append(int(tokens[seq, p]) if ok else -1)
        vals.append(float(acts[seq, p, g]) if ok else 0.0)
    return toks, vals


def peaks(acts, g):
    """Per sequence: (peak value, first position of the peak) where the feature fires."""
    out = []
    for s in range(N_SEQ):
        col = acts[s, :, g].tolist()
        m = max(col)
        if m > 0:
            out.append((s, m, col.index(m)))
    return out


def held(seq: int) -> bool:
    return int(hash_ints(torch.tensor(seq), seed=CFG.seed + 1)) % 100 < CFG.holdout_percent


@pytest.mark.parametrize("batch_size", [1, 4, 23])
def test_top_slots_equal_a_full_sort(batch_size):
    st = stream(batch_size)
    tokens, real, acts, _ = counted_acts()
    for g in range(G):
        expect = sorted(peaks(acts, g), key=lambda p: (-p[1], p[0]))[: CFG.k]
        n = len(expect)
        assert st["top.seq"][g, :n].tolist() == [s for s, _, _ in expect]
        assert st["top.pos"][g, :n].tolist() == [p for _, _, p in expect]
        assert st["top.value"][g, :n].tolist() == [v for _, v, _ in expect]
        assert (st["top.seq"][g, n:] == -1).all() and not torch.isfinite(st["top.key"][g, n:]).any()
        for j, (s, _, p) in enumerate(expect):
            toks, vals = window(tokens, real, acts, s, p, g)
            assert st["top.tokens"][g, j].tolist() == toks
            assert st["top.acts"][g, j].tolist() == pytest.approx(vals)


@pytest.mark.parametrize("batch_size", [2, 7])
def test_samples_follow_their_hash_priorities_in_each_split(batch_size):
    st = stream(batch_size)
    _, _, acts, _ = counted_acts()
    for g in range(G):
        fired = peaks(acts, g)
        h = lambda s, seed, g=g: int(hash_ints(torch.tensor(s), torch.tensor(g + 100), seed=seed))  # noqa: E731
        # training split: uniform, the smallest hashes; held out: the largest log(u) / activation
        uniform = {s: -float(h(s, CFG.seed + 2)) for s, _, _ in fired}
        weighted = {s: math.log((h(s, CFG.seed + 4) + 0.5) / 2.0**53) / v for s, v, _ in fired}
        for name, size, split, key in (
            ("sample", CFG.n_samples, False, uniform),
            ("holdout", CFG.n_holdout, True, weighted),
        ):
            expect = sorted(((key[s], s) for s, _, _ in fired if held(s) == split), reverse=True)[
                :size
            ]
            kept = zip(st[f"{name}.key"][g].tolist(), st[f"{name}.seq"][g].tolist())
            got = sorted(((k, s) for k, s in kept if math.isfinite(k)), reverse=True)
            assert [s for _, s in got] == [s for _, s in expect]
            assert [k for k, _ in got] == pytest.approx([k for k, _ in expect], rel=1e-12)
    assert any(held(s) for s in range(N_SEQ)) and not all(held(s) for s in range(N_SEQ))


def test_weighted_sampling_favours_large_activations():
    cfg = IndexConfig(n_holdout=1, holdout_percent=99)
    seq = torch.arange(20000)
    value = torch.where(seq % 2 == 0, 3.0, 1.0)  # even sequences fire 3x as strongly
    key = weighted_priority(seq, torch.tensor(7), value, cfg)
    winners = key.view(-1, 4).argmax(-1)  # 5000 draws of one from four (two strong, two weak)
    share = float((winners % 2 == 0).float().mean())
    assert abs(share - 0.75) < 0.02  # picked in proportion to the activation: 3 / (3 + 1)


def test_counts_histogram_and_pools():
    st = stream(5)
    tokens, real, acts, counted = counted_acts()
    assert int(st["n_tokens"]) == int(counted.sum())
    assert st["n_fire"].tolist() == (acts > 0).sum((0, 1)).tolist()
    assert st["n_seq_fire"].tolist() == [len(peaks(acts, g)) for g in range(G)]
    assert st["act_sum"].tolist() == pytest.approx(acts.sum((0, 1)).double().tolist())
    for g in range(G):
        vals = acts[..., g][acts[..., g] > 0].numpy()
        expect = np.bincount(
            np.searchsorted(HIST_EDGES, np.log10(vals), side="right"), minlength=len(HIST_EDGES) + 1
        )
        assert st["hist"][g].tolist() == expect.tolist()
    assert st["hist"][4, :10].sum() > 0  # the tiny activations land in the low bins
    for name, split in (("pool_train", False), ("pool_holdout", True)):
        cands = [(int(hash_ints(torch.tensor(s), torch.tensor(p), seed=CFG.seed + 3)), s, p)
                 for s in range(N_SEQ) for p in range(T) if counted[s, p] and held(s) == split]  # fmt: skip
        expect = sorted(cands)[: CFG.n_pool]
        assert list(zip(st[f"{name}.seq"].tolist(), st[f"{name}.pos"].tolist())) == [
            (s, p) for _, s, p in expect
        ]
        for i, (_, s, p) in enumerate(expect):
            assert st[f"{name}.fires"][i].tolist() == (acts[s, p] > 0).tolist()
            assert st[f"{name}.tokens"][i].tolist() == window(tokens, real, acts, s, p, 0)[0]


def test_batching_does_not_change_the_state():
    a, b = stream(1), stream(23)
    assert a.keys() == b.keys()
    for key in a:  # the sum of activations is summed per batch: equal up to rounding
        if key == "act_sum":
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=0)
        else:
            assert torch.equal(a[key], b[key]), key
