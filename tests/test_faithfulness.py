"""faithfulness(): the graph's prediction for turning a feature off against the change measured
with every other feature held (exactly minus the edge), in the local replacement model, and in
the model itself (checked against a user hook that zeroes the feature in the spliced model)."""

from __future__ import annotations

import pytest
import torch
from conftest import clt_for
from test_attribution import PROMPT, model64

from tl_clt import NodeKind, ReplacementModel, attribute
from tl_clt import hooks as H
from tl_clt.errors import InputError
from tl_clt.faithfulness import faithfulness


@pytest.fixture(scope="module")
def setup():
    lens = model64("gpt2")
    rm = ReplacementModel(lens, clt_for(lens, activation="jumprelu", dtype="float64", seed=2))
    return rm, attribute(rm, PROMPT, batch_size=64)


def test_direct_effects_are_minus_the_edges_and_the_model_is_measured(setup):
    rm, graph = setup
    result = faithfulness(rm, graph, n_sources=6)
    logits = set(graph.indices(NodeKind.LOGIT))
    assert len({e.source for e in result.edges}) == 6 and {e.target for e in result.edges} <= logits
    for e in result.edges:  # the graph's own definition: exact
        assert e.direct == pytest.approx(e.predicted, rel=1e-6, abs=1e-9)
    # the model itself, measured independently: a user hook zeroes the feature in the spliced
    # model (error term live, nothing frozen)
    tokens = graph.tokens[None]
    first = result.edges[0]
    src, tgt = graph.nodes[first.source], graph.nodes[first.target]

    def zero(x, hook):
        x = x.clone()
        x[0, src.position, src.feature] = 0
        return x

    with torch.no_grad():
        before = rm.run_with_hooks(tokens)[0, -1]
        after = rm.run_with_hooks(tokens, fwd_hooks=[(H.features(src.layer), zero)])[0, -1]
    value = lambda z: float(z[tgt.token_id] - z.mean())  # noqa: E731
    assert first.model == pytest.approx(value(after) - value(before), rel=1e-6, abs=1e-9)
    # the three measurements differ (indirect paths; attention and norms respond)
    assert any(abs(e.local - e.direct) > 1e-6 for e in result.edges)
    assert any(abs(e.model - e.local) > 1e-6 for e in result.edges)
    s = result.summary()
    assert s["direct_sign_agreement"] == 1.0 and s["direct_median_relative_error"] < 1e-6
    assert 0 <= s["model_sign_agreement"] <= 1 and s["model_median_relative_error"] >= 0
    assert "sign agrees" in str(result) and result.to_dict()["n_edges"] == len(result.edges)


def test_feature_targets_and_bad_nodes(setup):
    rm, graph = setup
    features = graph.indices(NodeKind.FEATURE)
    late = [i for i in features if graph.nodes[i].layer == 2][:3]
    result = faithfulness(rm, graph, targets=late, n_sources=4)
    assert result.edges and all(e.target in late for e in result.edges)
    for e in result.edges:
        assert e.direct == pytest.approx(e.predicted, rel=1e-6, abs=1e-9)
    emb = graph.indices(NodeKind.EMBEDDING)[0]
    with pytest.raises(InputError, match="embedding node"):
        faithfulness(rm, graph, targets=[emb])
    with pytest.raises(InputError, match="only features"):
        faithfulness(rm, graph, sources=[emb])
