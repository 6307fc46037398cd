"""The activation objects (`tl_clt.nonlinearity`): each kind's dense form (one layer, as hook
points see it) and sparse form (every layer of a batch at once) against the brute-force loops
of test_clt, and training's forward against the transcoder's own encode and decode."""

from __future__ import annotations

import pytest
import torch
from conftest import ACTIVATIONS, ARCHITECTURES, random_clt
from test_clt import D, F, L, N, brute_decode, brute_encode

from tl_clt import nonlinearity
from tl_clt.nonlinearity import BatchTopK, JumpReLU, ReLU, TopK
from tl_clt.training import losses


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(N, L, D, generator=torch.Generator().manual_seed(seed))


def _thresholds(clt):
    return [clt.threshold_at(layer) for layer in range(L)]


def test_the_transcoder_holds_the_object_of_its_config():
    want = {"relu": ReLU(), "jumprelu": JumpReLU(), "topk": TopK(3), "batchtopk": BatchTopK(3)}
    for activation, obj in want.items():
        clt = random_clt(L, D, F, "cross_layer", activation)
        assert clt.activation == obj
        assert isinstance(clt.threshold, torch.nn.Parameter) == (activation == "jumprelu")
        assert ("threshold" in dict(clt.named_buffers())) == (activation == "batchtopk")
        assert (clt.threshold is None) == (activation in ("relu", "topk"))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_dense_and_sparse_forms_agree_with_brute_force(architecture, activation, training):
    clt = random_clt(L, D, F, architecture, activation, seed=3, scales=True)
    clt.train(training)
    act = clt.activation
    x = _x()
    with torch.no_grad():
        pre = clt.pre_activations(x)
        want = brute_encode(clt, x, training=training)
        assert (want != 0).any() and (want == 0).any()
        dense = torch.stack(
            [act.dense(pre[:, layer], clt.threshold_at(layer), training) for layer in range(L)], 1
        )
        sparse = act.sparse(pre, _thresholds(clt), training)
        compact = act.compact(dense)
        for acts in (dense, sparse.dense(F), compact.dense(F)):
            torch.testing.assert_close(acts.double(), want, atol=1e-5, rtol=1e-5)
        # sparse decode == dense decode == the brute-force decoder loop
        expected = brute_decode(clt, want)
        for features in (sparse, compact, nonlinearity.DenseFeatures(dense)):
            torch.testing.assert_close(
                features.decode(clt).double(), expected, atol=1e-5, rtol=1e-5
            )
        firing = torch.tensor([[(want[:, s, f] > 0).sum() for f in range(F)] for s in range(L)])
        torch.testing.assert_close(sparse.firing(F), firing.double())
        torch.testing.assert_close(compact.firing(F), firing.double())
    if activation == "batchtopk" and training:  # the statistic its inference threshold tracks
        low = [min(float(v) for v in want[:, s].flatten() if v > 0) for s in range(L)]
        torch.testing.assert_close(
            act.threshold_statistic(sparse), torch.tensor(low, dtype=torch.float64)
        )
    kind = {"relu": "DenseFeatures", "jumprelu": "DenseFeatures", "topk": "SparseFeatures"}
    kind["batchtopk"] = "RaggedFeatures" if training else "SparseFeatures"
    assert type(sparse).__name__ == kind[activation]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_forward_is_the_inference_encode_and_decode(architecture, activation):
    """Training's forward (no hook points) gives the transcoder's own forward, values and
    gradients, on the same weights, and fires no hook."""
    clt = random_clt(L, D, F, architecture, activation, seed=5, scales=True)
    clt.train()
    x = _x(2)
    fired = []
    clt.blocks[0].hook_features.add_hook(lambda a, hook: fired.append(hook.name))
    fwd = losses.forward(clt, x, clt.activation)
    assert fired == []
    recon = clt(x)
    assert fired == ["clt.blocks.0.hook_features"]  # hook points carry their clt. names
    torch.testing.assert_close(fwd.recon, recon, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fwd.features.dense(F), clt.encode(x))
    torch.testing.assert_close(clt.encode(x, hooks=False), clt.encode(x))
    torch.testing.assert_close(fwd.pre, clt.pre_activations(x))
    torch.testing.assert_close(losses.forward(clt, x, dense_decode=True).recon, recon)
    clt.reset_hooks()
    params = [p for p in clt.parameters() if p.requires_grad]
    g_train = torch.autograd.grad(fwd.recon.square().sum(), params, allow_unused=True)
    g_infer = torch.autograd.grad(recon.square().sum(), params, allow_unused=True)
    for a, b in zip(g_train, g_infer):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_training_encodes_jumprelu_with_its_loss_bandwidth():
    """The loss's bandwidth reaches the straight-through threshold gradient (and nothing else)."""
    from tl_clt.training import JumpReLULoss

    clt = random_clt(L, D, F, "cross_layer", "jumprelu", seed=6)
    x = _x(3)
    wide = JumpReLULoss(bandwidth=10.0).nonlinearity(clt)
    assert wide == JumpReLU(10.0)
    fwd = losses.forward(clt, x, wide)
    torch.testing.assert_close(fwd.recon, losses.forward(clt, x).recon)
    (grad,) = torch.autograd.grad(fwd.features.acts.sum(), clt.threshold)
    # d/dθ Σ h·1[h > θ] with a rectangle kernel of width ε: -(θ/ε)·#{|h − θ| < ε/2}
    pre = clt.pre_activations(x).detach()
    near = ((pre - clt.threshold.detach()).abs() < 5.0).sum(0)
    torch.testing.assert_close(grad, -(clt.threshold.detach() / 10.0) * near)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_keeps_any_leading_shape(activation):
    clt = random_clt(L, D, F, "cross_layer", activation, seed=7)
    x = torch.randn(2, N, L, D, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = clt(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out[1], clt(x[1]))
        torch.testing.assert_close(clt.encode(x, hooks=False), clt.encode(x))
