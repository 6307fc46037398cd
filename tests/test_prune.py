"""Pruning and scores on a hand-built graph whose influences, kept nodes and edges and scores
were worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import pytest
import torch

from tl_clt import prune as P
from tl_clt.errors import InputError

# nodes: 0 t0, 1 t1 (tokens), 2 e (error), 3 f1, 4 f2, 5 f3 (features), 6 L (logit, weight 1)
T0, T1, E, F1, F2, F3, LOGIT = range(7)


def hand_graph():
    A = torch.zeros(7, 7, dtype=torch.float64)
    A[LOGIT, F1], A[LOGIT, F2] = 6.0, -2.0  # normalised: f1 .75, f2 .25
    A[F1, T0], A[F1, F3] = 1.0, 3.0  # t0 .25, f3 .75
    A[F2, T1], A[F2, E] = 1.0, -1.0  # t1 .5, e .5
    A[F3, T0], A[F3, E] = 2.0, 2.0  # t0 .5, e .5
    w = torch.zeros(7, dtype=torch.float64)
    w[LOGIT] = 1.0
    is_token = torch.tensor([1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    is_error = torch.tensor([0, 0, 1, 0, 0, 0, 0], dtype=torch.bool)
    is_feature = torch.tensor([0, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    is_logit = torch.tensor([0, 0, 0, 0, 0, 0, 1], dtype=torch.bool)
    return A, w, is_token, is_error, is_feature, is_logit


def test_influence_by_hand():
    A, w, *_ = hand_graph()
    # wÂ: f1 .75, f2 .25; wÂ²: t0 .1875, f3 .5625, t1 .125, e .125; wÂ³: t0 .28125, e .28125
    expected = torch.tensor([0.46875, 0.125, 0.40625, 0.75, 0.25, 0.5625, 0.0], dtype=torch.float64)
    infl = P.node_influence(A, w)
    torch.testing.assert_close(infl.influence, expected)
    # ranked f1 .75, f3 .5625, t0 .46875, e .40625, f2 .25, t1 .125 of 2.5625
    assert float(infl.cumulative[F1]) == pytest.approx(0.75 / 2.5625)
    assert float(infl.cumulative[E]) == pytest.approx(2.1875 / 2.5625)
    assert float(infl.cumulative[T1]) == pytest.approx(1.0)


def test_prune_by_hand():
    A, w, is_token, is_error, is_feature, is_logit = hand_graph()
    keep = is_token | is_logit
    # nodes: cumulative .293, .512, .695, .854 -> f1, f3, t0, e reach 0.8; f2 goes.
    # edges in the graph without f2: L<-f1 1, f1<-f3 .75, f3<-t0 .375, f3<-e .375, f1<-t0 .25
    # (of 2.75): 0.9 is reached at the second .375, so f1<-t0 goes.
    r = P.prune(A, w, keep, is_feature, node_threshold=0.8, edge_threshold=0.9)
    assert r.node_mask.tolist() == [True, True, True, True, False, True, True]
    expected_edges = {(LOGIT, F1), (F1, F3), (F3, T0), (F3, E)}
    assert set(map(tuple, r.edge_mask.nonzero().tolist())) == expected_edges
    # 0.6 keeps only L<-f1 and f1<-f3: f3 has no input, so f3, then f1, then e go in turn
    r = P.prune(A, w, keep, is_feature, node_threshold=0.8, edge_threshold=0.6)
    assert r.node_mask.tolist() == [True, True, False, False, False, False, True]
    assert not r.edge_mask.any()
    # the defaults keep every edge of the node-pruned graph
    r = P.prune(A, w, keep, is_feature)
    assert r.edge_mask.sum() == 5 and not r.node_mask[F2]
    with pytest.raises(InputError):
        P.prune(A, w, keep, is_feature, node_threshold=1.5)


def test_prune_ranking_only_the_prunable_nodes_by_hand():
    A, w, is_token, is_error, is_feature, is_logit = hand_graph()
    keep = is_token | is_logit
    # every node ranked: f1 .293 < 0.3, so f3 (cumulative .512) sets the cutoff: f1, f3 kept
    r = P.prune(A, w, keep, is_feature, node_threshold=0.3, edge_threshold=1.0)
    assert r.node_mask.tolist() == [True, True, False, True, False, True, True]
    # features and error only (of 1.96875): f1 alone holds .381 >= 0.3, so f3 goes
    r = P.prune(A, w, keep, is_feature, node_threshold=0.3, edge_threshold=1.0,
                rank_always_kept=False)  # fmt: skip
    assert r.node_mask.tolist() == [True, True, False, True, False, False, True]
    assert set(map(tuple, r.edge_mask.nonzero().tolist())) == {(LOGIT, F1), (F1, T0)}


def test_kept_influence_by_hand():
    A, w, is_token, is_error, is_feature, is_logit = hand_graph()
    infl = P.node_influence(A, w).influence
    kept = P.prune(A, w, is_token | is_logit, is_feature).node_mask  # f2 goes
    k = P.kept_influence(infl, w, kept, is_feature, is_token)
    # features f1 .75 + f2 .25 + f3 .5625 = 1.5625; kept f1, f3: 1.3125; dropped f2 .25 of w 1;
    # tokens .59375 of all 2.5625
    assert (k.n_features, k.n_kept) == (3, 2)
    assert k.kept_share == pytest.approx(1.3125 / 1.5625)
    assert k.dropped == pytest.approx(0.25)
    assert k.token_share == pytest.approx(0.59375 / 2.5625)


def test_scores_by_hand():
    A, w, is_token, is_error, is_feature, is_logit = hand_graph()
    full = P.scores(A, w, is_error, is_token)
    # replacement: tokens .59375 / (tokens .59375 + error .40625)
    assert full.replacement == pytest.approx(0.59375)
    # completeness: (t0 .46875 + t1 .125 + e .40625 + f1 .75 + f2 .125 + f3 .28125 + L 1) / 3.5625
    assert full.completeness == pytest.approx(3.15625 / 3.5625)
    r = P.prune(A, w, is_token | is_logit, is_feature, node_threshold=0.8, edge_threshold=0.9)
    pruned = P.scores(A, w, is_error, is_token, r.node_mask, r.edge_mask)
    # kept shares: L<-f1 .75 (.25 lost), f1<-f3 .75 (.25 lost), f3<-t0 .5, f3<-e .5;
    # influence f1 .75, f3 .5625, t0 .28125, e .28125; lost .25*1 + .25*.75 = .4375
    assert pruned.replacement == pytest.approx(0.28125 / (0.28125 + 0.28125 + 0.4375))
    # completeness (L .75 + f1 .5625 + f3 .28125 + t0 .28125 + e .28125) / 2.875
    assert pruned.completeness == pytest.approx(2.15625 / 2.875)
    # the pruned graph as it stands (its own edges, normalised anew): L<-f1 1, f1<-f3 1,
    # f3<-t0 .5, f3<-e .5; influence f1 1, f3 1, t0 .5, e .5 (t1 is kept, without edges)
    sub = P.subgraph(A, r.node_mask, r.edge_mask)
    own = P.scores(sub.adjacency, w[sub.index], is_error[sub.index], is_token[sub.index])
    assert own.replacement == pytest.approx(0.5 / (0.5 + 0.5))
    # completeness (L 1 + f1 1 + f3 .5 + t0 .5 + e .5) / (1 + 1 + 1 + .5 + .5)
    assert own.completeness == pytest.approx(3.5 / 4.0)


def test_scores_of_chosen_features_by_hand():
    """Only f1 chosen: f2 and f3 count as error where they feed a node."""
    A, w, is_token, is_error, is_feature, is_logit = hand_graph()
    keep = ~is_feature
    keep[F1] = True
    s = P.scores(A, w, is_error, is_token, keep)
    # L<-f1 .75 (f2's .25 lost), f1<-t0 .25 (f3's .75 lost); influence f1 .75, t0 .1875, e 0;
    # lost .25 * 1 + .75 * .75 = .8125
    assert s.replacement == pytest.approx(0.1875 / (0.1875 + 0.8125))
    # completeness (L .75 * 1 + f1 .25 * .75 + t0 .1875) / (1 + .75 + .1875)
    assert s.completeness == pytest.approx(1.125 / 1.9375)


def test_subgraph_remembers_original_indices():
    A, w, is_token, is_error, is_feature, is_logit = hand_graph()
    r = P.prune(A, w, is_token | is_logit, is_feature, node_threshold=0.8, edge_threshold=0.9)
    sub = P.subgraph(A, r.node_mask, r.edge_mask)
    assert sub.index.tolist() == [T0, T1, E, F1, F3, LOGIT]
    # f1 <- t0 was pruned; f1 <- f3 kept with its original weight
    assert sub.adjacency[3, 0] == 0 and sub.adjacency[3, 4] == 3.0 and sub.adjacency[5, 3] == 6.0
    assert int((sub.adjacency != 0).sum()) == 4


def test_top_paths_by_hand():
    A, *_ = hand_graph()
    paths = P.top_paths(A, LOGIT, k=3)
    # L<-f1<-f3<-t0 and L<-f1<-f3<-e: .75*.75*.5; then L<-f1<-t0: .75*.25
    assert [p.score for p in paths] == pytest.approx([0.28125, 0.28125, 0.1875])
    assert {paths[0].nodes, paths[1].nodes} == {(T0, F3, F1, LOGIT), (E, F3, F1, LOGIT)}
    assert paths[2].nodes == (T0, F1, LOGIT) and paths[2].weights == (1.0, 6.0)


def test_cutoff_and_cycles():
    scores = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    assert P.cutoff(scores, 0.5) == 3.0  # 4/10 < .5 <= 7/10
    assert P.cutoff(scores, 1.0) == 1.0  # never the zero score
    assert P.cutoff(torch.zeros(3), 0.8) == float("inf")
    cyc = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(InputError, match="cycle"):
        P.node_influence(cyc, torch.tensor([1.0, 0.0]))
