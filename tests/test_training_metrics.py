"""Spliced metrics (top-1 agreement, KL, CE recovered) against forward passes with hand-written
hooks, and the reporting callbacks (JSON-lines log on resume, curves PNG)."""

from __future__ import annotations

import io
import json
import types

import pytest
import torch
from _training_helpers import lens as make_lens
from _training_helpers import small_clt
from _training_helpers import texts as make_texts

from tl_clt import CLTConfig, CrossLayerTranscoder
from tl_clt.activations import ActivationSource
from tl_clt.training import (
    JsonlLog,
    TrainConfig,
    Trainer,
    TrainingMetrics,
    plot_curves,
    spliced_metrics,
)
from tl_clt.training.reporting import read_jsonl


@pytest.fixture(scope="module")
def lens():
    return make_lens()


def _hand_metrics(lens, tokens, real, zero_from: int):
    """Top-1, KL and CEs with every MLP output zeroed at positions >= zero_from."""

    def zero(t, hook):
        t = t.clone()
        t[:, zero_from:] = 0
        return t

    def zero_all(t, hook):
        return torch.zeros_like(t)

    outs = [lens.mlp_out(i) for i in range(lens.n_layers)]
    with torch.no_grad():
        orig = torch.log_softmax(lens.run(tokens)[:, :-1].double(), -1)
        repl = torch.log_softmax(lens.run(tokens, [(n, zero) for n in outs])[:, :-1].double(), -1)
        abl = torch.log_softmax(
            lens.run(tokens, [(n, zero_all) for n in outs])[:, :-1].double(), -1
        )
    mask = real[:, 1:]
    tgt = tokens[:, 1:, None]
    ce = [float(-(lp.gather(-1, tgt)[..., 0])[mask].mean()) for lp in (orig, repl, abl)]
    top1 = float((orig.argmax(-1) == repl.argmax(-1))[mask].float().mean())
    kl = float((orig.exp() * (orig - repl)).sum(-1)[mask].mean())
    return top1, kl, ce


def test_spliced_metrics_of_a_silent_transcoder_equal_zero_ablation(lens):
    """A transcoder whose reconstruction is exactly zero turns the spliced model into the
    zero-ablated one: CE recovered is 0, and top-1 / KL are those of the ablation."""
    cfg = CLTConfig(lens.n_layers, lens.d_model, 16)
    clt = CrossLayerTranscoder(cfg)
    with torch.no_grad():
        for w in clt.W_dec:
            w.zero_()
    heldout = ActivationSource(lens, make_texts(12), seq_len=16, holdout_sequences=12).heldout()
    m = spliced_metrics(lens, clt, heldout, batch_size=5)
    top1, kl, (ce_o, ce_s, ce_a) = _hand_metrics(lens, heldout.tokens, heldout.real, zero_from=0)
    assert m.ce_recovered == pytest.approx(0.0, abs=1e-9)
    assert (m.top1, m.kl) == pytest.approx((top1, kl), rel=1e-6)
    assert (m.ce_original, m.ce_spliced, m.ce_ablated) == pytest.approx(
        (ce_o, ce_s, ce_a), rel=1e-6
    )
    # keeping the exact MLP output at BOS = zeroing from position 1 on
    b = spliced_metrics(lens, clt, heldout, exact_bos=True)
    top1, kl, (_, ce_s, _) = _hand_metrics(lens, heldout.tokens, heldout.real, zero_from=1)
    assert (b.top1, b.kl, b.ce_spliced) == pytest.approx((top1, kl, ce_s), rel=1e-6)
    # mean ablation: the baseline changes, the spliced model does not
    mean = spliced_metrics(lens, clt, heldout, ablation="mean")
    assert mean.ce_spliced == pytest.approx(m.ce_spliced) and mean.ce_ablated != pytest.approx(
        m.ce_ablated
    )


def test_jsonl_log_drops_records_of_an_interrupted_attempt_and_curves_render(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        "".join(json.dumps({"step": s, "nmse": 1 / s, "l0": s}) + "\n" for s in (5, 10, 15))
        + '{"step": 2'
    )

    resumed = Trainer(small_clt(), TrainConfig())
    resumed.step = 10  # as if resumed from a checkpoint at step 10
    JsonlLog(path).on_fit_start(resumed)
    assert [r["step"] for r in read_jsonl(path)] == [5, 10]
    png = plot_curves(read_jsonl(path), tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_wandb_receives_the_records_when_asked():
    from tl_clt.training import WandbLog

    class Run:
        logged, finished = [], False

        def log(self, data, step):
            self.logged.append((step, data))

        def finish(self):
            self.finished = True

    run, opened = Run(), []
    cb = WandbLog("tl-clt-test", config={"a": 1})  # wandb is installed in the test environments
    cb.wandb = types.SimpleNamespace(init=lambda **kw: opened.append(kw) or run)  # no network
    trainer = Trainer(small_clt(), TrainConfig(steps=2, batch_size=8, log_every=1),
                      [TrainingMetrics(1), cb])  # fmt: skip
    x, y = torch.randn(8, 2, 8), torch.randn(8, 2, 8)
    trainer.fit([(x, y), (x, y)])
    assert opened == [{"project": "tl-clt-test", "name": None, "config": {"a": 1}}]
    assert [step for step, _ in run.logged] == [1, 2] and run.finished
    assert all("nmse" in data and "nmse_per_layer" not in data for _, data in run.logged)


def test_progress_bar_shows_the_latest_metrics():
    from tl_clt.training import ProgressBar

    out = io.StringIO()
    trainer = Trainer(small_clt(), TrainConfig(steps=3, batch_size=8, log_every=1),
                      [TrainingMetrics(1), ProgressBar(file=out, mininterval=0)])  # fmt: skip
    x, y = torch.randn(8, 2, 8), torch.randn(8, 2, 8)
    trainer.fit([(x, y)] * 3)
    text = out.getvalue()
    assert "3/3" in text
    assert f"nmse={trainer.history[-1]['nmse']:.3g}" in text and "L0=" in text and "dead=" in text
