/* Pruning of an attribution graph in the page: the algorithm of tl_clt.prune.prune on a graph
   held as edge lists. g = {n, m, s[], t[], w[] (edges source -> target, weight), kind[] (0 token,
   1 feature, 2 error, 3 logit), infl[] (each node's influence in the full graph), wt[] (output
   weights: logit probabilities), always[] (kept nodes), rankAlways (rank_always_kept: the node
   threshold ranks every node, or only those not always kept), totalInfluence (the full graph's
   influence summed over the ranked nodes)}. `graph` builds g from a whole graph's edges. */
"use strict";
var TLPrune = (function () {
  var TOKEN = 0, FEAT = 1, ERR = 2, LOGIT = 3;
  function rowNormalised(g, alive) {
    var sums = new Float64Array(g.n), ahat = new Float64Array(g.m);
    for (var e = 0; e < g.m; e++) if (alive[e]) sums[g.t[e]] += Math.abs(g.w[e]);
    for (e = 0; e < g.m; e++) if (alive[e]) ahat[e] = Math.abs(g.w[e]) / Math.max(sums[g.t[e]], 1e-30);
    return ahat;
  }
  /* w (Â + Â² + ...): the paths run out because the graph is a DAG. */
  function influence(g, alive, ahat) {
    var cur = new Float64Array(g.n), total = new Float64Array(g.n), e, i;
    for (e = 0; e < g.m; e++) if (alive[e]) cur[g.s[e]] += g.wt[g.t[e]] * ahat[e];
    for (var it = 0; it <= g.n + 1; it++) {
      var any = false;
      for (i = 0; i < g.n; i++) { total[i] += cur[i]; if (cur[i] !== 0) any = true; }
      if (!any) break;
      var next = new Float64Array(g.n);
      for (e = 0; e < g.m; e++) if (alive[e]) next[g.s[e]] += cur[g.t[e]] * ahat[e];
      cur = next;
    }
    return total;
  }
  /* The smallest score keeping `fraction` of `total` (default: the scores' sum). */
  function cutoff(scores, fraction, total) {
    var v = Array.prototype.slice.call(scores).filter(function (x) { return x > 0; });
    if (!v.length) return Infinity;
    v.sort(function (a, b) { return b - a; });
    if (total === undefined) total = v.reduce(function (a, b) { return a + b; }, 0);
    var cum = 0;
    for (var k = 0; k < v.length; k++) { cum += v[k]; if (cum / total >= fraction) return v[k]; }
    return v[v.length - 1];
  }
  function ranked(g) {
    if (g.rankAlways !== false) return g.infl;
    return Array.prototype.filter.call(g.infl, function (x, i) { return !g.always[i]; });
  }
  function prune(g, nt, et) {
    var i, e, keepNode = new Uint8Array(g.n), alive = new Uint8Array(g.m);
    var c = cutoff(ranked(g), nt, g.totalInfluence);
    for (i = 0; i < g.n; i++) keepNode[i] = g.always[i] || (g.infl[i] >= c && g.infl[i] > 0) ? 1 : 0;
    for (e = 0; e < g.m; e++) alive[e] = keepNode[g.s[e]] && keepNode[g.t[e]] ? 1 : 0;
    var ahat = rowNormalised(g, alive), infl = influence(g, alive, ahat);
    var score = new Float64Array(g.m);
    for (e = 0; e < g.m; e++) if (alive[e]) score[e] = ahat[e] * (infl[g.t[e]] + g.wt[g.t[e]]);
    var ce = cutoff(score, et), keepEdge = new Uint8Array(g.m);
    for (e = 0; e < g.m; e++) keepEdge[e] = alive[e] && score[e] >= ce && score[e] > 0 ? 1 : 0;
    for (;;) {
      var hasIn = new Uint8Array(g.n), hasOut = new Uint8Array(g.n), changed = false;
      for (e = 0; e < g.m; e++) if (keepEdge[e]) { hasOut[g.s[e]] = 1; hasIn[g.t[e]] = 1; }
      for (i = 0; i < g.n; i++) {
        var k = keepNode[i] && (g.always[i] || hasOut[i]) && (g.kind[i] !== FEAT || hasIn[i]) ? 1 : 0;
        if (k !== keepNode[i]) { keepNode[i] = k; changed = true; }
      }
      for (e = 0; e < g.m; e++) keepEdge[e] = keepEdge[e] && keepNode[g.s[e]] && keepNode[g.t[e]] ? 1 : 0;
      if (!changed) break;
    }
    return { nodes: keepNode, edges: keepEdge };
  }

  /* Replacement and completeness scores of the pruned graph `view` as it stands (its own edges,
     normalised anew): tl_clt.prune.scores on the pruned adjacency. */
  function scores(g, view) {
    var ahat = rowNormalised(g, view.edges), infl = influence(g, view.edges, ahat);
    var fromErr = new Float64Array(g.n), tokens = 0, errors = 0, num = 0, den = 0, e, i;
    for (e = 0; e < g.m; e++) if (view.edges[e] && g.kind[g.s[e]] === ERR) fromErr[g.t[e]] += ahat[e];
    for (i = 0; i < g.n; i++) {
      if (!view.nodes[i]) continue;
      if (g.kind[i] === TOKEN) tokens += infl[i];
      if (g.kind[i] === ERR) errors += infl[i];
      num += (1 - fromErr[i]) * (infl[i] + g.wt[i]);
      den += infl[i] + g.wt[i];
    }
    return { replacement: tokens / Math.max(tokens + errors, 1e-30), completeness: num / Math.max(den, 1e-30) };
  }

  /* g for a whole graph given as edge lists (kind[], wt[] per node; s[], t[], w[] per edge):
     each node's influence computed here, tokens and logits always kept. */
  function graph(kind, wt, s, t, w, rankAlways) {
    var n = kind.length, m = w.length, all = new Uint8Array(m).fill(1);
    var g = { n: n, m: m, s: s, t: t, w: w, kind: kind, wt: wt, rankAlways: rankAlways !== false,
              always: kind.map(function (k) { return k === TOKEN || k === LOGIT ? 1 : 0; }) };
    g.infl = influence(g, all, rowNormalised(g, all));
    g.totalInfluence = ranked(g).reduce(function (a, b) { return a + b; }, 0);
    return g;
  }

  return { prune: prune, scores: scores, cutoff: cutoff, influence: influence, rowNormalised: rowNormalised, graph: graph };
})();
