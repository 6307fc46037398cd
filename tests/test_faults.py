"""Saves under faults: every artefact (transcoder, graph, checkpoint, feature index) written
with a failure injected after each of its internal steps, and transcoders and checkpoints
written by a process SIGKILLed at random moments, load afterwards as the old artefact or the
new one, never a mix, and the next save succeeds. Also: the re-save-and-kill sequence that
once left `latest` naming a half-deleted checkpoint, resumes with other settings, writers
taking turns, file permissions, and loads of non-finite weights."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pathlib
import random
import shutil
import signal
import stat
import time
import warnings

import pytest
import torch
from _training_helpers import small_clt
from conftest import clt_for, get_model, random_clt
from safetensors.torch import load_file, save_file

from tl_clt import AttributionGraph, CrossLayerTranscoder, ReplacementModel, attribute
from tl_clt import _files as files
from tl_clt import graph as graph_module
from tl_clt import io as clt_io
from tl_clt.errors import CheckpointError, FileWriteError, TLCLTWarning
from tl_clt.labels import FeatureIndex, build_feature_index
from tl_clt.labels import store as index_store
from tl_clt.training import TrainConfig, Trainer, checkpoint


# ---------------------------------------------------------------------- fault injection
class Faults:
    """Counts the internal steps of a save (file writes, syncs, renames, opens, directory
    swaps) and raises OSError(ENOSPC) at step `fail_at` (0: never)."""

    def __init__(self, monkeypatch, fail_at: int, extra: tuple = ()) -> None:
        self.count, self.fail_at = 0, fail_at
        targets = [
            (os, "replace"), (os, "fsync"), (os, "open"), (pathlib.Path, "write_text"),
            (files, "_exchange"), (clt_io, "save_file"), (graph_module, "save_file"),
            (checkpoint, "save_file"), (files.tempfile, "mkstemp"), (files.tempfile, "mkdtemp"),
            *extra,
        ]  # fmt: skip
        for owner, name in targets:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, fn):
        def step(*args, **kwargs):
            self.count += 1
            if self.count == self.fail_at:
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            return fn(*args, **kwargs)

        return step


def _each_step(monkeypatch, save, check, extra: tuple = ()) -> int:
    """Run `save()` failing at step 1, 2, ... until a run has no step left to fail, calling
    `check(failed)` after each (a failure in cleaning up after a save is tolerated: that save
    succeeds). Returns how many steps the save has."""
    k = 1
    while True:
        with monkeypatch.context() as m:
            faults = Faults(m, k, extra)
            try:
                save()
                failed = False
            except OSError:
                failed = True
        check(failed)
        if faults.count < k:  # no step k: every step has had its failure
            assert not failed
            return k - 1
        k += 1


def _temporaries(directory) -> list[str]:
    return [p.name for p in pathlib.Path(directory).rglob("*.tmp")]


def _constant_clt(value: float, name: str) -> CrossLayerTranscoder:
    """A transcoder whose every parameter is `value` and whose config names `name`: the same
    shapes for every value, so a mix of two would load without a shape error."""
    from tl_clt.config import ModelIdentity

    clt = random_clt(2, 4, 6, model=ModelIdentity(name, 2, 4, 11))
    with torch.no_grad():
        for p in clt.parameters():
            p.fill_(value)
    return clt


def _which(directory) -> str:
    """'A' or 'B': the transcoder in `directory`, checked to be one whole version."""
    clt = CrossLayerTranscoder.from_pretrained(directory)
    name = clt.cfg.model.name
    want = {"A": 1.0, "B": 2.0}[name]
    assert all(bool((p == want).all()) for p in clt.parameters()), f"{name}: a mix"
    return name


# ---------------------------------------------------------------------- transcoder
def test_a_transcoder_save_failing_at_any_step_leaves_old_or_new(tmp_path, monkeypatch):
    directory = tmp_path / "clt"
    old, new = _constant_clt(1.0, "A"), _constant_clt(2.0, "B")
    seen = set()

    def check(failed: bool) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TLCLTWarning)  # a stale config.json copy
            seen.add(_which(directory))
        new.save_pretrained(directory)  # the next save succeeds
        assert _which(directory) == "B" and not _temporaries(directory)
        old.save_pretrained(directory)

    old.save_pretrained(directory)
    steps = _each_step(monkeypatch, lambda: new.save_pretrained(directory), check)
    assert steps >= 8 and seen == {"A", "B"}


def _save_forever(directory) -> None:
    versions = [_constant_clt(1.0, "A"), _constant_clt(2.0, "B")]
    i = 0
    while True:
        versions[i % 2].save_pretrained(directory)
        i += 1


@pytest.mark.parametrize("what", ["transcoder", "checkpoint"])
def test_sigkill_at_random_moments_of_saves_leaves_a_whole_artefact(tmp_path, what):
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(0)
    target = _save_forever if what == "transcoder" else _checkpoint_forever
    directory = tmp_path / what
    (_constant_clt(1.0, "A").save_pretrained if what == "transcoder" else _first_checkpoint)(
        directory
    )
    names = set()
    for _ in range(5):
        proc = ctx.Process(target=target, args=(directory,))
        proc.start()
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL  # killed while saving, not finished
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TLCLTWarning)
            names.add(_which(directory) if what == "transcoder" else _check_checkpoint(directory))
    assert names  # each check above loaded one whole version
    if what == "transcoder":  # the next save succeeds and cleans up after the killed ones
        _constant_clt(2.0, "B").save_pretrained(directory)
        assert _which(directory) == "B" and not _temporaries(directory)


# ---------------------------------------------------------------------- checkpoints
CKPT_CONFIG = TrainConfig(steps=100, batch_size=8, log_every=1, checkpoint_every=1)


def _ckpt_trainer(value: float, step: int) -> Trainer:
    trainer = Trainer(small_clt(), CKPT_CONFIG)
    with torch.no_grad():
        for p in trainer.clt.parameters():
            p.fill_(value)
    trainer.firing_ema = torch.full((2, 12), value)
    trainer.step = step
    return trainer


def _first_checkpoint(directory) -> None:
    checkpoint.save_checkpoint(_ckpt_trainer(1.0, 1), directory, keep=2)


def _checkpoint_forever(directory) -> None:
    i = 0
    while True:  # steps 1..3 over and over: new steps, re-saved steps and deletions
        checkpoint.save_checkpoint(_ckpt_trainer(float(i % 3 + 1), i % 3 + 1), directory, keep=2)
        i += 1


def _check_checkpoint(directory) -> str:
    """Resume from `directory`: the model and trainer files must be of one save."""
    trainer = Trainer(small_clt(), CKPT_CONFIG)
    assert checkpoint.resume_latest(trainer, directory)
    value = float(trainer.firing_ema[0, 0])
    assert all(bool((p == value).all()) for p in trainer.clt.parameters()), "a mix"
    assert value in (trainer.step, trainer.step + 10)  # and of the step trainer.json names
    return f"step {trainer.step} v{value:g}"


def test_a_checkpoint_save_failing_at_any_step_leaves_old_or_new(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    _first_checkpoint(directory)
    seen = set()

    def check(failed: bool) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TLCLTWarning)
            seen.add(_check_checkpoint(directory))
        checkpoint.save_checkpoint(_ckpt_trainer(1.0, 1), directory)  # the next save succeeds
        assert not _temporaries(directory)

    # re-saving step 1 with other values: the case that replaces an existing directory
    save = lambda: checkpoint.save_checkpoint(_ckpt_trainer(11.0, 1), directory)  # noqa: E731
    steps = _each_step(monkeypatch, save, check)
    assert steps >= 10 and seen == {"step 1 v1", "step 1 v11"}
    save2 = lambda: checkpoint.save_checkpoint(_ckpt_trainer(2.0, 2), directory)  # noqa: E731
    seen.clear()

    def check2(failed: bool) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TLCLTWarning)
            seen.add(_check_checkpoint(directory))
        shutil.rmtree(directory / "step_00000002", ignore_errors=True)
        checkpoint.save_checkpoint(_ckpt_trainer(1.0, 1), directory)

    _each_step(monkeypatch, save2, check2)
    assert seen == {"step 1 v1", "step 2 v2"}


def _resave_and_die(directory, how: str) -> None:
    """Re-save step 2 (a resumed run saving a step that exists) and die in its deletion of the
    old copy (`how` = "exchange": after the one-step swap; "renames": where the system cannot
    swap, between moving the old copy aside and moving the new one in, or during the
    deletion)."""
    trainer = _ckpt_trainer(2.0, 2)
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if how == "exchange":
        files.shutil.rmtree = die
    else:
        files._exchange = lambda a, b: False
        real = os.replace
        calls = []

        def replace(a, b):
            calls.append(b)
            if how == "between_renames" and len(calls) == 2:
                die()
            return real(a, b)

        files.os.replace = replace
        if how == "renames":
            files.shutil.rmtree = die
    checkpoint.save_checkpoint(trainer, directory, keep=3)


@pytest.mark.parametrize("how", ["exchange", "renames", "between_renames"])
def test_a_resave_killed_while_deleting_the_old_copy_resumes(tmp_path, how):
    directory = tmp_path / "ckpt"
    checkpoint.save_checkpoint(_ckpt_trainer(1.0, 1), directory, keep=3)
    checkpoint.save_checkpoint(_ckpt_trainer(2.0, 2), directory, keep=3)
    proc = multiprocessing.get_context("fork").Process(
        target=_resave_and_die, args=(directory, how)
    )
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    trainer = Trainer(small_clt(), CKPT_CONFIG)
    if how == "between_renames":  # step 2 is gone for an instant: the older one, with a warning
        with pytest.warns(TLCLTWarning, match="missing or incomplete.*step_00000001"):
            assert checkpoint.attach_checkpoints(trainer, directory)
        assert trainer.step == 1
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert checkpoint.attach_checkpoints(trainer, directory)
        assert trainer.step == 2
    # and the run goes on checkpointing: the leftovers are cleaned up
    checkpoint.save_checkpoint(_ckpt_trainer(3.0, 3), directory)
    assert not _temporaries(directory)
    assert checkpoint.latest_checkpoint(directory).name == "step_00000003"


def test_a_resume_with_other_settings_names_them_and_needs_consent(tmp_path):
    directory = tmp_path / "ckpt"
    checkpoint.save_checkpoint(_ckpt_trainer(1.0, 1), directory)
    changed = TrainConfig(steps=50, batch_size=8, lr=1e-3, seed=3, log_every=1, checkpoint_every=5)
    trainer = Trainer(small_clt(), changed)
    trainer.data_fingerprint = "another"
    with pytest.raises(CheckpointError) as info:
        checkpoint.attach_checkpoints(trainer, directory)
    text = str(info.value)
    for field in ("lr: checkpoint 0.002, now 0.001", "seed: checkpoint 0, now 3", "steps"):
        assert field in text
    assert "checkpoint_every" not in text  # bookkeeping may change
    assert "allow_changes=True" in text
    trainer = Trainer(small_clt(), changed)
    with pytest.warns(TLCLTWarning, match="changed settings"):
        assert checkpoint.attach_checkpoints(trainer, directory, allow_changes=True)
    assert trainer.step == 1 and trainer.scheduler.base_lrs == [1e-3]
    other = Trainer(small_clt(n_features=10), CKPT_CONFIG)
    with pytest.raises(CheckpointError, match=r"n_features: checkpoint 12, now 10"):
        checkpoint.attach_checkpoints(other, directory, allow_changes=True)


def test_two_trainers_saving_into_one_directory_take_turns(tmp_path):
    directory = tmp_path / "ckpt"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_checkpoint_forever, args=(directory,)) for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    for p in procs:
        assert p.is_alive()  # neither died of the other's files
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    _check_checkpoint(directory)


# ---------------------------------------------------------------------- graphs
@pytest.fixture(scope="module")
def two_graphs():
    lens = get_model("gpt2", n_layers=2)
    rm = ReplacementModel(lens, clt_for(lens, n_features=12))
    return attribute(rm, "w1 w2 w3"), attribute(rm, "w4 w5")


def test_a_graph_save_failing_at_any_step_leaves_old_or_new(tmp_path, monkeypatch, two_graphs):
    old, new = two_graphs
    directory = tmp_path / "graph"
    seen = set()

    def which() -> str:
        g = AttributionGraph.load(directory)
        for name, want in (("old", old), ("new", new)):
            if g.prompt == want.prompt:
                assert g.nodes == want.nodes and torch.equal(g.adjacency, want.adjacency), "mix"
                return name
        raise AssertionError(g.prompt)

    def check(failed: bool) -> None:
        seen.add(which())
        new.save(directory)
        assert which() == "new" and not _temporaries(directory)
        old.save(directory)

    old.save(directory)
    steps = _each_step(monkeypatch, lambda: new.save(directory), check)
    assert steps >= 8 and seen == {"old", "new"}


# ---------------------------------------------------------------------- feature index
def test_an_index_rebuild_failing_at_any_step_keeps_the_old_index(tmp_path, monkeypatch):
    lens = get_model("gpt2", n_layers=2)
    rm = ReplacementModel(lens, clt_for(lens, n_features=8))
    tokens = torch.randint(1, lens.d_vocab, (6, 8))
    path = tmp_path / "f.db"
    kw = {"batch_size": 3, "label": False, "progress": False}
    build_feature_index(rm, tokens, path, **kw)
    before = path.read_bytes()
    other = torch.randint(1, lens.d_vocab, (6, 8))
    steps = [
        (index_store, n)
        for n in ("write_vocab", "write_features", "write_pools", "write_logits", "save_progress")
    ]

    def check(failed: bool) -> None:
        if failed:
            assert path.read_bytes() == before  # untouched until the new one is complete
            assert FeatureIndex(path).n_tokens > 0
            assert not _temporaries(tmp_path)
        else:
            FeatureIndex(path)

    n = _each_step(
        monkeypatch, lambda: build_feature_index(rm, other, path, overwrite=True, **kw), check,
        extra=tuple(steps),
    )  # fmt: skip
    assert n >= 6
    assert path.read_bytes() != before


def test_a_second_index_builder_is_refused_clearly(tmp_path):
    lens = get_model("gpt2", n_layers=2)
    rm = ReplacementModel(lens, clt_for(lens, n_features=8))
    path = tmp_path / "f.db"
    tokens = torch.randint(1, lens.d_vocab, (4, 8))
    refused = pytest.raises(FileWriteError, match="another process is writing")
    with files.locked(path), refused:  # the lock held as a running builder holds it
        build_feature_index(rm, tokens, path, label=False)


def test_a_damaged_or_newer_index_is_refused(tmp_path):
    lens = get_model("gpt2", n_layers=2)
    rm = ReplacementModel(lens, clt_for(lens, n_features=8))
    path = tmp_path / "f.db"
    index = build_feature_index(
        rm, torch.randint(1, lens.d_vocab, (6, 8)), path, label=False, progress=False
    )
    index.close()
    data = bytearray(path.read_bytes())
    page = 4096 * 3  # random bytes inside a page of the tables
    data[page : page + 512] = random.Random(0).randbytes(512)
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(bytes(data))
    with pytest.raises(Exception) as info:
        FeatureIndex(damaged)
    assert "damaged" in str(info.value)
    import json
    import sqlite3

    conn = sqlite3.connect(path)
    meta = index_store.get_meta(conn)
    meta["identity"]["format"] = "tl_clt.labels/2"
    index_store.set_meta(conn, {"identity": meta["identity"]})
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="format 'tl_clt.labels/2'"):
        FeatureIndex(path)
    assert json  # (imported for the meta round trip)


# ---------------------------------------------------------------------- files and values
def test_saved_files_have_the_usual_permissions(tmp_path, two_graphs):
    mask = os.umask(0o022)
    try:
        random_clt(2, 4, 6).save_pretrained(tmp_path / "clt")
        two_graphs[0].save(tmp_path / "g")
    finally:
        os.umask(mask)
    for path in [*(tmp_path / "clt").iterdir(), *(tmp_path / "g").iterdir()]:
        if path.name.startswith("."):
            continue  # the lock file
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    random_clt(2, 4, 6).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    key = sorted(k for k in weights if k.startswith("W_dec"))[0]
    weights[key].view(-1)[0] = float("nan")
    meta = {"format": "tl_clt/1", "config": (tmp_path / "config.json").read_text()}
    save_file(weights, tmp_path / "model.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match=f"'{key}'.*NaN"):
        CrossLayerTranscoder.from_pretrained(tmp_path)


def test_a_bfloat16_transcoder_converted_after_creation_loads_back(tmp_path):
    clt = random_clt(2, 4, 6).to(torch.bfloat16)
    clt.save_pretrained(tmp_path)
    back = CrossLayerTranscoder.from_pretrained(tmp_path)
    assert back.cfg.dtype == "bfloat16"
    for a, b in zip(clt.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)


def test_an_edited_config_copy_is_not_mixed_with_the_weights(tmp_path):
    import json

    clt = random_clt(2, 4, 6, activation="jumprelu")
    clt.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["activation"] = "relu"  # what a save killed between its two files leaves behind
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.warns(TLCLTWarning, match="differs from the config stored"):
        back = CrossLayerTranscoder.from_pretrained(tmp_path)
    assert back.cfg == clt.cfg


def test_an_analysis_inside_a_splice_block_is_refused(two_graphs):
    from tl_clt.errors import InputError

    lens = get_model("gpt2", n_layers=2)
    rm = ReplacementModel(lens, clt_for(lens, n_features=12))
    with rm.spliced(), pytest.raises(InputError, match="inside a splice block"):
        attribute(rm, "w1 w2")
    assert attribute(rm, "w1 w2").n_nodes > 0  # and outside, as before
