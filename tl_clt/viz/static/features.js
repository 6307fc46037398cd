/* Feature cards and the feature browser of tl_clt. Every string from the data is put in the
   page with textContent or setAttribute (never innerHTML), so tokens render as text. */
"use strict";
var TLFeatures = (function () {
  function data(id) {
    return JSON.parse(document.getElementById(id).textContent);
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "–";
    return Number(x).toPrecision(digits || 3);
  }

  /* Token text as tl_clt.tokenization.visible shows it: in running text (a context) a
     newline is \u21b5, a tab \u21e5, another control character its control picture; a token
     on its own (`single`) shows a space as \u2423 too. */
  function shown(token) {
    return token.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/[\x00-\x1f\x7f]/g, function (c) {
      return String.fromCharCode(c === "\x7f" ? 0x2421 : 0x2400 + c.charCodeAt(0));
    });
  }

  function single(token) {
    return shown(token).replace(/ /g, "\u2423");
  }

  /* One context: tokens shaded by activation (relative to `top`), the peak outlined. */
  function context(tokens, example, top) {
    var line = el("div", { "class": "ctx" }, [el("span", { "class": "val" }, [fmt(example[0])])]);
    var ids = example[1], acts = example[2], peak = example[3];
    ids.forEach(function (t, i) {
      var a = acts[i] || 0, alpha = top > 0 ? Math.max(0, Math.min(1, a / top)) : 0;
      var span = el("span", {
        "class": i === peak ? "tok peak" : "tok",
        "title": fmt(a),
        "style": "background: rgba(255, 110, 0, " + alpha.toFixed(3) + ")",
      }, [shown(tokens[t])]);
      line.appendChild(span);
    });
    return line;
  }

  function effects(tokens, list, cls) {
    return el("div", { "class": "effects " + cls }, list.map(function (e) {
      return el("span", { "class": "eff", "title": fmt(e[1]) + " (" + e[2] + "\u03c3)" }, [single(tokens[e[0]])]);
    }));
  }

  function histogram(counts, edges) {
    var first = counts.findIndex(function (c) { return c > 0; });
    var last = counts.length - 1 - counts.slice().reverse().findIndex(function (c) { return c > 0; });
    var box = el("div", { "class": "hist" });
    if (first < 0) return box;
    var top = Math.max.apply(null, counts);
    for (var i = first; i <= last; i++) {
      var lo = i === 0 ? 0 : Math.pow(10, edges[i - 1]);
      var hi = i < edges.length ? Math.pow(10, edges[i]) : Infinity;
      box.appendChild(el("div", {
        "class": "bar",
        "style": "height: " + (100 * counts[i] / top).toFixed(1) + "%",
        "title": "[" + fmt(lo) + ", " + fmt(hi) + "): " + counts[i],
      }));
    }
    return box;
  }

  /* The card of one feature (label, statistics, histogram, contexts, logit effects). */
  function card(payload, f, histEdges) {
    var tokens = payload.tokens;
    var score = f.score === null ? "no detection score" :
      "detection " + fmt(f.score) + " (chance 0.5" + (f.above ? ", above" : ", not above") + ")";
    var node = el("div", { "class": "card", "data-feature": f.id }, [
      el("h2", {}, ["feature " + f.id]),
      el("p", { "class": "label" }, [f.label || "(no label)"]),
      el("p", { "class": "stats" }, ["density " + fmt(f.density) + " \u00b7 max " + fmt(f.max) + " \u00b7 " + score]),
    ]);
    if (histEdges) node.appendChild(histogram(f.hist, histEdges));
    node.appendChild(el("h3", {}, ["top contexts"]));
    f.examples.forEach(function (ex) { node.appendChild(context(tokens, ex, f.max)); });
    node.appendChild(el("h3", {}, ["promotes"]));
    node.appendChild(effects(tokens, f.promote, "up"));
    node.appendChild(el("h3", {}, ["suppresses"]));
    node.appendChild(effects(tokens, f.suppress, "down"));
    return node;
  }

  function matches(f, query, layer, above) {
    if (layer !== "" && String(f.layer) !== layer) return false;
    if (above && !f.above) return false;
    var q = query.trim().toLowerCase();
    if (!q) return true;
    var m = /^(\d+)\s*:\s*(\d*)$/.exec(q);
    if (m) return String(f.layer) === m[1] && (m[2] === "" || String(f.feature) === m[2]);
    return f.label.toLowerCase().indexOf(q) >= 0;
  }

  function browser(payload) {
    var meta = payload.meta, byId = {};
    payload.features.forEach(function (f) { byId[f.id] = f; });
    document.getElementById("title").textContent = meta.title;
    document.getElementById("subtitle").textContent = meta.n_live + " live of " +
      meta.n_layers * meta.n_features + " features (" + meta.n_layers + " layers), " + meta.n_tokens + " tokens";
    var search = document.getElementById("search"), layer = document.getElementById("layer");
    var above = document.getElementById("above"), results = document.getElementById("results");
    for (var l = 0; l < meta.n_layers; l++) layer.appendChild(el("option", { "value": l }, ["layer " + l]));

    function show(id) {
      var f = byId[id], detail = document.getElementById("detail");
      Array.prototype.forEach.call(results.children, function (li) {
        li.className = li.getAttribute("data-feature") === id ? "selected" : "";
      });
      detail.textContent = "";
      detail.appendChild(f ? card(payload, f, meta.hist_edges) : el("p", { "class": "hint" }, ["no feature " + id]));
    }
    function refresh() {
      results.textContent = "";
      var hits = payload.features.filter(function (f) { return matches(f, search.value, layer.value, above.checked); });
      document.getElementById("count").textContent = hits.length + " features";
      hits.slice(0, 500).forEach(function (f) {
        var item = el("li", { "data-feature": f.id }, [
          el("span", { "class": "fid" }, [f.id]), " ", f.label || "(no label)",
          el("span", { "class": "score" }, [f.score === null ? "" : " " + fmt(f.score, 2)]),
        ]);
        item.addEventListener("click", function () { location.hash = f.id; show(f.id); });
        results.appendChild(item);
      });
    }
    [search, layer, above].forEach(function (c) { c.addEventListener("input", refresh); });
    window.addEventListener("hashchange", function () { show(decodeURIComponent(location.hash.slice(1))); });
    refresh();
    if (location.hash.length > 1) show(decodeURIComponent(location.hash.slice(1)));
  }

  return { data: data, el: el, context: context, card: card, histogram: histogram, browser: browser };
})();
