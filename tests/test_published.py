"""Transcoders written by SAELens, sparsify and circuit-tracer themselves (tests/fixtures/peers,
made by scripts/make_peer_fixtures.py with the versions in versions.json): tl_clt loads each
layout, its feature activations and reconstructions equal the peer's saved outputs, it splices
exactly, and damaged or foreign files are refused by name without unpickling anything."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import get_model
from safetensors.torch import load_file, save_file

from tl_clt import ReplacementModel
from tl_clt.errors import CheckpointError, ModelMismatchError
from tl_clt.published import detect_layout, load_transcoder

PEERS = Path(__file__).parent / "fixtures" / "peers"
PLAIN = ["saelens_relu", "saelens_skip", "saelens_jumprelu", "circuit_tracer_plt"]
SPARSIFY = ["sparsify_topk", "sparsify_skip"]
SHAPE = {"n_layers": 2, "d_model": 16, "n_heads": 4, "d_mlp": 32}  # the fixtures' model


def peer_outputs(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(PEERS / name / "peer_outputs.safetensors"))


def check_against_peer(clt, outputs, inputs) -> None:
    """Every layer's features and reconstruction against the peer's, from `inputs[l]` (what
    tl_clt's transcoder reads where the peer read `outputs['x_l']`)."""
    for layer in range(2):
        with torch.no_grad():
            acts = clt.encode_layer(inputs[layer], layer)
            recon = clt.reconstruct_layer([acts if s == layer else None for s in range(2)],
                                          layer, inputs[layer])  # fmt: skip
        expected = outputs[f"features_{layer}"]
        assert (expected > 0).any() and (expected == 0).any()
        torch.testing.assert_close(acts, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(recon, outputs[f"recon_{layer}"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PLAIN)
def test_features_and_reconstructions_equal_the_peers(name):
    clt = load_transcoder(PEERS / name)
    outputs = peer_outputs(name)
    assert clt.cfg.architecture == "per_layer" and clt.cfg.n_layers == 2
    assert clt.cfg.skip == (name in ("saelens_skip", "circuit_tracer_plt"))
    check_against_peer(clt, outputs, [outputs[f"x_{layer}"] for layer in range(2)])


@pytest.mark.parametrize("name", SPARSIFY)
def test_sparsify_transcoders_read_the_mlp_input_through_the_folded_norm(name):
    """sparsify reads the MLP module's input `n * w + b`; tl_clt reads `n` and folds the
    norm's weight and bias into the encoder and skip connection: with the peer's inputs taken
    as MLP inputs of the fixtures' model, tl_clt on the matching `n` gives the peer's outputs."""
    with pytest.raises(CheckpointError, match="pass model="):
        load_transcoder(PEERS / name)
    lens = get_model("gpt2", **SHAPE)
    clt = load_transcoder(PEERS / name, model=lens)
    assert clt.cfg.activation == "topk" and clt.cfg.k == 4
    outputs = peer_outputs(name)
    normalised = []
    for layer in range(2):
        norm = lens.model.blocks[layer].ln2
        normalised.append((outputs[f"x_{layer}"] - norm.b.detach()) / norm.w.detach())
    check_against_peer(clt, outputs, normalised)


@pytest.mark.parametrize("name", ["saelens_skip", "sparsify_skip", "circuit_tracer_plt"])
def test_loaded_transcoders_splice_exactly(name):
    lens = get_model("gpt2", **SHAPE)
    rm = ReplacementModel(lens, load_transcoder(PEERS / name, model=lens))
    tokens = lens.tokens("w3 w1 w4 w1 w5")
    with torch.no_grad():
        original = lens.model(tokens)
        spliced = rm(tokens)
        pure = rm(tokens, error=False)
    torch.testing.assert_close(spliced, original, atol=1e-5, rtol=0)
    assert (pure - original).abs().max() > 1e-2  # the transcoder really is in the path


def copy_fixture(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    shutil.copytree(PEERS / name, out)
    return out


def test_a_missing_tensor_is_refused_naming_the_file(tmp_path):
    root = copy_fixture("saelens_skip", tmp_path)
    file = root / "blocks.1.ln2.hook_normalized" / "sae_weights.safetensors"
    tensors = load_file(str(file))
    del tensors["W_skip"]
    save_file(tensors, str(file))
    with pytest.raises(CheckpointError, match=r"blocks\.1\.ln2.*sae_weights.*W_skip"):
        load_transcoder(root)


def test_a_shape_that_does_not_fit_is_refused(tmp_path):
    root = copy_fixture("circuit_tracer_plt", tmp_path)
    file = root / "layer_1.safetensors"
    tensors = load_file(str(file))
    tensors["W_dec"] = tensors["W_dec"][:, :8].contiguous()
    save_file(tensors, str(file))
    with pytest.raises(CheckpointError, match=r"layer_1\.safetensors: W_dec has shape"):
        load_transcoder(root)
    # and a transcoder for another width does not splice into the model
    lens = get_model("gpt2", n_layers=2)  # d_model 32
    with pytest.raises(ModelMismatchError, match="d_model=16 but the model has .* d_model=32"):
        ReplacementModel(lens, load_transcoder(PEERS / "saelens_relu"))


def test_hooks_the_model_lacks_are_refused(tmp_path):
    root = copy_fixture("saelens_relu", tmp_path)
    cfg_path = root / "blocks.0.ln2.hook_normalized" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["metadata"]["hook_name"] = "blocks.0.attn.hook_z"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"cfg\.json: metadata\.hook_name = 'blocks\.0\.attn"):
        load_transcoder(root)


class _Payload:
    """Unpickling this would create `marker` (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_checkpoints_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    folder = tmp_path / "pickled"
    (folder / "layers.0.mlp").mkdir(parents=True)
    for name in ("model.pt", "layers.0.mlp/sae.pt", "sae_weights.pt"):
        (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="holds no transcoder layout"):
        detect_layout(folder)
    with pytest.raises(CheckpointError):
        load_transcoder(folder)
    assert not marker.exists()


def test_the_norm_is_folded_only_where_the_mlp_reads_ln2(tmp_path):
    """OLMo-2 has no pre-MLP norm (its MLP reads the residual stream): folding a norm into
    sparsify's encoders there would be wrong, so it is refused."""
    lens = get_model("olmo2", **SHAPE)
    with pytest.raises(CheckpointError, match="does not read ln2's output"):
        load_transcoder(PEERS / "sparsify_topk", model=lens)
