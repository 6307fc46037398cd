"""Write tiny transcoders in the layouts of SAELens, sparsify and circuit-tracer, saved by those
libraries themselves, with each library's own outputs on fixed inputs; tests/test_published.py
loads them with tl_clt (which does not install the peers) and compares.

Run in a throwaway virtual environment that has the peers (they need transformer-lens < 4):

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install torch==2.13.0
    /tmp/peers/bin/pip install sae-lens eai-sparsify circuit-tracer
    /tmp/peers/bin/python scripts/make_peer_fixtures.py tests/fixtures/peers

Every fixture is a 2-layer set for d_model 16 and 32 features (a few KB a file). Beside each
layout, `peer_outputs.safetensors` holds, per layer l, the inputs `x_{l}` [8, 16], the peer's
feature activations `features_{l}` [8, 32] and reconstructions `recon_{l}` [8, 16]; and
`versions.json` the versions that wrote them.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file

L, D, F, N = 2, 16, 32, 8


def randomise(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights and biases (peers initialise decoders or skips at zero)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.5 if "W_" in name or "weight" in name else 0.1
            p.copy_(scale * torch.randn(p.shape, generator=gen))


def inputs(gen: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(N, D, generator=gen) for _ in range(L)]


def saelens(out: Path, kind: str, gen: torch.Generator) -> None:
    from sae_lens.saes import transcoder as T

    classes = {
        "transcoder": (T.TranscoderConfig, T.Transcoder),
        "skip_transcoder": (T.SkipTranscoderConfig, T.SkipTranscoder),
        "jumprelu_transcoder": (T.JumpReLUTranscoderConfig, T.JumpReLUTranscoder),
    }
    cfg_cls, cls = classes[kind]
    xs, outputs = inputs(gen), {}
    for layer in range(L):
        cfg = cfg_cls(d_in=D, d_sae=F, d_out=D, dtype="float32", device="cpu",
                      apply_b_dec_to_input=False)  # fmt: skip
        cfg.metadata.hook_name = f"blocks.{layer}.ln2.hook_normalized"
        cfg.metadata.hook_name_out = f"blocks.{layer}.hook_mlp_out"
        tc = cls(cfg)
        randomise(tc, gen)
        if kind == "jumprelu_transcoder":  # thresholds around zero, some negative
            with torch.no_grad():
                tc.threshold.copy_(0.3 * torch.randn(F, generator=gen))
        tc.eval()
        folder = out / f"blocks.{layer}.ln2.hook_normalized"
        tc.save_model(str(folder))
        with torch.no_grad():
            acts = tc.encode(xs[layer])
            outputs |= {f"x_{layer}": xs[layer], f"features_{layer}": acts,
                        f"recon_{layer}": tc(xs[layer])}  # fmt: skip
    save_file(outputs, str(out / "peer_outputs.safetensors"))


def sparsify(out: Path, skip: bool, gen: torch.Generator) -> None:
    from sparsify import SparseCoder, SparseCoderConfig

    xs, outputs = inputs(gen), {}
    for layer in range(L):
        cfg = SparseCoderConfig(num_latents=F, k=4, transcode=True, skip_connection=skip)
        coder = SparseCoder(D, cfg)
        randomise(coder, gen)
        coder.save_to_disk(out / f"layers.{layer}.mlp")
        with torch.no_grad():
            enc = coder.encode(xs[layer])
            acts = torch.zeros(N, F).scatter_(-1, enc.top_indices, enc.top_acts)
            recon = coder(xs[layer]).sae_out
        outputs |= {f"x_{layer}": xs[layer], f"features_{layer}": acts, f"recon_{layer}": recon}
    save_file(outputs, str(out / "peer_outputs.safetensors"))


def circuit_tracer_plt(out: Path, gen: torch.Generator) -> None:
    import yaml
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import (
        SingleLayerTranscoder,
        TranscoderSet,
    )

    xs, outputs, layers = inputs(gen), {}, {}
    for layer in range(L):
        theta = 0.3 * torch.rand(F, generator=gen)
        tc = SingleLayerTranscoder(D, F, JumpReLU(theta, 0.1), layer, skip_connection=True,
                                   device=torch.device("cpu"), dtype=torch.float32)  # fmt: skip
        randomise(tc, gen)
        layers[layer] = tc
        with torch.no_grad():
            acts = tc.encode(xs[layer])
            recon = tc.decode(acts, xs[layer])
        outputs |= {f"x_{layer}": xs[layer], f"features_{layer}": acts, f"recon_{layer}": recon}
    tset = TranscoderSet(layers, feature_input_hook="ln2.hook_normalized",
                         feature_output_hook="hook_mlp_out", scan="tl-clt-fixture")  # fmt: skip
    tset.to_safetensors(str(out))
    config = {"model_kind": "transcoder_set", "feature_input_hook": "ln2.hook_normalized",
              "feature_output_hook": "hook_mlp_out", "scan": "tl-clt-fixture"}  # fmt: skip
    (out / "config.yaml").write_text(yaml.dump(config))
    save_file(outputs, str(out / "peer_outputs.safetensors"))


def circuit_tracer_graph_nodes(root: Path) -> None:
    """Node records and metadata as circuit-tracer's graph-file writer makes them, for the
    nodes tests/test_viz.py builds in tl_clt (features, an error, a token, logits)."""
    from circuit_tracer.frontend.graph_models import Metadata, Node

    nodes = {
        "feature_0_5_3": Node.feature_node(0, 3, 5, influence=0.5, activation=1.5),
        "feature_1_49_2": Node.feature_node(1, 2, 49, influence=0.25, activation=2.0),
        "feature_3_1023_4": Node.feature_node(3, 4, 1023, influence=0.125, activation=0.5),
        "token_2": Node.token_node(2, 17, influence=0.75),
        "logit_7": Node.logit_node(
            pos=4, vocab_idx=7, token="w7", num_layers=4, target_logit=True, token_prob=0.5
        ),  # fmt: skip
    }
    meta = Metadata(slug="s", scan="m", transcoder_list=[], prompt_tokens=["<bos>", "w1"],
                    prompt="w1", node_threshold=0.8)  # fmt: skip
    data = {"nodes": {k: v.model_dump() for k, v in nodes.items()}, "metadata": meta.model_dump()}
    (root / "circuit_tracer_graph_nodes.json").write_text(json.dumps(data, indent=1) + "\n")


def main(root: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    makers = {
        "saelens_relu": lambda out: saelens(out, "transcoder", gen),
        "saelens_skip": lambda out: saelens(out, "skip_transcoder", gen),
        "saelens_jumprelu": lambda out: saelens(out, "jumprelu_transcoder", gen),
        "sparsify_topk": lambda out: sparsify(out, False, gen),
        "sparsify_skip": lambda out: sparsify(out, True, gen),
        "circuit_tracer_plt": lambda out: circuit_tracer_plt(out, gen),
    }
    for name, make in makers.items():
        out = root / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        make(out)
        print(f"wrote {out}")
    circuit_tracer_graph_nodes(root)
    peers = ("sae-lens", "eai-sparsify", "circuit-tracer", "torch")
    (root / "versions.json").write_text(json.dumps({p: version(p) for p in peers}, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/peers"))
