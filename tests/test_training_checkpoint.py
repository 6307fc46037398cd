"""Checkpoints: a run killed with SIGKILL at several points (mid-step, while writing a
checkpoint, between renaming it and naming it latest, after it) and resumed each time ends with
weights and optimizer state bitwise equal to an uninterrupted run; nothing is pickled; a
resumed JSON-lines log equals the uninterrupted one; and resuming follows an ActivationSource's
data position."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal

import pytest
import torch
from _training_helpers import lens as make_lens
from _training_helpers import small_clt, unchecked
from _training_helpers import texts as make_texts
from safetensors.torch import load_file

from tl_clt.activations import ActivationSource
from tl_clt.errors import CheckpointError, TLCLTWarning
from tl_clt.training import JsonlLog, TrainConfig, Trainer, TrainingMetrics, checkpoint
from tl_clt.training.synthetic import PlantedBatches, planted_dictionary

CONFIG = TrainConfig(steps=20, batch_size=64, lr=1e-2, log_every=2, checkpoint_every=4,
                     firing_decay=0.9, dead_threshold=1e-2, keep_checkpoints=3)  # fmt: skip
DATA = PlantedBatches(planted_dictionary("cross_layer", 2, 8, 12, 2, seed=0))


def _trainer(run_dir) -> Trainer:
    clt = small_clt("batchtopk", n_layers=2, d_model=8, n_features=12, k=2)
    callbacks = [TrainingMetrics(CONFIG.log_every), JsonlLog(run_dir / "metrics.jsonl")]
    trainer = Trainer(clt, CONFIG, callbacks)
    checkpoint.attach_checkpoints(trainer, run_dir / "checkpoints")  # resumes from the latest
    return trainer


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _child(run_dir, point: str, step: int) -> None:
    """Train (resuming from run_dir) and SIGKILL this process at `point` of `step`."""
    trainer = _trainer(run_dir)
    if point == "mid_step":  # after the backward pass, before the weights change
        original = trainer.optimizer.step

        def step_then_maybe_die(*args, **kwargs):
            if trainer.step + 1 == step:
                _die()
            return original(*args, **kwargs)

        trainer.optimizer.step = step_then_maybe_die
    elif point == "writing":  # the model file of the new checkpoint written, the rest not
        original_save = checkpoint._save

        def save(path, tensors):
            if path.name == "optimizer.safetensors" and trainer.step == step:
                _die()
            original_save(path, tensors)

        checkpoint._save = save
    elif point == "before_latest":  # checkpoint directory in place, `latest` not yet updated
        original_write = checkpoint.atomic_write_text

        def write(path, text):
            if path.name == "latest" and trainer.step == step:
                _die()
            original_write(path, text)

        checkpoint.atomic_write_text = write
    elif point == "after_step":
        trainer.callbacks.append(_DieAfter(step))
    with unchecked():
        trainer.fit(DATA)


class _DieAfter:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_fit_start(self, trainer) -> None: ...

    def on_log(self, trainer, record) -> None: ...

    def on_fit_end(self, trainer) -> None: ...

    def on_step_end(self, trainer, out) -> None:
        if trainer.step == self.step:
            _die()


def _final(run_dir):
    path = checkpoint.latest_checkpoint(run_dir / "checkpoints")
    return (
        path,
        load_file(str(path / "model.safetensors")),
        load_file(str(path / "optimizer.safetensors")),
    )


@pytest.mark.slow
def test_sigkill_at_any_point_then_resume_is_bitwise_identical(tmp_path):
    reference = tmp_path / "reference"
    with unchecked():
        _trainer(reference).fit(DATA)
    run = tmp_path / "killed"
    ctx = multiprocessing.get_context("fork")
    kills = [
        ("mid_step", 7, 4),
        ("writing", 12, 8),
        ("before_latest", 16, 12),
        ("after_step", 18, 16),
    ]
    for point, step, resume_from in kills:
        proc = ctx.Process(target=_child, args=(run, point, step))
        proc.start()
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL, (point, proc.exitcode)
        # what the next attempt resumes from: the last checkpoint that was whole and named
        assert checkpoint.latest_checkpoint(run / "checkpoints").name == f"step_{resume_from:08d}"
    with unchecked():
        _trainer(run).fit(DATA)  # the last resume, to the end
    want_path, want_model, want_opt = _final(reference)
    got_path, got_model, got_opt = _final(run)
    assert got_path.name == want_path.name == "step_00000020"
    assert want_model.keys() == got_model.keys() and want_opt.keys() == got_opt.keys()
    for name in want_model:
        assert torch.equal(want_model[name], got_model[name]), name
    for name in want_opt:
        assert torch.equal(want_opt[name], got_opt[name]), name
    logs = [
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (reference, run)
    ]
    assert logs[0] == logs[1]
    files = {p.suffix for p in (run / "checkpoints").rglob("*") if p.is_file()}
    # no pickles ("" is the `latest` pointer, .lock the empty file saves take turns on)
    assert files <= {".safetensors", ".json", "", ".lock"}


def test_resume_follows_an_activation_sources_data_position(tmp_path):
    lens = make_lens()
    source = ActivationSource(lens, make_texts(60, lo=8, hi=24), seq_len=16, buffer_tokens=128)
    cfg = TrainConfig(steps=8, batch_size=32, log_every=2, checkpoint_every=4)

    def trainer(run_dir):
        trainer = Trainer(small_clt("jumprelu", d_model=32, n_features=16), cfg)
        checkpoint.attach_checkpoints(trainer, run_dir / "checkpoints")
        return trainer

    reference = trainer(tmp_path / "a").fit(source).clt.state_dict()

    class Stop(Exception):
        pass

    interrupted = trainer(tmp_path / "b")
    interrupted.callbacks.append(_Raise(6, Stop))
    with pytest.raises(Stop):
        interrupted.fit(source)
    resumed = trainer(tmp_path / "b")
    seen = []
    original = source.batches
    source.batches = lambda size, start=0: (seen.append(start), original(size, start))[1]
    resumed.fit(source)
    assert seen == [4] and resumed.step == 8
    for name, value in resumed.clt.state_dict().items():
        assert torch.equal(value, reference[name]), name


class _Raise(_DieAfter):
    def __init__(self, step: int, exc: type) -> None:
        super().__init__(step)
        self.exc = exc

    def on_step_end(self, trainer, out) -> None:
        if trainer.step == self.step:
            raise self.exc


def test_broken_or_foreign_checkpoints_are_refused(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, log_every=1, checkpoint_every=1)
    trainer = Trainer(small_clt(), cfg)
    checkpoint.attach_checkpoints(trainer, tmp_path / "checkpoints")
    x, y = torch.randn(8, 2, 8), torch.randn(8, 2, 8)
    trainer.fit([(x, y), (x, y)])
    ckpts = tmp_path / "checkpoints"
    assert [p.name for p in sorted(ckpts.glob("step_*"))] == ["step_00000001", "step_00000002"]
    other = Trainer(small_clt(n_features=10), TrainConfig(steps=2))
    with pytest.raises(CheckpointError, match="another config"):
        checkpoint.load_checkpoint(other, ckpts / "step_00000002")
    (ckpts / "latest").write_text("step_00000099\n")  # names a checkpoint that is not there
    with pytest.warns(TLCLTWarning, match="missing or incomplete"):
        assert checkpoint.latest_checkpoint(ckpts).name == "step_00000002"
    (ckpts / "step_00000002" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoint.load_checkpoint(Trainer(small_clt(), cfg), ckpts / "step_00000002")
    # the damaged one is not whole (its size differs from the record): the older one is used
    with pytest.warns(TLCLTWarning, match="step_00000001"):
        assert checkpoint.latest_checkpoint(ckpts).name == "step_00000001"
