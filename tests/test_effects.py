"""Feature-to-feature effects: ranked, downstream only, and linear in the local replacement
model with other features frozen."""

from __future__ import annotations

import pytest
from conftest import clt_for, get_model

from tl_clt import ReplacementModel
from tl_clt.effects import feature_effects
from tl_clt.interventions import Intervention

PROMPT = "w3 w1 w4 w1 w5 w9 w2"


@pytest.fixture(scope="module")
def rm():
    lens = get_model("gpt2", n_layers=3)
    return ReplacementModel(lens, clt_for(lens, activation="relu"))


def test_direct_effects_are_linear_in_the_change(rm):
    run = rm.capture(rm.lens.tokens(PROMPT))
    f = int(run.features[0][0, 3].argmax())

    def effects(scale):
        src = Intervention(0, f, position=3, scale=scale)
        return feature_effects(rm, PROMPT, src, mode="constrained", freeze_features=True)

    double, triple = effects(2.0), effects(3.0)  # Δa = a and 2a
    assert len(double.features) > 0
    by_key = {(e.layer, e.position, e.feature): e for e in triple.features}
    for e in double.features:
        assert e.layer >= 1 and e.position >= 3  # downstream only (causal, later layers)
        other = by_key[(e.layer, e.position, e.feature)]
        assert abs(other.delta_pre - 2 * e.delta_pre) <= 1e-4 * (1 + abs(other.delta_pre))
    deltas = [abs(e.delta_pre) for e in double.features]
    assert deltas == sorted(deltas, reverse=True)
    assert len(double.logits) == 10 and any(abs(e.delta) > 0 for e in double.logits)


def test_named_logit_targets(rm):
    run = rm.capture(rm.lens.tokens(PROMPT))
    f = int(run.features[1][0, -1].argmax())
    fx = feature_effects(
        rm, PROMPT, Intervention(1, f, scale=0.0), mode="unconstrained", targets=["w7", "w8"]
    )
    assert {e.token for e in fx.logits} == {"w7", "w8"}
    assert all(e.layer >= 1 for e in fx.features)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("architecture", ["cross_layer", "per_layer", "shared"])
def test_constrained_effect_equals_graph_edge_times_change(family, architecture):
    """A single feature's change in the constrained model moves each later feature's
    pre-activation (and each target logit) by exactly its graph edge × the relative change."""
    from tl_clt import attribute
    from tl_clt.effects import compare_with_graph
    from tl_clt.graph import NodeKind

    lens = get_model(family, n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens, architecture=architecture, activation="jumprelu"))
    graph = attribute(rm, PROMPT)
    src = graph.find(
        NodeKind.FEATURE,
        layer=0,
        position=3,
        feature=int(rm.capture(lens.tokens(PROMPT)).features[0][0, 3].argmax()),
    )
    node = graph.nodes[src]
    rows = compare_with_graph(rm, graph, Intervention(0, node.feature, position=3, scale=-2.0))
    assert len(rows) > 10
    scale = max(abs(r.measured_direct) for r in rows)
    assert scale > 1e-3
    for r in rows:
        n = graph.nodes[r.node]
        edge = float(graph.adjacency[r.node, src]) * (-2.0 - 1.0)  # the edge × the relative change
        assert abs(r.predicted_direct - edge) <= 1e-6 * (1 + abs(edge))
        assert abs(r.measured_direct - edge) <= 1e-4 * scale, (n, r)


def test_total_effects_match_the_linearised_graph_for_small_changes():
    from tl_clt import attribute
    from tl_clt.effects import compare_with_graph

    lens = get_model("gpt2", n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens, activation="relu"))
    graph = attribute(rm, PROMPT)
    f = int(rm.capture(lens.tokens(PROMPT)).features[0][0, 3].argmax())
    rows = compare_with_graph(rm, graph, Intervention(0, f, position=3, scale=1.001))
    scale = max(abs(r.measured_total) for r in rows)
    assert max(abs(r.measured_total - r.predicted_total) for r in rows) <= 1e-3 * scale
    # indirect paths matter: total differs from direct somewhere
    assert max(abs(r.measured_total - r.measured_direct) for r in rows) > 1e-2 * scale
