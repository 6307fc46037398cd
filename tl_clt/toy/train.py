"""Training the shipped toy model: `python -m tl_clt.toy.train --out DIR`.

A GPT-2-style `transformers.GPT2LMHeadModel` (4 layers, d_model 128, tied embeddings) trained
with plain PyTorch on CPU, deterministically (same seed and thread count, same weights), on the
toy corpus: one example per sequence, `<bos>` at position 0, right-padded, next-token loss on
every real token. Each batch holds a fixed share of every task family. Afterwards the held-out
accuracy per family is measured through the TransformerLens model and the model, tokenizer and
a `toy.json` record (corpus and training configs, accuracies, wall time) are saved in Hugging
Face format.

Stages are separate functions (`train_model`, `evaluate_model`, `save_model`) so that later
stages can be added after them in `main`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_clt._files import atomic_write_text
from tl_clt.tokenization import BOS, PAD, save_tokenizer, word_level_tokenizer
from tl_clt.toy.corpus import Corpus, CorpusConfig, build_corpus
from tl_clt.toy.load import MODEL_NAME, RECORD_FILE, load_lens
from tl_clt.toy.tasks import Accuracy, evaluate, format_accuracy


@dataclass(frozen=True)
class ToyTrainConfig:
    """Model shape and optimisation of the toy model."""

    seed: int = 0
    steps: int = 4000
    batch_size: int = 192
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.1
    answer_weight: float = 1.0  # extra loss weight on each text's last token (its answer)
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 32
    threads: int = 2
    time_budget_s: float | None = None  # stop early (and say so) past this wall time
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "two_hop": 0.1,
            "addition": 0.31,
            "digits": 0.06,
            "antonym": 0.18,
            "entity": 0.15,
            "unknown": 0.05,
            "rhyme": 0.15,
        }  # fmt: skip
    )


def make_model(vocab_size: int, cfg: ToyTrainConfig, bos_id: int, pad_id: int):
    import transformers as tf

    config = tf.GPT2Config(
        vocab_size=vocab_size, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=bos_id, eos_token_id=bos_id, pad_token_id=pad_id,
        architectures=["GPT2LMHeadModel"],
    )  # fmt: skip
    return tf.GPT2LMHeadModel(config)


def encode(texts: tuple[str, ...], tokenizer) -> torch.Tensor:
    """Texts as one right-padded [n, pos] id tensor with `<bos>` at position 0."""
    vocab = tokenizer.get_vocab()
    try:
        ids = [[vocab[w] for w in (BOS, *t.split())] for t in texts]
    except KeyError as exc:
        raise ValueError(f"a training text holds {exc.args[0]!r}, not in the vocabulary") from exc
    out = torch.full((len(ids), max(map(len, ids))), vocab[PAD])
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.tensor(row)
    return out


class Batches:
    """Endless batches with a fixed number of examples per family, drawn by a seeded generator."""

    def __init__(self, corpus: Corpus, tokenizer, cfg: ToyTrainConfig) -> None:
        self.data = {p: encode(texts, tokenizer) for p, texts in corpus.train.items() if texts}
        total = sum(cfg.mix.get(f, 0.0) for f in self.data)
        counts = {f: int(cfg.batch_size * cfg.mix.get(f, 0.0) / total) for f in self.data}
        counts[max(counts, key=counts.get)] += cfg.batch_size - sum(counts.values())
        self.counts = counts
        self.pad_id = tokenizer.convert_tokens_to_ids(PAD)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def next(self) -> torch.Tensor:
        width = max(d.shape[1] for d in self.data.values())
        parts = []
        for f, n in self.counts.items():
            d = self.data[f]
            rows = d[torch.randint(len(d), (n,), generator=self.gen)]
            parts.append(torch.nn.functional.pad(rows, (0, width - d.shape[1]), value=self.pad_id))
        return torch.cat(parts)


def lm_loss(model, tokens: Int[Tensor, "batch pos"], pad_id: int, answer_weight: float) -> Tensor:
    """Mean next-token loss over real tokens, plus `answer_weight` times the mean loss on
    each row's last token (the answer: the operands of "36 + 59 = 95" cannot be predicted,
    the sum can)."""
    real = tokens != pad_id
    logits = model(input_ids=tokens, attention_mask=real.long()).logits[:, :-1]
    targets, valid = tokens[:, 1:], real[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    last = ce.gather(1, (valid.sum(1, keepdim=True) - 1).clamp(min=0))
    return (ce * valid).sum() / valid.sum() + answer_weight * last.mean()


def _lr_at(step: int, cfg: ToyTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def train_model(
    corpus: Corpus,
    tokenizer,
    cfg: ToyTrainConfig,
    callback: Callable[[int, Any], None] | None = None,
):
    """The trained Hugging Face model (eval mode) and the number of steps taken.
    `callback(step, model)`, if given, runs every 250 steps (e.g. to measure accuracy)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    model = make_model(len(tokenizer), cfg, tokenizer.convert_tokens_to_ids(BOS), pad_id)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )  # fmt: skip
    batches = Batches(corpus, tokenizer, cfg)
    start, step = time.perf_counter(), 0
    model.train()
    with tqdm(range(cfg.steps), desc="toy model", unit="step", mininterval=2.0) as bar:
        for step in bar:
            if cfg.time_budget_s and time.perf_counter() - start > cfg.time_budget_s:
                tqdm.write(f"time budget of {cfg.time_budget_s:.0f}s reached after {step} steps")
                break
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            loss = lm_loss(model, batches.next(), pad_id, cfg.answer_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if callback is not None and (step + 1) % 250 == 0:
                callback(step + 1, model.eval())
                model.train()
        else:
            step = cfg.steps
    return model.eval(), step


def evaluate_model(model, tokenizer, corpus: Corpus, held_out: bool = True) -> list[Accuracy]:
    """Accuracy per family on the held-out (or training) items, through TransformerLens (on a
    copy: building the TransformerLens model may rearrange the Hugging Face model's weights)."""
    from tl_clt.lens import from_hf

    lens = from_hf(copy.deepcopy(model), tokenizer, name=MODEL_NAME)
    return evaluate(lens, [it for it in corpus.items if it.held_out == held_out])


def save_model(model, tokenizer, out: Path, record: dict) -> None:
    """Write the model, tokenizer and record into `out`, replacing it only once all is written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary directory
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        save_tokenizer(tokenizer, tmp)
        atomic_write_text(tmp / RECORD_FILE, json.dumps(record, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _accuracy_record(rows: list[Accuracy]) -> dict[str, dict[str, float | int]]:
    return {
        f"{r.family}/{r.group}" if r.group != r.family else r.family: {
            "correct": r.correct,
            "total": r.total,
            "accuracy": round(r.accuracy, 4),
        }  # fmt: skip
        for r in rows
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if args.stage in ("model", "all"):
        train_model_stage(args, out / "model")
    if args.stage in ("clt", "all"):
        train_clt_stage(out, threads=args.threads)
    return 0


def configs_from_args(args: argparse.Namespace) -> tuple[CorpusConfig, ToyTrainConfig]:
    """The corpus and model-training configurations the command line asks for."""
    train_cfg = ToyTrainConfig(
        seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        n_layers=args.layers, threads=args.threads,
        time_budget_s=args.time_budget * 60 if args.time_budget else None,
    )  # fmt: skip
    return CorpusConfig(seed=args.corpus_seed), train_cfg


def train_model_stage(args: argparse.Namespace, out: Path) -> None:
    """Train the model, report its held-out accuracy, and save it into `out`."""
    corpus_cfg, train_cfg = configs_from_args(args)
    corpus = build_corpus(corpus_cfg)
    tok_dir = Path(tempfile.mkdtemp(prefix="tl_clt_toy_tok_"))
    tokenizer = word_level_tokenizer(corpus.vocabulary, tok_dir, lowercase=True)
    t0 = time.perf_counter()
    model, steps = train_model(corpus, tokenizer, train_cfg)
    wall = time.perf_counter() - t0
    print(f"trained {steps} steps in {wall:.0f}s ({train_cfg.threads} threads)")
    held = evaluate_model(model, tokenizer, corpus, held_out=True)
    seen = evaluate_model(model, tokenizer, corpus, held_out=False)
    print("held-out accuracy (TransformerLens model):")
    print(format_accuracy(held))
    print("accuracy on the training items:")
    print(format_accuracy(seen))
    record = {
        "corpus": corpus_cfg.to_dict(), "train": asdict(train_cfg), "steps_done": steps,
        "train_wall_s": round(wall, 1), "held_out_accuracy": _accuracy_record(held),
        "train_accuracy": _accuracy_record(seen),
    }  # fmt: skip
    save_model(model, tokenizer, out, record)
    shutil.rmtree(tok_dir, ignore_errors=True)
    print(f"saved to {out}")


def train_clt_stage(out: Path, threads: int = 2) -> None:
    """Train the transcoder on the model in `out/model`, measure it, and save it (weights,
    config, metrics, curves, quality record; no checkpoints) into `out/clt`."""
    from tl_clt.toy import transcoder as tc

    torch.set_num_threads(threads)
    lens = load_lens(directory=out / "model")  # named as the shipped model, which CLTs record
    record = json.loads((out / "model" / RECORD_FILE).read_text())
    corpus = build_corpus(CorpusConfig(**record["corpus"]))
    run = Path(tempfile.mkdtemp(prefix="tl_clt_toy_clt_"))
    t0 = time.perf_counter()
    tc.train_clt(lens, corpus, run, mix=record["train"]["mix"])
    wall = time.perf_counter() - t0
    print(f"trained the transcoder in {wall:.0f}s ({threads} threads)")
    tc.finish_clt(run, out, lens, corpus, wall, threads)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    d = ToyTrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m tl_clt.toy.train", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--out",
        required=True,
        help="directory receiving model/ and clt/ (tl_clt/toy/weights for the shipped ones)",
    )
    p.add_argument("--stage", choices=["model", "clt", "all"], default="all",
                   help="train the model, its transcoder (on OUT/model), or both")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="training seed")
    p.add_argument("--corpus-seed", type=int, default=CorpusConfig().seed, help="corpus seed")
    p.add_argument("--layers", type=_positive_int, default=d.n_layers,
                   help="transformer blocks of the model (a variant; the shipped model has 4)")  # fmt: skip
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--time-budget", type=float, default=None,
                   help="minutes; stop training early past this (the result then depends on speed)")  # fmt: skip
    return p


if __name__ == "__main__":
    sys.exit(main())
