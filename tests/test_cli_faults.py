"""Every subcommand against missing files, unreadable and read-only paths, corrupt files, empty
inputs and bad values: one line on stderr (`tl-clt CMD: error: ...`) naming the problem, no
traceback, a non-zero exit. (Run in-process through `main`; one case also as a real process.)
Read-only paths are a read-only directory, or, for root (who may write anywhere), a place the
kernel refuses to create files in."""

from __future__ import annotations

import errno
import os
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_clt
from safetensors.torch import load_file, save_file

from tl_clt.cli import main

GOOD = "1 2 3"  # a prompt in the shipped model's vocabulary


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "empty.txt").write_text("")
    (root / "blank.txt").write_text("\n  \n")
    (root / "random.bin").write_bytes(random.Random(0).randbytes(4096))
    (root / "bad.json").write_text("{not json")
    (root / "list.json").write_text("[1, 2]")
    (root / "a_file").write_text("x")
    (root / "latin1.txt").write_bytes(b"caf\xe9\n")
    clt = random_clt(4, 128, 8)  # the shipped model's shape
    clt.save_pretrained(root / "nan_clt")
    weights = load_file(root / "nan_clt" / "model.safetensors")
    key = sorted(weights)[0]
    weights[key].view(-1)[0] = float("inf")
    meta = {"format": "tl_clt/1", "config": (root / "nan_clt" / "config.json").read_text()}
    save_file(weights, root / "nan_clt" / "model.safetensors", metadata=meta)
    clt.save_pretrained(root / "cut_clt")
    cut = root / "cut_clt" / "model.safetensors"
    cut.write_bytes(cut.read_bytes()[:1000])
    (root / "no_clt").mkdir()
    (root / "newer.db").write_bytes(b"")
    conn = sqlite3.connect(root / "newer.db")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(
        "INSERT INTO meta VALUES ('identity', '{\"format\": \"tl_clt.labels/9\"}'), "
        "('n_tokens', '5')"
    )
    conn.commit()
    conn.close()
    if os.geteuid() == 0:  # root writes through permissions: a place no one may create files
        readonly = Path("/sys/tl-clt-read-only")
    else:
        readonly = root / "readonly"
        readonly.mkdir()
        readonly.chmod(0o555)
    return root, readonly


def _cases(root: Path, ro: Path) -> list[tuple[str, list[str], str]]:
    missing = str(root / "missing")
    r = lambda name: str(root / name)  # noqa: E731
    return [
        # trace
        ("trace missing clt", ["trace", GOOD, "--model", "shipped", "--clt", missing], "missing"),
        ("trace dir without clt", ["trace", GOOD, "--model", "shipped", "--clt", r("no_clt")],
         "config.json does not exist"),
        ("trace truncated clt", ["trace", GOOD, "--model", "shipped", "--clt", r("cut_clt")],
         "cut_clt"),
        ("trace inf weights", ["trace", GOOD, "--model", "shipped", "--clt", r("nan_clt")],
         "NaN or infinite"),
        ("trace clt is a file", ["trace", GOOD, "--model", "shipped", "--clt", r("a_file")],
         "a_file"),
        ("trace missing model", ["trace", GOOD, "--model", missing, "--clt", "shipped"],
         "missing"),
        ("trace empty prompt", ["trace", "  "], "empty"),
        ("trace surrogate", ["trace", "1 \udcff 2"], "surrogate"),
        ("trace huge prompt", ["trace", "1 " * 100_000], "characters"),
        ("trace missing index", ["trace", GOOD, "--index", missing], "missing"),
        ("trace corrupt index", ["trace", GOOD, "--index", r("random.bin")], "damaged"),
        ("trace bad threshold", ["trace", GOOD, "--node-threshold", "nan"], "node_threshold"),
        ("trace bad int", ["trace", GOOD, "--max-feature-nodes", "many"], "invalid int"),
        ("trace out under a file", ["trace", GOOD, "--out", r("a_file") + "/g"], "not a directory"),
        ("trace read-only out", ["trace", GOOD, "--out", str(ro / "g")], str(ro)),
        ("trace html read-only", ["trace", GOOD, "--out", r("g"), "--html", str(ro / "p.html")],
         str(ro)),
        # intervene
        ("intervene nan scale", ["intervene", GOOD, "--feature", "0:1", "--scale", "nan"],
         "finite"),
        ("intervene inf value", ["intervene", GOOD, "--feature", "0:1", "--value", "inf"],
         "finite"),
        ("intervene bad feature", ["intervene", GOOD, "--feature", "zero", "--scale", "2"],
         "LAYER:FEATURE"),
        ("intervene layer range", ["intervene", GOOD, "--feature", "9:1", "--scale", "2"], "9"),
        ("intervene missing clt", ["intervene", GOOD, "--feature", "0:1", "--scale", "2",
                                   "--model", "shipped", "--clt", missing], "missing"),
        ("intervene bad device", ["intervene", GOOD, "--feature", "0:1", "--scale", "2",
                                  "--device", "toaster"], "toaster"),
        ("intervene no scale", ["intervene", GOOD, "--feature", "0:1"], "required"),
        # label
        ("label missing texts", ["label", "--texts", missing, "--out", r("l.db")], "--texts"),
        ("label empty texts", ["label", "--texts", r("empty.txt"), "--out", r("l.db")], "empty"),
        ("label blank texts", ["label", "--texts", r("blank.txt"), "--out", r("l.db")], "empty"),
        ("label latin-1 texts", ["label", "--texts", r("latin1.txt"), "--out", r("l.db")],
         "UTF-8"),
        ("label texts is a dir", ["label", "--texts", str(root), "--out", r("l.db")], "directory"),
        ("label corrupt tokens", ["label", "--tokens", r("random.bin"), "--out", r("l.db")],
         "safetensors"),
        ("label missing tokens", ["label", "--tokens", missing, "--out", r("l.db")], "--tokens"),
        ("label bad classes", ["label", "--classes", r("bad.json"), "--out", r("l.db")], "JSON"),
        ("label classes list", ["label", "--classes", r("list.json"), "--out", r("l.db")],
         "object"),
        ("label corrupt index", ["label", "--out", r("random.bin"), "--quiet"], "damaged"),
        ("label out is a dir", ["label", "--out", str(root), "--quiet"], "directory"),
        ("label read-only out", ["label", "--out", str(ro / "l.db"), "--quiet"], str(ro)),
        ("label bad k", ["label", "--k", "ten"], "invalid int"),
        ("label missing clt", ["label", "--model", "shipped", "--clt", missing], "missing"),
        # feature
        ("feature missing index", ["feature", "1:2", "--index", missing], "missing"),
        ("feature corrupt index", ["feature", "1:2", "--index", r("random.bin")], "damaged"),
        ("feature empty index", ["feature", "1:2", "--index", r("empty.txt")], "feature index"),
        ("feature newer index", ["feature", "1:2", "--index", r("newer.db")], "labels/9"),
        ("feature bad spec", ["feature", "1-2", "--index", r("random.bin")], "LAYER:FEATURE"),
        ("feature index is dir", ["feature", "1:2", "--index", str(root)], str(root)),
        ("feature bad n", ["feature", "1:2", "-n", "x"], "invalid int"),
        # train
        ("train missing text", ["train", "--text", missing, "--out", r("t")], "does not exist"),
        ("train empty text", ["train", "--text", r("empty.txt"), "--out", r("t")], "empty"),
        ("train random text", ["train", "--text", r("random.bin"), "--out", r("t")], ".txt"),
        ("train bad config", ["train", "--text", r("blank.txt"), "--config", r("bad.json"),
                              "--out", r("t")], "bad.json"),
        ("train missing config", ["train", "--text", r("blank.txt"), "--config", missing,
                                  "--out", r("t")], "missing"),
        ("train nan lr", ["train", "--text", r("blank.txt"), "--lr", "nan", "--out", r("t")],
         "lr"),
        ("train negative steps", ["train", "--text", r("blank.txt"), "--steps", "-3",
                                  "--out", r("t")], "steps"),
        ("train bad device", ["train", "--text", r("blank.txt"), "--device", "toaster",
                              "--out", r("t")], "toaster"),
        ("train missing model", ["train", "--text", r("blank.txt"), "--model", missing,
                                 "--out", r("t")], "missing"),
        ("train no out", ["train", "--text", r("blank.txt")], "--out"),
        # demo and the command itself
        ("demo bad device", ["demo", "--device", "toaster"], "toaster"),
        ("unknown command", ["fly"], "invalid choice"),
    ]  # fmt: skip


CASE_NAMES = [c[0] for c in _cases(Path("/x"), Path("/y"))]


def _error_lines(text: str) -> list[str]:
    """stderr without progress bars (which redraw with carriage returns)."""
    lines = text.replace("\r", "\n").splitlines()
    return [ln for ln in lines if ln.strip() and not re.search(r"\[\d+:\d+[<, \]]", ln)]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_each_failure_is_one_line_without_a_traceback(name, paths, capsys):
    root, readonly = paths
    (case,) = [c for c in _cases(root, readonly) if c[0] == name]
    _, argv, expected = case
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert code not in (0, None), (name, err)
    assert "Traceback" not in err
    assert len(lines) == 1, (name, lines)
    command = (
        argv[0] if argv[0] in ("demo", "train", "trace", "intervene", "label", "feature") else ""
    )
    assert lines[0].startswith(f"tl-clt {command}".rstrip() + ": error: " if command else "tl-clt")
    assert expected in lines[0], (name, lines[0])


def test_a_full_disk_is_one_line(paths, capsys, monkeypatch):
    root, _ = paths

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["trace", GOOD, "--out", str(root / "full")]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "disk is full" in lines[0], lines
    monkeypatch.undo()

    from tl_clt.labels import store

    def full_db(*args):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "write_vocab", full_db)
    assert main(["label", "--out", str(root / "full.db"), "--quiet"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "disk is full" in lines[0] and "full.db" in lines[0], lines


def test_an_unexpected_failure_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    from tl_clt.commands import feature

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(feature, "run", broken)
    assert main(["feature", "1:2"]) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "unexpected ZeroDivisionError" in lines[0] and "--debug" in lines[0]
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "feature", "1:2"])


def test_a_real_process_prints_one_line_and_exits_non_zero(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "tl_clt", "feature", "1:2", "--index", str(tmp_path / "no.db")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tl-clt feature: error: no feature index at {tmp_path / 'no.db'}; build one with "
        "tl-clt label"
    ]
