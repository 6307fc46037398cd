"""The viewer's JSON names features as circuit-tracer's graph-file writer does (checked against
node records written by circuit-tracer itself: tests/fixtures/peers), and every feature node of
an exported graph decodes back to its layer and feature."""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import clt_for, get_model

from tl_clt import NodeKind, ReplacementModel, attribute
from tl_clt.viz.neuronpedia import SCHEMA_VERSION, feature_fields, to_neuronpedia

PEER = json.loads(
    (Path(__file__).parent / "fixtures" / "peers" / "circuit_tracer_graph_nodes.json").read_text()
)


def decode(number: int) -> tuple[int, int]:
    """Inverse Cantor pairing, written from its definition: (layer, feature)."""
    w = (math.isqrt(8 * number + 1) - 1) // 2
    feature = number - w * (w + 1) // 2
    return w - feature, feature


def test_feature_fields_equal_circuit_tracers():
    for key, record in PEER["nodes"].items():
        if not key.startswith("feature_"):
            continue
        _, layer, feature, _ = key.split("_")
        mine = feature_fields(int(layer), int(feature))
        assert mine == {k: record[k] for k in mine}, key
        assert decode(record["feature"]) == (int(layer), int(feature))
    assert PEER["metadata"]["schema_version"] == SCHEMA_VERSION


def test_every_exported_feature_decodes_to_its_node():
    lens = get_model("gpt2", n_layers=2)
    rm = ReplacementModel(lens, clt_for(lens, n_features=2000))
    graph = attribute(rm, "w3 w1 w4 w1 w5")
    data = to_neuronpedia(graph, "s")
    assert data["metadata"]["schema_version"] == SCHEMA_VERSION
    features = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    assert features and any(int(n["layer"]) == 1 for n in features)
    for n in features:
        layer, feature, position = map(int, n["node_id"].split("_"))
        assert decode(n["feature"]) == (layer, feature) == (int(n["layer"]), feature)
        assert n["ctx_idx"] == position
    assert {(int(n["layer"]), int(n["node_id"].split("_")[1])) for n in features} <= {
        (x.layer, x.feature) for x in graph.nodes if x.kind is NodeKind.FEATURE
    }
