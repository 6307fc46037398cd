"""Benchmark of `tl-clt label`: time, memory and disk size of indexing ~1M tokens, and the
share of live features whose offline label scores above chance on held-out contexts.

Uses the shipped model, CLT and corpus when `tl_clt.toy.load_clt` exists; otherwise a tiny
random 4-layer d_model 128 GPT-2-style model with a random CLT whose biases are set so each
feature fires on about 2% of tokens, over random token sequences.

    python benchmarks/label.py [--tokens 1000000] [--features 1024] [--out /tmp/bench.db]
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import sqlite3
import time
from pathlib import Path

import torch

from tl_clt import CLTConfig, CrossLayerTranscoder, ReplacementModel, build_feature_index
from tl_clt.labels import IndexConfig, label_features, score_labels


def shipped(n_tokens: int):
    """The shipped model and CLT, and the corpus cycled to about `n_tokens` tokens."""
    import tl_clt.toy as toy

    lens, clt = toy.load_lens(), toy.load_clt()
    texts, total, source = toy.corpus_texts(), 0, []
    for text in itertools.cycle(texts):
        source.append(text)
        total += len(text.split())
        if total >= n_tokens:
            break
    return "shipped model + CLT, shipped corpus", lens, clt, source, toy.token_classes()


def random_setup(n_tokens: int, n_features: int, seq_len: int):
    from tl_clt.lens import tiny_model

    lens = tiny_model(
        "gpt2", n_layers=4, d_model=128, n_heads=4, d_mlp=512, d_vocab=1000, n_ctx=seq_len
    )
    cfg = CLTConfig(n_layers=4, d_model=128, n_features=n_features, model=lens.identity())
    clt = CrossLayerTranscoder(cfg, device=lens.device)
    clt.reset_parameters(torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    n_seq = -(-n_tokens // (seq_len - 1))
    tokens = torch.randint(3, lens.d_vocab, (n_seq, seq_len), generator=gen)
    with torch.no_grad():  # each feature fires on ~2% of tokens
        clt.W_enc.normal_(0, 1, generator=gen)
        names = [lens.mlp_in(layer) for layer in range(4)]
        _, cache = lens.cache(tokens[:64].to(lens.device), names)
        for layer, name in enumerate(names):
            pre = cache[name][:, 1:].reshape(-1, 128) @ clt.W_enc[layer]
            clt.b_enc[layer] = -torch.quantile(pre, 0.98, dim=0)
    name = (
        f"tiny random gpt2 (4 layers, d_model 128, d_vocab 1000) + random CLT ({n_features}/layer)"
    )
    return name, lens, clt, tokens, {}


def have_shipped_clt() -> bool:
    try:
        import tl_clt.toy as toy
    except ImportError:
        return False
    return callable(getattr(toy, "load_clt", None))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=1024, help="features per layer (random CLT)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--out", default="/tmp/tl_clt_bench_label.db")
    p.add_argument(
        "--random", action="store_true", help="use the random model even if the shipped CLT exists"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if have_shipped_clt() and not args.random:
        name, lens, clt, source, classes = shipped(args.tokens)
    else:
        name, lens, clt, source, classes = random_setup(args.tokens, args.features, args.seq_len)
    Path(args.out).unlink(missing_ok=True)
    t0 = time.perf_counter()
    index = build_feature_index(ReplacementModel(lens, clt), source, args.out, IndexConfig(), batch_size=args.batch_size,
                                label=False, checkpoint_seconds=1e9)  # fmt: skip
    t_index = time.perf_counter() - t0
    size_index = Path(args.out).stat().st_size
    t0 = time.perf_counter()
    label_features(index, token_classes=classes)
    t_label = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = score_labels(index)
    t_score = time.perf_counter() - t0
    index.close()
    size = Path(args.out).stat().st_size
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_feat = clt.cfg.n_layers * clt.cfg.n_features
    rows = [
        ("setup", name),
        ("threads", args.threads),
        ("tokens indexed (BOS left out)", f"{index.n_tokens:,}"),
        ("features (live)", f"{n_feat:,} ({summary.n_live:,})"),
        ("index time", f"{t_index:.1f} s ({index.n_tokens / t_index:,.0f} tokens/s)"),
        ("label time (offline summariser)", f"{t_label:.1f} s"),
        ("score time", f"{t_score:.1f} s"),
        ("database size, index only", f"{size_index / 1e6:.1f} MB"),
        ("database size, with labels and scores", f"{size / 1e6:.1f} MB"),
        ("peak RSS", f"{rss:.0f} MB"),
        ("labels scored (held-out positives and negatives)", f"{summary.n_scored:,}"),
        ("mean detection score (chance 0.5)", f"{summary.mean_score:.3f}"),
        (
            "live features labelled above chance",
            f"{summary.n_above_chance:,} = {100 * summary.fraction_above_chance:.1f}%",
        ),
    ]
    print_table(rows + table_sizes(args.out))


def table_sizes(path: str) -> list[tuple[str, str]]:
    """Disk size of each table above 0.1 MB (where SQLite has the dbstat table)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        return [(f"  table {t}", f"{b / 1e6:.1f} MB") for t, b in rows.fetchall() if b > 1e5]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def print_table(rows: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    print("| " + "measure".ljust(width) + " | value |\n|" + "-" * (width + 2) + "|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
