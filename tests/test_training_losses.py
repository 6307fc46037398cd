"""Training losses against brute-force loops, and sparse decoding (TopK, BatchTopK) against
dense decoding through every decoder, values and gradients."""

from __future__ import annotations

import pytest
import torch
from _training_helpers import small_clt

from tl_clt import nonlinearity
from tl_clt.clt import RaggedFeatures
from tl_clt.training import TrainConfig
from tl_clt.training import losses as L


@pytest.mark.parametrize("architecture", ["cross_layer", "per_layer", "shared"])
@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_sparse_decoding_equals_dense_decoding_with_gradients(architecture, activation):
    clt = small_clt(activation, architecture, n_layers=3)
    with torch.no_grad():
        clt.output_scale.copy_(torch.tensor([0.5, 2.0, 3.0]))
        clt.b_dec.normal_()
    x = torch.randn(7, 3, 8, generator=torch.Generator().manual_seed(1))

    def features(pre):
        if activation == "topk":
            return nonlinearity.TopK(3).sparse(pre, [None] * 3, True), nonlinearity.topk(pre, 3)
        dense = torch.stack([nonlinearity.batchtopk(pre[:, layer], 3) for layer in range(3)], 1)
        return nonlinearity.BatchTopK(3).sparse(pre, [None] * 3, True), dense

    feats, _ = features(clt.pre_activations(x))
    assert isinstance(feats, RaggedFeatures) == (activation == "batchtopk")
    sparse_out = clt.decode_sparse(feats)
    _, dense = features(clt.pre_activations(x))
    dense_out = clt.decode(dense)
    # brute force: y_t = b_t + sum over sources s <= t of a_s @ W_dec[s->t] / output_scale_t
    brute = torch.zeros(7, 3, 8)
    for t in range(3):
        brute[:, t] = clt.b_dec[t]
        for s in clt.reads_from(t):
            brute[:, t] += dense[:, s] @ clt.W_dec_at(s, t)
    torch.testing.assert_close(sparse_out, brute)
    torch.testing.assert_close(dense_out, brute)
    params = [clt.W_enc, clt.b_enc, *clt.W_dec]
    g_sparse = torch.autograd.grad(sparse_out.square().sum(), params)
    g_dense = torch.autograd.grad(dense_out.square().sum(), params)
    for a, b in zip(g_sparse, g_dense):
        torch.testing.assert_close(a, b)


def test_batchtopk_keeps_k_per_token_on_average_per_layer():
    pre = torch.randn(10, 2, 12, generator=torch.Generator().manual_seed(0))
    feats = nonlinearity.BatchTopK(3).sparse(pre, [None] * 2, True)
    for layer in range(2):
        assert feats.indices[layer].numel() == 30
        counts = torch.diff(feats.offsets[layer], append=torch.tensor([30]))
        assert counts.sum() == 30 and counts.min() >= 0
        # every chosen value is at least every unchosen one, token by token
        chosen = torch.zeros(10, 12, dtype=torch.bool)
        rows = torch.repeat_interleave(torch.arange(10), counts)
        chosen[rows, feats.indices[layer]] = True
        assert pre[:, layer][chosen].min() >= pre[:, layer][~chosen].max()


def test_penalties_match_loops():
    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(4, 2, 3, generator=g))
    pre = torch.randn(4, 2, 3, generator=g)
    norms = torch.rand(2, 3, generator=g) + 0.5
    theta = torch.rand(2, 3, generator=g)
    l1 = tanh = preact = 0.0
    for n in range(4):
        for layer in range(2):
            for i in range(3):
                a, w = float(acts[n, layer, i]), float(norms[layer, i])
                l1 += a * w
                tanh += float(torch.tanh(torch.tensor(4.0 * w * a)))
                preact += max(0.0, float(theta[layer, i] - pre[n, layer, i])) * w
    assert L.l1_penalty(acts, norms).item() == pytest.approx(l1 / 4)
    assert L.l1_penalty(acts, None).item() == pytest.approx(float(acts.sum()) / 4)
    assert L.tanh_penalty(acts, norms, 4.0).item() == pytest.approx(tanh / 4)
    assert L.preact_penalty(pre, theta, norms).item() == pytest.approx(preact / 4)


def test_reconstruction_loss_is_per_layer_mse_in_normalised_units():
    g = torch.Generator().manual_seed(0)
    recon, y = torch.randn(5, 2, 4, generator=g), torch.randn(5, 2, 4, generator=g)
    scale = torch.tensor([2.0, 0.5])
    want = [float(((recon[:, i] - y[:, i]) * scale[i]).pow(2).sum()) / (5 * 4) for i in range(2)]
    assert L.reconstruction_loss(recon, y, scale).tolist() == pytest.approx(want)


def test_auxk_uses_only_dead_features():
    clt = small_clt("topk", n_layers=2)
    x = torch.randn(6, 2, 8, generator=torch.Generator().manual_seed(2))
    pre = clt.pre_activations(x)
    residual = torch.randn(6, 2, 8)
    none_dead = torch.zeros(2, 12, dtype=torch.bool)
    assert L.auxk_loss(clt, pre, none_dead, residual, 4).item() == 0.0
    dead = none_dead.clone()
    dead[0, :3] = True  # three dead features at layer 0
    loss = L.auxk_loss(clt, pre, dead, residual, 4)
    assert loss.item() > 0
    grad = torch.autograd.grad(loss, clt.W_dec[0])[0]
    assert grad[3:].abs().sum() == 0 and grad[:3].abs().sum() > 0
    # brute force: the dead features' (ReLU'd) pre-activations decoded without b_dec
    a = torch.zeros(6, 2, 12)
    a[:, 0, :3] = torch.relu(pre[:, 0, :3])
    contrib = clt.decode(a) - clt.b_dec
    want = ((contrib * clt.output_scale[:, None] - residual) ** 2).mean(dim=(0, 2)).sum()
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "batchtopk"])
def test_compute_loss_parts_and_dense_decode_baseline(activation):
    clt = small_clt(activation, n_layers=2)
    if activation == "jumprelu":
        with torch.no_grad():
            clt.threshold.fill_(0.05)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 2, 8, generator=g), torch.randn(16, 2, 8, generator=g)
    cfg = TrainConfig()
    loss = cfg.loss_for(activation)
    preact_coefficient = loss.preact_coefficient if activation == "jumprelu" else 0.0
    aux_coefficient = loss.aux_coefficient if activation in ("topk", "batchtopk") else 0.0
    dead = torch.zeros(2, 12, dtype=torch.bool)
    dead[:, :2] = True
    parts, fwd = L.compute_loss(clt, x, y, sparsity=0.1, config=cfg, dead=dead)
    want_mse = L.reconstruction_loss(fwd.recon, y, clt.output_scale).sum()
    torch.testing.assert_close(parts.mse, want_mse)
    extra = 0.1 * parts.sparsity + preact_coefficient * parts.preact + aux_coefficient * parts.aux
    torch.testing.assert_close(parts.total, parts.mse + extra)
    assert (parts.sparsity > 0) == (activation in ("relu", "jumprelu"))
    assert (parts.aux > 0) == (activation in ("topk", "batchtopk"))
    dense_parts, _ = L.compute_loss(
        clt, x, y, sparsity=0.1, config=cfg, dead=dead, dense_decode=True
    )
    torch.testing.assert_close(dense_parts.total, parts.total)


def test_batchtopk_forward_keeps_every_feature_above_the_threshold():
    """In eval mode a BatchTopK token may have more than k features above the threshold;
    the transcoder's forward must decode all of them (the same as splicing does)."""
    clt = small_clt("batchtopk", n_layers=2)
    with torch.no_grad():
        clt.threshold.fill_(0.0)  # every positive pre-activation is active: often more than k
    clt.eval()
    x = torch.randn(6, 2, 8, generator=torch.Generator().manual_seed(4))
    acts = clt.encode(x)
    assert (acts > 0).sum(-1).max() > clt.cfg.k
    torch.testing.assert_close(clt(x), clt.decode(acts))
