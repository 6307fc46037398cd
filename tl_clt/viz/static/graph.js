/* The graph page of tl_clt: an attribution graph in the paper's layout (tokens along the
   bottom, layers upward, logits on top), supernodes as boxes, a detail panel, and node / edge
   thresholds that re-prune in the page (graph_prune.js). Every string from the data reaches
   the page through textContent or setAttribute, never innerHTML. */
"use strict";
var TLGraph = (function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var EMB = 0, FEAT = 1, ERR = 2, LOGIT = 3;
  var GAP = 15, PAD = 10, ROW = 15, BAND_PAD = 12, MIN_COL = 56, MAX_COL = 300, LEFT = 56;

  function data(id) { return JSON.parse(document.getElementById(id).textContent); }
  var el = TLFeatures.el;

  function svg(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }
  function fmt(x, d) { return x === null || x === undefined ? "\u2013" : Number(x).toPrecision(d || 3); }
  function shown(t) { return String(t).replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5"); }

  function model(d) {
    var N = d.nodes, n = N.id.length;
    var g = {
      n: n, m: d.edges.w.length, s: d.edges.s, t: d.edges.t, w: d.edges.w,
      kind: N.kind, infl: N.infl, wt: N.w, totalInfluence: d.meta.total_influence,
      rankAlways: d.meta.rank_always_kept !== false,
      always: N.kind.map(function (k) { return k === EMB || k === LOGIT ? 1 : 0; }),
      group: new Int32Array(n).fill(-1), byId: {},
    };
    d.supernodes.forEach(function (s, k) { s[1].forEach(function (i) { g.group[i] = k; }); });
    N.id.forEach(function (id, i) { g.byId[id] = i; });
    return g;
  }

  /* ------------------------------------------------------------ layout */
  function band(d, i) {
    var k = d.nodes.kind[i];
    return k === EMB ? 0 : k === LOGIT ? d.meta.n_layers + 1 : d.nodes.layer[i] + 1;
  }
  /* Units to draw: visible nodes, or in collapsed mode one unit per supernode. */
  function units(d, g, view, collapsed) {
    var list = [], unitOf = new Int32Array(g.n).fill(-1), seen = {};
    for (var i = 0; i < g.n; i++) {
      if (!view.nodes[i]) continue;
      var s = g.group[i];
      if (collapsed && s >= 0) {
        if (!(s in seen)) { seen[s] = list.length; list.push({ sn: s, members: [], band: 0, pos: d.nodes.pos[i] }); }
        var u = list[seen[s]]; u.members.push(i); u.band += band(d, i); unitOf[i] = seen[s];
      } else {
        unitOf[i] = list.length; list.push({ node: i, band: band(d, i), pos: d.nodes.pos[i] });
      }
    }
    list.forEach(function (u) { if (u.members) u.band = Math.round(u.band / u.members.length); });
    return { list: list, unitOf: unitOf };
  }
  /* Slots of GAP pixels: one per node, several for a collapsed supernode (it shows its name). */
  function slots(d, u) { return u.node !== undefined ? 1 : Math.min(8, Math.max(2, Math.ceil((Math.min(d.supernodes[u.sn][0].length, 16) * 6.2 + 14) / GAP))); }
  function rowsOf(d, U, cell, perRow) {
    var rows = [[]], used = 0;
    cell.forEach(function (k) {
      var n = slots(d, U.list[k]);
      if (used + n > perRow && rows[rows.length - 1].length) { rows.push([]); used = 0; }
      rows[rows.length - 1].push(k); used += n;
    });
    return rows;
  }
  function layout(d, g, U) {
    var P = d.tokens.length, B = d.meta.n_layers + 2, cells = {};
    U.list.forEach(function (u, k) { (cells[u.pos + "," + u.band] = cells[u.pos + "," + u.band] || []).push(k); });
    var key = function (k) {  // errors last, then supernode members together, then influence
      var u = U.list[k];
      if (u.node === undefined) return [0, -u.sn, 0];
      return [d.nodes.kind[u.node] === ERR ? 1 : 0, -g.group[u.node], -d.nodes.infl[u.node]];
    };
    Object.keys(cells).forEach(function (c) {
      cells[c].sort(function (a, b) { var p = key(a), q = key(b); return p[0] - q[0] || p[1] - q[1] || p[2] - q[2]; });
    });
    var widths = [], x0 = [], x = LEFT;
    for (var p = 0; p < P; p++) {
      var most = 0;
      for (var b = 0; b < B; b++) {
        most = Math.max(most, (cells[p + "," + b] || []).reduce(function (n, k) { return n + slots(d, U.list[k]); }, 0));
      }
      widths.push(Math.max(MIN_COL, Math.min(MAX_COL, most * GAP + 2 * PAD)));
      x0.push(x); x += widths[p];
    }
    var perRow = widths.map(function (w) { return Math.max(1, Math.floor((w - 2 * PAD) / GAP)); });
    var rows = {}, heights = [];
    Object.keys(cells).forEach(function (c) { rows[c] = rowsOf(d, U, cells[c], perRow[+c.split(",")[0]]); });
    for (b = 0; b < B; b++) {
      var n = 1;
      for (p = 0; p < P; p++) n = Math.max(n, (rows[p + "," + b] || [[]]).length);
      heights.push(n * ROW + 2 * BAND_PAD);
    }
    var y0 = [], y = 24;
    for (b = B - 1; b >= 0; b--) { y0[b] = y; y += heights[b]; }
    Object.keys(rows).forEach(function (c) {
      var pb = c.split(","), p = +pb[0], b = +pb[1];
      rows[c].forEach(function (row, r) {
        var total = row.reduce(function (n, k) { return n + slots(d, U.list[k]); }, 0);
        var at = x0[p] + (widths[p] - total * GAP) / 2;
        row.forEach(function (k) {
          var u = U.list[k], n = slots(d, u);
          u.x = at + n * GAP / 2; u.w = n * GAP - 3; at += n * GAP;
          u.y = y0[b] + heights[b] - BAND_PAD - ROW / 2 - r * ROW;
        });
      });
    });
    return { width: x + 20, height: y + 110, x0: x0, widths: widths, y0: y0, heights: heights };
  }

  /* ------------------------------------------------------------ drawing */
  function nodeName(d, i) {
    var N = d.nodes, k = N.kind[i], tok = JSON.stringify(N.token[i]);
    if (k === FEAT) return "feature " + N.layer[i] + ":" + N.feature[i] + " @" + N.pos[i];
    if (k === ERR) return "error L" + N.layer[i] + " @" + N.pos[i];
    if (k === EMB) return "token " + tok + " @" + N.pos[i];
    return "logit " + tok;
  }
  function labelOf(d, i) {
    var N = d.nodes;
    if (N.kind[i] === FEAT) return d.labels[N.layer[i] + ":" + N.feature[i]] || "";
    if (N.kind[i] === LOGIT) return "output " + JSON.stringify(N.token[i]) + (N.prob[i] === null ? "" : " (p=" + fmt(N.prob[i]) + ")");
    if (N.kind[i] === EMB) return "input token " + JSON.stringify(N.token[i]);
    return "reconstruction error of layer " + N.layer[i];
  }
  function drawNode(d, u) {
    var i = u.node, k = d.nodes.kind[i], shape;
    var attrs = { "class": "node k" + k, "data-node": d.nodes.id[i], "data-index": i };
    if (k === FEAT) shape = svg("circle", Object.assign(attrs, { cx: u.x, cy: u.y, r: 5 }));
    else if (k === ERR) shape = svg("rect", Object.assign(attrs, { x: u.x - 4.5, y: u.y - 4.5, width: 9, height: 9 }));
    else shape = svg("rect", Object.assign(attrs, { x: u.x - 6, y: u.y - 5, width: 12, height: 10, rx: 2 }));
    var title = svg("title");
    title.textContent = nodeName(d, i) + (labelOf(d, i) ? " \u2014 " + labelOf(d, i) : "");
    shape.appendChild(title);
    return shape;
  }
  function drawAxes(d, L, layer) {
    var B = d.meta.n_layers + 2;
    for (var b = 0; b < B; b++) {
      var t = svg("text", { x: 6, y: L.y0[b] + L.heights[b] / 2 + 4, "class": "axis" });
      t.textContent = b === 0 ? "emb" : b === B - 1 ? "logits" : "L" + (b - 1);
      layer.appendChild(t);
      if (b > 0) layer.appendChild(svg("line", { x1: LEFT, x2: L.width - 20, y1: L.y0[b] + L.heights[b], y2: L.y0[b] + L.heights[b], "class": "band" }));
    }
    d.tokens.forEach(function (tok, p) {
      var x = L.x0[p] + L.widths[p] / 2, y = L.y0[0] + L.heights[0] + 14;
      var t = svg("text", { x: x, y: y, "class": "token", transform: "rotate(-25 " + x + " " + y + ")" });
      var full = shown(tok), title = svg("title");
      t.textContent = full.length > 18 ? full.slice(0, 17) + "\u2026" : full;
      title.textContent = full;
      t.appendChild(title);
      layer.appendChild(t);
    });
  }
  function drawEdges(d, g, U, view, layer) {
    var sums = {}, agg = {}, e;
    for (e = 0; e < g.m; e++) {
      if (!view.edges[e]) continue;
      var a = U.unitOf[g.s[e]], b = U.unitOf[g.t[e]];
      if (a < 0 || b < 0 || a === b) continue;
      var key = a + ">" + b;
      agg[key] = (agg[key] || 0) + g.w[e];
    }
    Object.keys(agg).forEach(function (key) { var b = key.split(">")[1]; sums[b] = (sums[b] || 0) + Math.abs(agg[key]); });
    var keys = Object.keys(agg).sort(function (p, q) { return Math.abs(agg[p]) - Math.abs(agg[q]); });
    keys.forEach(function (key) {
      var ab = key.split(">"), A = U.list[+ab[0]], B = U.list[+ab[1]], share = Math.abs(agg[key]) / Math.max(sums[ab[1]], 1e-30);
      layer.appendChild(svg("line", {
        x1: A.x, y1: A.y, x2: B.x, y2: B.y, "data-s": ab[0], "data-t": ab[1],
        "class": "edge " + (agg[key] >= 0 ? "pos" : "neg"), "stroke-width": (0.4 + 3.5 * Math.sqrt(share)).toFixed(2),
      }));
    });
    return keys.length;
  }
  function drawSupernodes(d, g, U, collapsed, layer) {
    var boxes = {};
    if (collapsed) {
      U.list.forEach(function (u) {
        if (u.sn === undefined) return;
        var name = d.supernodes[u.sn][0];
        var r = svg("rect", { x: u.x - u.w / 2, y: u.y - 6.5, width: u.w, height: 13, rx: 3, "class": "supernode unit", "data-supernode": u.sn });
        var title = svg("title"); title.textContent = name; r.appendChild(title);
        layer.appendChild(r);
        var t = svg("text", { x: u.x, y: u.y + 3.5, "class": "sn-label unit" });
        t.textContent = name.length > 16 ? name.slice(0, 15) + "\u2026" : name;
        layer.appendChild(t);
      });
      return;
    }
    U.list.forEach(function (u) {
      if (u.node === undefined) return;
      var k = g.group[u.node];
      if (k < 0) return;
      var b = boxes[k] || { x1: Infinity, y1: Infinity, x2: -Infinity, y2: -Infinity };
      b.x1 = Math.min(b.x1, u.x); b.y1 = Math.min(b.y1, u.y); b.x2 = Math.max(b.x2, u.x); b.y2 = Math.max(b.y2, u.y);
      boxes[k] = b;
    });
    var placed = [];  // [x1, x2, y] of labels drawn so far: a label that would overlap one moves up
    Object.keys(boxes).forEach(function (k) {
      var b = boxes[k];
      if (!b) return;
      var r = svg("rect", { x: b.x1 - 8, y: b.y1 - 8, width: b.x2 - b.x1 + 16, height: b.y2 - b.y1 + 16, rx: 4, "class": "supernode", "data-supernode": k });
      var title = svg("title"); title.textContent = d.supernodes[k][0]; r.appendChild(title);
      layer.appendChild(r);
      // the label fits its box (about 6 px a character): neighbouring boxes' labels never overlap
      var name = d.supernodes[k][0], room = Math.max(4, Math.min(24, Math.floor((b.x2 - b.x1 + 16) / 6.2)));
      var shown = name.length > room ? name.slice(0, room - 1) + "\u2026" : name;
      var lx1 = b.x1 - 7, lx2 = lx1 + shown.length * 6.2, ly = b.y1 - 11;
      while (placed.some(function (p) { return p[2] === ly && p[0] < lx2 && lx1 < p[1]; })) ly -= 11;
      placed.push([lx1, lx2, ly]);
      var t = svg("text", { x: lx1, y: ly, "class": "sn-label" });
      t.textContent = shown;
      var tt = svg("title"); tt.textContent = name; t.appendChild(tt);
      layer.appendChild(t);
    });
  }

  /* ------------------------------------------------------------ detail panel */
  function edgeList(d, g, i, incoming) {
    var rows = [];
    for (var e = 0; e < g.m; e++) {
      if ((incoming ? g.t[e] : g.s[e]) === i) rows.push([incoming ? g.s[e] : g.t[e], g.w[e]]);
    }
    rows.sort(function (a, b) { return Math.abs(b[1]) - Math.abs(a[1]); });
    var list = el("ol", { "class": "edges" });
    rows.slice(0, 6).forEach(function (r) {
      var item = el("li", { "class": r[1] >= 0 ? "pos" : "neg", "data-goto": d.nodes.id[r[0]] }, [
        el("span", { "class": "w" }, [(r[1] >= 0 ? "+" : "") + fmt(r[1])]), " ", nodeName(d, r[0]),
        el("span", { "class": "lab" }, [labelOf(d, r[0]) ? " \u2014 " + labelOf(d, r[0]) : ""]),
      ]);
      list.appendChild(item);
    });
    if (!rows.length) list.appendChild(el("li", {}, ["none"]));
    return list;
  }
  function cardFor(d, i) {
    var id = d.nodes.layer[i] + ":" + d.nodes.feature[i], cards = d.cards.features;
    for (var k = 0; k < cards.length; k++) if (cards[k].id === id) return TLFeatures.card(d.cards, cards[k], d.meta.hist_edges);
    return null;
  }
  function showNode(d, g, i, box) {
    var N = d.nodes, s = g.group[i];
    box.textContent = "";
    box.setAttribute("data-node", N.id[i]);
    box.appendChild(el("h2", {}, [nodeName(d, i)]));
    box.appendChild(el("p", { "class": "label" }, [labelOf(d, i) || "(no label)"]));
    box.appendChild(el("p", { "class": "stats" }, [
      "position " + N.pos[i] + " (" + JSON.stringify(d.tokens[N.pos[i]] === undefined ? "" : d.tokens[N.pos[i]]) + ")" +
      " \u00b7 activation " + fmt(N.act[i]) + " \u00b7 influence " + fmt(N.infl[i]),
    ]));
    if (s >= 0) box.appendChild(el("p", { "class": "member" }, ["in supernode: ", el("strong", {}, [d.supernodes[s][0]])]));
    box.appendChild(el("h3", {}, ["strongest inputs"]));
    box.appendChild(edgeList(d, g, i, true));
    box.appendChild(el("h3", {}, ["strongest outputs"]));
    box.appendChild(edgeList(d, g, i, false));
    if (N.kind[i] === FEAT) {
      var card = cardFor(d, i);
      if (card) box.appendChild(card);
    }
  }
  function showSupernode(d, g, k, box) {
    var s = d.supernodes[k], list = el("ol", { "class": "edges" });
    box.textContent = "";
    box.setAttribute("data-node", "supernode:" + k);
    box.appendChild(el("h2", {}, ["supernode"]));
    box.appendChild(el("p", { "class": "label" }, [s[0]]));
    var act = 0;
    s[1].forEach(function (i) {
      act += d.nodes.act[i] || 0;
      list.appendChild(el("li", { "data-goto": d.nodes.id[i] }, [nodeName(d, i), el("span", { "class": "lab" }, [labelOf(d, i) ? " \u2014 " + labelOf(d, i) : ""])]));
    });
    box.appendChild(el("p", { "class": "stats" }, [s[1].length + " members \u00b7 summed activation " + fmt(act)]));
    box.appendChild(list);
  }

  /* ------------------------------------------------------------ the page */
  function page(d) {
    var g = model(d), state = { view: null, selected: null, collapsed: false };
    var M = d.meta, root = document.getElementById("graph"), box = document.getElementById("detail");
    document.getElementById("title").textContent = M.title;
    document.getElementById("subtitle").textContent = M.model + " \u00b7 " + M.transcoder + " \u00b7 " + M.n_graph_nodes +
      " nodes in the full graph \u00b7 default pruning: replacement " + fmt(M.replacement) + ", completeness " + fmt(M.completeness) +
      " (strict, counting what pruning dropped as error: " + fmt(M.replacement_strict) + ", " + fmt(M.completeness_strict) + ")" +
      (M.truncated ? " \u00b7 the page holds the strongest edges only: re-pruning is approximate" : "");
    document.getElementById("legend").textContent = "edges: blue excites, red inhibits, width = share of the target's input \u00b7 " +
      "circles: features, squares: errors, bars: tokens (bottom) and logits (top) \u00b7 dashed boxes: supernodes";
    var nt = document.getElementById("nt"), et = document.getElementById("et"), grp = document.getElementById("group");
    nt.min = 0.05; nt.max = Math.max(M.max_node_threshold, M.node_threshold); nt.step = 0.001; nt.value = M.node_threshold;
    et.min = 0.5; et.max = 1; et.step = 0.001; et.value = M.edge_threshold;
    var initial = { nodes: Uint8Array.from(d.nodes.keep), edges: Uint8Array.from(d.edges.keep) };

    function draw() {
      var U = units(d, g, state.view, state.collapsed), L = layout(d, g, U);
      root.textContent = "";
      root.setAttribute("width", L.width); root.setAttribute("height", L.height);
      root.setAttribute("viewBox", "0 0 " + L.width + " " + L.height);
      var axes = svg("g", { "class": "axes" }), edges = svg("g", { "class": "edges" }), boxes = svg("g", { "class": "boxes" }), nodes = svg("g", { "class": "nodes" });
      [axes, boxes, edges, nodes].forEach(function (x) { root.appendChild(x); });
      drawAxes(d, L, axes);
      var nEdges = drawEdges(d, g, U, state.view, edges);
      drawSupernodes(d, g, U, state.collapsed, state.collapsed ? nodes : boxes);
      U.list.forEach(function (u) { if (u.node !== undefined) nodes.appendChild(drawNode(d, u)); });
      var shown = U.list.filter(function (u) { return u.node !== undefined; }).length;
      var sc = TLPrune.scores(g, state.view), approx = M.truncated ? "\u2248" : "";
      document.getElementById("counts").textContent = shown + " nodes, " + nEdges + " edges" +
        (state.collapsed ? ", " + (U.list.length - shown) + " supernodes collapsed" : "") +
        " \u00b7 this pruning: replacement " + approx + fmt(sc.replacement) + ", completeness " + approx + fmt(sc.completeness);
      document.getElementById("nt-value").textContent = Number(nt.value).toFixed(3);
      document.getElementById("et-value").textContent = Number(et.value).toFixed(3);
      state.units = U;
      if (state.selected !== null) highlight(state.selected);
    }
    function highlight(i) {
      var U = state.units, u = i === null ? -1 : U.unitOf[i];
      Array.prototype.forEach.call(root.querySelectorAll("line.edge"), function (line) {
        var on = u >= 0 && (+line.getAttribute("data-s") === u || +line.getAttribute("data-t") === u);
        line.setAttribute("class", line.getAttribute("class").replace(/ (hi|lo)$/, "") + (u < 0 ? "" : on ? " hi" : " lo"));
      });
      Array.prototype.forEach.call(root.querySelectorAll(".node"), function (n) {
        n.classList.toggle("selected", +n.getAttribute("data-index") === i);
      });
    }
    function repruned() {
      state.view = TLPrune.prune(g, +nt.value, +et.value);
      draw();
    }
    function select(i) {
      state.selected = i; showNode(d, g, i, box); highlight(i);
    }
    root.addEventListener("mouseover", function (ev) {
      var t = ev.target;
      if (t.getAttribute && t.hasAttribute("data-index") && state.selected === null) { showNode(d, g, +t.getAttribute("data-index"), box); highlight(+t.getAttribute("data-index")); }
    });
    root.addEventListener("click", function (ev) {
      var t = ev.target;
      if (t.getAttribute && t.hasAttribute("data-index")) select(+t.getAttribute("data-index"));
      else if (t.getAttribute && t.hasAttribute("data-supernode")) { state.selected = null; highlight(null); showSupernode(d, g, +t.getAttribute("data-supernode"), box); }
      else { state.selected = null; highlight(null); }
    });
    box.addEventListener("click", function (ev) {
      var t = ev.target.closest ? ev.target.closest("[data-goto]") : null;
      if (t && g.byId[t.getAttribute("data-goto")] !== undefined) select(g.byId[t.getAttribute("data-goto")]);
    });
    nt.addEventListener("input", repruned);
    et.addEventListener("input", repruned);
    grp.addEventListener("change", function () { state.collapsed = grp.checked; draw(); });
    document.getElementById("reset").addEventListener("click", function () {
      nt.value = M.node_threshold; et.value = M.edge_threshold; state.view = initial; draw();
    });

    var args = new URLSearchParams(location.hash.slice(1));
    if (args.has("nt") || args.has("et")) {
      if (args.has("nt")) nt.value = args.get("nt");
      if (args.has("et")) et.value = args.get("et");
      state.view = TLPrune.prune(g, +nt.value, +et.value);
    } else state.view = initial;
    if (args.get("group") === "1") { grp.checked = true; state.collapsed = true; }
    draw();
    if (args.has("node") && g.byId[args.get("node")] !== undefined) select(g.byId[args.get("node")]);
    document.body.offsetHeight;  // lay the page out before the time is read
    document.body.setAttribute("data-render-ms", performance.now().toFixed(1));
  }

  return { data: data, page: page, model: model, prune: TLPrune.prune, scores: TLPrune.scores };
})();
