"""Supernodes: feature nodes of an attribution graph that play the same role, grouped
automatically (`group_supernodes`, clustering decoder directions, labels and edge profiles) or
by hand; the grouped graph with summed edges (`GroupedGraph`); and the check of each group by
intervention (`validate_supernodes`). Conventions: docs/graphs.md."""

from tl_clt.supernodes.cluster import Similarity, distances, group_supernodes, resolve
from tl_clt.supernodes.grouped import GroupedGraph, Supernode, linear_effect
from tl_clt.supernodes.validate import SupernodeCheck, Validation, validate_supernodes

__all__ = [
    "GroupedGraph",
    "Similarity",
    "Supernode",
    "SupernodeCheck",
    "Validation",
    "distances",
    "group_supernodes",
    "linear_effect",
    "resolve",
    "validate_supernodes",
]
