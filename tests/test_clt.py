"""CrossLayerTranscoder encode/decode against brute-force loops over layers and features."""

from __future__ import annotations

import pytest
import torch
from conftest import ACTIVATIONS, ARCHITECTURES, random_clt

from tl_clt.clt import to_sparse
from tl_clt.errors import InputError

L, D, F, N = 3, 5, 7, 4  # layers, d_model, features, tokens


def brute_encode(clt, x, training=False):
    """a[n, l, f] by explicit loops, following the encoder formula of Ameisen et al. 2025,
    "Circuit Tracing", section "Architecture" (docs/architecture.md, "Weight shapes")."""
    cfg = clt.cfg
    shared = cfg.architecture == "shared"
    h = torch.zeros(N, L, F, dtype=torch.float64)
    for n in range(N):
        for layer in range(L):
            e = 0 if shared else layer
            for f in range(F):
                total = float(clt.b_enc[e, f])
                for i in range(D):
                    total += (
                        float(x[n, layer, i])
                        * float(clt.input_scale[layer])
                        * float(clt.W_enc[e, i, f])
                    )
                h[n, layer, f] = total
    a = torch.zeros_like(h)
    for layer in range(L):
        e = 0 if shared else layer
        if cfg.activation == "batchtopk" and training:
            flat = sorted(
                ((float(h[n, layer, f]), n, f) for n in range(N) for f in range(F)), reverse=True
            )
            for value, n, f in flat[: cfg.k * N]:
                a[n, layer, f] = max(value, 0.0)
            continue
        for n in range(N):
            if cfg.activation == "topk":
                ranked = sorted(range(F), key=lambda f: -float(h[n, layer, f]))[: cfg.k]
                for f in ranked:
                    a[n, layer, f] = max(float(h[n, layer, f]), 0.0)
                continue
            for f in range(F):
                v = float(h[n, layer, f])
                if cfg.activation == "relu":
                    a[n, layer, f] = max(v, 0.0)
                else:  # jumprelu, or batchtopk at inference: a per-feature threshold
                    a[n, layer, f] = v if v > float(clt.threshold[e, f]) else 0.0
    return a


def brute_decode(clt, a):
    cfg = clt.cfg
    y = torch.zeros(N, L, D, dtype=torch.float64)
    for n in range(N):
        for t in range(L):
            for i in range(D):
                total = 0.0
                for s in range(L):
                    writes = s <= t if cfg.architecture == "cross_layer" else s == t
                    if not writes:
                        continue
                    W = clt.W_dec[0 if cfg.architecture == "shared" else s]
                    for f in range(F):
                        total += float(a[n, s, f]) * float(
                            W[f, t - s if cfg.architecture == "cross_layer" else 0, i]
                        )
                y[n, t, i] = total / float(clt.output_scale[t]) + float(clt.b_dec[t, i])
    return y


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_encode_decode_match_brute_force(architecture, activation):
    clt = random_clt(L, D, F, architecture, activation, seed=3, scales=True)
    x = torch.randn(N, L, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acts = clt.encode(x)
        expected = brute_encode(clt, x)
        assert (expected != 0).any() and (expected == 0).any()
        torch.testing.assert_close(acts.double(), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            clt.decode(acts).double(), brute_decode(clt, acts), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            clt(x).double(), brute_decode(clt, expected), atol=1e-5, rtol=1e-5
        )
        if activation == "batchtopk":
            clt.train()
            train_acts = clt.encode(x)
            clt.eval()
            torch.testing.assert_close(
                train_acts.double(), brute_encode(clt, x, training=True), atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sparse_decode_equals_dense_and_gradients_agree(architecture):
    clt = random_clt(L, D, F, architecture, "relu", seed=4, scales=True)
    x = torch.randn(2, N, L, D, generator=torch.Generator().manual_seed(2))
    acts = clt.encode(x).detach()
    dense = clt.decode(acts)
    sparse = clt.decode_sparse(to_sparse(acts), acts.shape[:-2])
    torch.testing.assert_close(sparse, dense, atol=1e-6, rtol=1e-5)
    # the sparse path trains the same decoders as the dense one
    (g_dense,) = torch.autograd.grad(dense.square().sum(), clt.W_dec[0])
    (g_sparse,) = torch.autograd.grad(sparse.square().sum(), clt.W_dec[0])
    torch.testing.assert_close(g_sparse, g_dense, atol=1e-5, rtol=1e-4)


def test_sparse_decode_reads_only_active_rows():
    """decode_sparse must not touch inactive features' decoder rows: poisoning them changes nothing."""
    clt = random_clt(L, D, F, "cross_layer", "topk", seed=5, k=2)
    x = torch.randn(N, L, D)
    with torch.no_grad():
        acts = clt.encode(x)
        sparse = to_sparse(acts, clt.cfg.k)
        before = clt.decode_sparse(sparse)
        active = torch.zeros(L, F, dtype=torch.bool)
        for layer in range(L):
            active[layer, sparse.indices[:, layer].flatten()] = True
        for s in range(L):
            clt.W_dec[s][~active[s]] = float("nan")
        after = clt.decode_sparse(sparse)
    torch.testing.assert_close(after, before)


@pytest.mark.parametrize("architecture", ["cross_layer", "per_layer"])
def test_fold_scales_keeps_outputs(architecture):
    clt = random_clt(L, D, F, architecture, "jumprelu", seed=6, scales=True)
    x = torch.randn(N, L, D)
    with torch.no_grad():
        before = clt(x)
        clt.fold_scales()
        after = clt(x)
    assert torch.all(clt.input_scale == 1) and torch.all(clt.output_scale == 1)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_layer_by_layer_equals_all_at_once():
    clt = random_clt(L, D, F, "cross_layer", "jumprelu", seed=7, scales=True)
    x = torch.randn(N, L, D)
    with torch.no_grad():
        acts = [clt.encode_layer(x[:, layer], layer) for layer in range(L)]
        torch.testing.assert_close(torch.stack(acts, 1), clt.encode(x))
        recon = torch.stack([clt.decode_layer(acts, layer) for layer in range(L)], 1)
        torch.testing.assert_close(recon, clt.decode(clt.encode(x)), atol=1e-6, rtol=1e-5)


def test_parameter_count_follows_architecture():
    def count(arch):
        return sum(p.numel() for p in random_clt(L, D, F, arch).parameters())

    assert count("cross_layer") == L * D * F + L * F + L * (L + 1) // 2 * F * D + L * D
    assert count("per_layer") == L * D * F + L * F + L * F * D + L * D
    assert count("shared") == D * F + F + F * D + L * D


def test_jumprelu_threshold_gets_straight_through_gradient():
    """d/dθ of Σ JumpReLU(h) is -(θ/ε)·#{h within ε/2 of θ}; of Σ step(h) it is -(1/ε)·#{...}."""
    from tl_clt import nonlinearity

    eps, theta = 0.1, torch.tensor([0.5, 1.0], requires_grad=True)
    h = torch.tensor([[0.48, 0.2], [0.53, 0.97], [0.7, 1.2], [0.449, 1.04]], requires_grad=True)
    out = nonlinearity.jumprelu(h, theta, eps)
    torch.testing.assert_close(
        out, torch.tensor([[0.0, 0.0], [0.53, 0.0], [0.7, 1.2], [0.0, 1.04]])
    )
    out.sum().backward()
    near = torch.tensor([2.0, 2.0])  # 0.48, 0.53 near 0.5; 0.97, 1.04 near 1.0 (0.449 is outside)
    torch.testing.assert_close(theta.grad, -(theta.detach() / eps) * near)
    torch.testing.assert_close(h.grad, (h > theta).float().detach())
    theta.grad = None
    nonlinearity.step(h, theta, eps).sum().backward()
    torch.testing.assert_close(theta.grad, -(1 / eps) * near)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_decoder_rows_are_what_one_unit_of_a_feature_decodes_to(architecture):
    """decoder_rows(s, ids, n)[i, j]: what one unit of feature ids[i] at layer s adds to layer
    s + j's reconstruction (decode_layer of a one-hot activation, minus the bias), in model units
    whatever the architecture's storage and the output scales."""
    clt = random_clt(L, D, F, architecture, "relu", seed=8, scales=True)
    ids = torch.tensor([3, 0, 6, 3])
    for s in range(L):
        n = clt.n_targets(s)
        rows = clt.decoder_rows(s, ids, n)
        assert rows.shape == (len(ids), n, D)
        for i, f in enumerate(ids.tolist()):
            acts = [torch.zeros(F) for _ in range(L)]
            acts[s][f] = 1.0
            for j, t in enumerate(clt.writes_to(s)):
                with torch.no_grad():
                    want = clt.decode_layer(acts, t) - clt.b_dec[t]
                torch.testing.assert_close(rows[i, j], want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(clt.decoder_rows(s, ids, 1), rows[:, :1])
        with pytest.raises(InputError, match="write to"):
            clt.decoder_rows(s, ids, n + 1)


@pytest.mark.parametrize("activation", ["relu", "topk", "batchtopk"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_skip_connection_adds_each_layers_input_through_its_matrix(architecture, activation):
    """A skip transcoder's reconstruction is the decoders' plus x[l] @ W_skip[l] (in model
    units), on every decoding path: dense, sparse, ragged (BatchTopK), layer by layer, and after
    folding the scales; saving and loading keeps it."""
    clt = random_clt(L, D, F, architecture, activation, seed=8, scales=True, skip=True)
    x = torch.randn(N, L, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        acts = clt.encode(x)
        skip = torch.zeros(N, L, D, dtype=torch.float64)
        for n in range(N):
            for layer in range(L):
                w = clt.W_skip[layer].double() * float(clt.input_scale[layer])
                skip[n, layer] = x[n, layer].double() @ w / float(clt.output_scale[layer])
        expected = brute_decode(clt, acts) + skip
        assert skip.abs().max() > 0.1
        torch.testing.assert_close(clt.decode(acts, x).double(), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clt(x).double(), expected, atol=1e-5, rtol=1e-5)
        features = clt.encode_features(x, hooks=False).features
        torch.testing.assert_close(features.decode(clt, x).double(), expected, atol=1e-5, rtol=1e-5)
        by_layer = [clt.decode_layer(list(acts.unbind(1)), t, x[:, t]) for t in range(L)]
        torch.testing.assert_close(
            torch.stack(by_layer, 1).double(), expected, atol=1e-5, rtol=1e-5
        )
        with pytest.raises(InputError, match="skip connection"):
            clt.decode(acts)
        if architecture != "shared":
            clt.fold_scales()
            torch.testing.assert_close(clt(x).double(), expected, atol=1e-5, rtol=1e-5)


def test_skip_connection_is_saved_loaded_and_trained(tmp_path):
    from tl_clt import CrossLayerTranscoder
    from tl_clt.errors import ConfigError
    from tl_clt.io import export_circuit_tracer
    from tl_clt.training import losses

    clt = random_clt(L, D, F, "cross_layer", "relu", seed=9, scales=True, skip=True)
    clt.save_pretrained(tmp_path / "skip")
    loaded = CrossLayerTranscoder.from_pretrained(tmp_path / "skip")
    assert loaded.cfg.skip and torch.equal(loaded.W_skip, clt.W_skip)
    with pytest.raises(ConfigError, match="skip connection"):
        export_circuit_tracer(clt, tmp_path / "ct")
    # a fresh skip transcoder starts at zero and its skip connection gets a gradient
    fresh = CrossLayerTranscoder(clt.cfg)
    assert torch.equal(fresh.W_skip, torch.zeros_like(fresh.W_skip))
    x, y = torch.randn(N, L, D), torch.randn(N, L, D)
    recon = losses.forward(fresh, x, fresh.activation).recon
    (grad,) = torch.autograd.grad((recon - y).square().sum(), fresh.W_skip)
    assert grad.abs().max() > 0
