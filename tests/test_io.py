"""Save/load round trips (ours and circuit-tracer's layout), atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import ACTIVATIONS, ARCHITECTURES, random_clt
from safetensors.torch import save_file

from tl_clt import CrossLayerTranscoder
from tl_clt import io as clt_io
from tl_clt.config import ModelIdentity
from tl_clt.errors import ConfigError


def assert_same_state(a: CrossLayerTranscoder, b: CrossLayerTranscoder) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_load_is_exact(tmp_path, architecture, activation):
    ident = ModelIdentity("m", 3, 5, 11)
    clt = random_clt(3, 5, 7, architecture, activation, seed=1, scales=True, model=ident)
    clt.save_pretrained(tmp_path / "clt")
    loaded = CrossLayerTranscoder.from_pretrained(tmp_path / "clt")
    assert loaded.cfg == clt.cfg
    assert not loaded.training
    assert_same_state(clt, loaded)
    assert json.loads((tmp_path / "clt" / "config.json").read_text())["model"]["name"] == "m"


def test_bfloat16_round_trip(tmp_path):
    clt = random_clt(2, 4, 6, dtype="bfloat16")
    assert clt.W_enc.dtype == torch.bfloat16
    clt.save_pretrained(tmp_path)
    assert_same_state(clt, CrossLayerTranscoder.from_pretrained(tmp_path))


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
@pytest.mark.parametrize("architecture", ["cross_layer", "per_layer"])
def test_circuit_tracer_round_trip_is_exact(tmp_path, architecture, activation):
    clt = random_clt(3, 5, 7, architecture, activation, seed=2)
    clt_io.export_circuit_tracer(clt, tmp_path, model_name="tiny")
    meta = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert meta["model_kind"] == "cross_layer_transcoder"
    assert meta["feature_input_hook"] == "ln2.hook_normalized"
    assert meta["feature_output_hook"] == "hook_mlp_out"
    back = CrossLayerTranscoder.from_circuit_tracer(tmp_path)
    assert back.cfg == clt.cfg
    assert_same_state(clt, back)


def test_circuit_tracer_shared_becomes_equivalent_per_layer(tmp_path):
    clt = random_clt(3, 5, 7, "shared", "jumprelu", seed=3, scales=True)
    clt_io.export_circuit_tracer(clt, tmp_path)
    back = CrossLayerTranscoder.from_circuit_tracer(tmp_path)
    assert back.cfg.architecture == "per_layer"
    x = torch.randn(4, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(back(x), clt(x), atol=1e-6, rtol=1e-5)


def test_reads_a_circuit_tracer_directory_written_by_hand(tmp_path):
    """A directory in circuit-tracer's layout (W_enc [F, d], W_dec [F, L-l, d]) without our
    metadata, written here directly with safetensors."""
    L, d, F = 2, 4, 3
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(L):
        tensors[layer] = {
            "W_enc": torch.randn(F, d, generator=g),
            "b_enc": torch.randn(F, generator=g),
            "b_dec": torch.randn(d, generator=g),
            "threshold": torch.rand(F, generator=g) * 0.1,
            "W_dec": torch.randn(F, L - layer, d, generator=g),
        }
        t = tensors[layer]
        save_file(
            {f"{k}_{layer}": v for k, v in t.items() if k != "W_dec"},
            str(tmp_path / f"W_enc_{layer}.safetensors"),
        )
        save_file({f"W_dec_{layer}": t["W_dec"]}, str(tmp_path / f"W_dec_{layer}.safetensors"))
    (tmp_path / "config.yaml").write_text(
        "model_name: x\nmodel_kind: cross_layer_transcoder\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\n"
    )
    clt = CrossLayerTranscoder.from_circuit_tracer(tmp_path)
    assert (clt.cfg.activation, clt.cfg.input_hook, clt.cfg.n_features) == (
        "jumprelu",
        "hook_resid_mid",
        F,
    )
    x = torch.randn(L, d, generator=g)
    with torch.no_grad():
        acts = clt.encode(x)
        for layer in range(L):
            t = tensors[layer]
            h = t["W_enc"] @ x[layer] + t["b_enc"]
            torch.testing.assert_close(acts[layer], h * (h > t["threshold"]))
        y1 = clt.decode(acts)[1]
        by_hand = (
            tensors[1]["b_dec"]
            + acts[0] @ tensors[0]["W_dec"][:, 1]
            + acts[1] @ tensors[1]["W_dec"][:, 0]
        )
        torch.testing.assert_close(y1, by_hand, atol=1e-5, rtol=1e-5)


def test_topk_export_is_refused_with_a_reason(tmp_path):
    with pytest.raises(ConfigError, match="relu and jumprelu"):
        clt_io.export_circuit_tracer(random_clt(2, 4, 6, activation="topk"), tmp_path)


def test_failed_save_leaves_previous_files_intact(tmp_path, monkeypatch):
    first = random_clt(2, 4, 6, seed=1)
    first.save_pretrained(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(clt_io, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        random_clt(2, 4, 6, seed=2).save_pretrained(tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no temporary files left, nothing overwritten
    assert_same_state(first, CrossLayerTranscoder.from_pretrained(tmp_path))


def test_save_keeps_other_files_in_the_directory(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    random_clt(2, 4, 6).save_pretrained(tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"
