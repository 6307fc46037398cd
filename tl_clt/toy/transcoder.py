"""The shipped transcoder: trained on the toy model's MLPs over the toy corpus (one example per
sequence, as the model was trained), and measured the way issue reports want it: NMSE, L0 and
dead fraction per layer on the corpus, and the pure replacement model's held-out accuracy per
task family beside the model's.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from tl_clt._files import atomic_write_text
from tl_clt.activations import TokenBatch
from tl_clt.clt import CrossLayerTranscoder
from tl_clt.lens import Lens
from tl_clt.replacement import ReplacementModel
from tl_clt.tokenization import PAD
from tl_clt.toy.corpus import Corpus
from tl_clt.toy.tasks import Accuracy, evaluate

#: The shipped transcoder's shape and training recipe (`python -m tl_clt.toy.train --stage clt`).
CLT_CONFIG: dict[str, Any] = {
    "n_features": 1024,
    "architecture": "cross_layer",
    "activation": "topk",
    "k": 16,
}
CLT_SEQUENCES = 60000  # texts drawn for training (about 500k tokens, reused over epochs)
CLT_TRAIN: dict[str, Any] = {
    "steps": 4000,
    "batch_size": 1024,
    "lr": 2e-3,
    # AuxK: 1/32 left 13% of the features dead on this small corpus
    "loss": {"activation": "topk", "aux_coefficient": 0.25},
    "sparsity_coefficient": 3e-3,  # unused by TopK; kept so that a retrain writes the same record
    "eval_every": 1000,
    "log_every": 50,
    "seed": 0,
}


def corpus_tokens(
    lens: Lens,
    corpus: Corpus,
    mix: dict[str, float] | None = None,
    n_sequences: int | None = None,
    seed: int = 0,
) -> TokenBatch:
    """Training texts one per row (BOS first, right-padded), BOS and padding marked as not
    kept. Without `mix`, every distinct text once in a seeded order; with it, `n_sequences`
    texts drawn (seeded, with replacement) from the corpus pools in the proportions the model
    was trained on, so the transcoder sees the model's training distribution."""
    rng = random.Random(seed)
    if mix is None:
        texts = corpus.train_texts()
        rng.shuffle(texts)
    else:
        pools = {p: t for p, t in corpus.train.items() if t and mix.get(p, 0) > 0}
        total = sum(mix[p] for p in pools)
        n = n_sequences or len(corpus.train_texts())
        texts = [t for p, ts in pools.items() for t in rng.choices(ts, k=round(n * mix[p] / total))]
        rng.shuffle(texts)
    vocab = lens.tokenizer.get_vocab()
    rows = [[lens.tokenizer.bos_token_id] + [vocab[w] for w in t.split()] for t in texts]
    pad = vocab[PAD]
    tokens = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    keep = tokens != pad
    keep[:, 0] = False
    return TokenBatch(tokens, keep)


def train_clt(
    lens: Lens,
    corpus: Corpus,
    out: str | Path,
    mix: dict[str, float],
    clt_config: dict | None = None,
    train_config: dict | None = None,
    progress: bool = True,
):
    """Train the shipped transcoder on `lens` over `corpus` (texts drawn in the proportions
    `mix` the model was trained on) and save it into `out`."""
    from tl_clt.training import train

    data = corpus_tokens(lens, corpus, mix, n_sequences=CLT_SEQUENCES)
    return train(
        lens,
        data,
        {**CLT_CONFIG, **(clt_config or {})},
        {**CLT_TRAIN, **(train_config or {})},
        out_dir=out,
        seq_len=data.tokens.shape[1],
        holdout_sequences=512,
        progress=progress,
    )


class TranscoderQuality(NamedTuple):
    nmse: list[float]  # per layer: Σ‖ŷ − y‖² / Σ‖y − ȳ‖²
    l0: list[float]  # per layer: mean active features per token
    dead: list[float]  # per layer: fraction of features that never fire on the corpus
    n_tokens: int

    @property
    def mean_nmse(self) -> float:
        return sum(self.nmse) / len(self.nmse)

    @property
    def dead_fraction(self) -> float:
        return sum(self.dead) / len(self.dead)


@torch.no_grad()
def measure_clt(
    lens: Lens, clt: CrossLayerTranscoder, corpus: Corpus, batch: int = 512
) -> TranscoderQuality:
    """NMSE, L0 and dead fraction per layer over every training text of the corpus."""
    data = corpus_tokens(lens, corpus)
    L, cfg = clt.cfg.n_layers, clt.cfg
    names = [lens.mlp_in(i, cfg.input_hook) for i in range(L)] + [lens.mlp_out(i) for i in range(L)]
    err = torch.zeros(L, dtype=torch.float64)
    sq = torch.zeros(L, dtype=torch.float64)
    total = torch.zeros(L, lens.d_model, dtype=torch.float64)
    active = torch.zeros(L, dtype=torch.float64)
    fired = torch.zeros(L, cfg.n_features, dtype=torch.bool)
    n = 0
    for start in range(0, data.tokens.shape[0], batch):
        tokens, keep = data.tokens[start : start + batch], data.keep[start : start + batch]
        _, cache = lens.cache(tokens.to(lens.device), names, stop_at_layer=L)
        keep = keep.to(lens.device)
        x = torch.stack([cache[names[i]][keep] for i in range(L)], 1).to(clt.dtype)
        y = torch.stack([cache[names[L + i]][keep] for i in range(L)], 1).to(clt.dtype)
        acts = clt.encode(x)
        recon = clt.decode(acts, x)
        err += (recon - y).double().pow(2).sum((0, 2)).cpu()
        sq += y.double().pow(2).sum((0, 2)).cpu()
        total += y.double().sum(0).cpu()
        active += (acts != 0).double().sum((0, 2)).cpu()
        fired |= (acts != 0).any(0).cpu()
        n += x.shape[0]
    var = sq - total.pow(2).sum(-1) / n
    return TranscoderQuality(
        nmse=(err / var).tolist(),
        l0=(active / n).tolist(),
        dead=(1 - fired.double().mean(-1)).tolist(),
        n_tokens=n,
    )


@dataclass
class FamilyComparison:
    family: str
    group: str
    model: float
    replacement: float

    @property
    def kept(self) -> float:
        return self.replacement / self.model if self.model else float("nan")


def replacement_accuracy(
    rm: ReplacementModel, items, keep_bos: bool = False
) -> tuple[list[Accuracy], list[Accuracy]]:
    """Held-out accuracy of the model and of its pure replacement model (`error=False`; with
    `keep_bos`, the MLP outputs at the BOS position stay exact)."""
    model = evaluate(rm.lens, items)
    with rm.spliced(error=False, keep_bos=keep_bos):
        replacement = evaluate(rm.lens, items)
    return model, replacement


def compare(model: list[Accuracy], replacement: list[Accuracy]) -> list[FamilyComparison]:
    rep = {(a.family, a.group): a.accuracy for a in replacement}
    return [
        FamilyComparison(a.family, a.group, a.accuracy, rep[(a.family, a.group)]) for a in model
    ]


def format_quality(q: TranscoderQuality, rows: list[FamilyComparison]) -> str:
    lines = [f"transcoder on {q.n_tokens} corpus tokens:",
             "  layer    NMSE     L0   dead"]  # fmt: skip
    for i, (e, l0, d) in enumerate(zip(q.nmse, q.l0, q.dead)):
        lines.append(f"  {i:>5} {e:7.4f} {l0:6.1f} {d:6.1%}")
    lines.append(f"  mean  {q.mean_nmse:7.4f} {sum(q.l0):6.1f} {q.dead_fraction:6.1%}  (L0: total)")
    lines.append("held-out accuracy: model vs pure replacement (error=False)")
    for r in rows:
        name = r.family if r.group == r.family else f"{r.family}/{r.group}"
        lines.append(f"  {name:<22} {r.model:7.1%} {r.replacement:7.1%}   kept {r.kept:6.1%}")
    return "\n".join(lines)


def finish_clt(run: Path, out: Path, lens: Lens, corpus: Corpus, wall: float, threads: int) -> None:
    """Measure the transcoder trained into `run` on `lens` (the model in `out/model`) over
    `corpus`, write its quality record, drop its checkpoints, and move it to `out/clt`
    (replacing what was there)."""
    clt = CrossLayerTranscoder.from_pretrained(run)
    quality = measure_clt(lens, clt, corpus)
    held = [it for it in corpus.items if it.held_out]
    rows = compare(*replacement_accuracy(ReplacementModel(lens, clt), held))
    print(format_quality(quality, rows))
    train_cfg = json.loads((run / "train_config.json").read_text())
    quality_record = {
        "clt": json.loads((run / "config.json").read_text()), "train": train_cfg,
        "train_wall_s": round(wall, 1), "threads": threads,
        "nmse": quality.nmse, "l0": quality.l0, "dead": quality.dead, "n_tokens": quality.n_tokens,
        "held_out_accuracy": {f"{r.family}/{r.group}": {"model": r.model, "replacement": r.replacement}
                              for r in rows},
    }  # fmt: skip
    atomic_write_text(run / "quality.json", json.dumps(quality_record, indent=2) + "\n")
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    for path in [run, *run.iterdir()]:  # temporary files are private; shipped ones are not
        path.chmod(0o755 if path.is_dir() else 0o644)
    target = out / "clt"
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(run), str(target))
    print(f"saved to {target}")
