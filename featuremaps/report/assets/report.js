/* featuremaps report viewer: reads window.FEATUREMAPS_REPORT (data.js), draws channel grids from
   PNG sprite sheets (one per image and tap), paints tiles lazily as they scroll into view.

   Every string in the manifest may come from a hostile file name, model file or store. It reaches
   the page only through put() / textContent (never innerHTML, never markup built from strings), and
   shown() first writes invisible and reordering characters as escapes. File paths (sprites, value
   sheets, images) are made by the writer from indices and checked by asset() before use. */
(function () {
  "use strict";
  var R = window.FEATUREMAPS_REPORT;
  var $ = function (id) { return document.getElementById(id); };
  var state = { a: 0, b: R.images.length > 1 ? 1 : 0, tap: 0, compare: false, sort: "energy", size: 64,
                pinned: null };
  var observer = null;
  var values = {};   // value-sheet key -> {pending: [callbacks]} or {data: ImageData}

  // Value sheets arrive as scripts calling FM_VALUES(key, dataURI): a file:// page may read the
  // pixels of a data: image (never of a local PNG file), so the value under the cursor is exact
  // to 1/255 of the channel's range.
  window.FM_VALUES = function (key, uri) {
    var im = new Image();
    im.onload = function () {
      var c = document.createElement("canvas"); c.width = im.width; c.height = im.height;
      var ctx = c.getContext("2d"); ctx.drawImage(im, 0, 0);
      var slot = values[key], waiting = slot.pending;
      values[key] = { data: ctx.getImageData(0, 0, c.width, c.height) };
      waiting.forEach(function (cb) { cb(values[key].data); });
    };
    im.src = uri;
  };
  function withValues(img, cb) {
    var key = asset(entry(img).values);
    if (!key) { return false; }
    var slot = values[key];
    if (slot && slot.data) { cb(slot.data); return true; }
    if (slot) { slot.pending.push(cb); return true; }
    values[key] = { pending: [cb] };
    var s = document.createElement("script"); s.src = key; document.body.appendChild(s);
    return true;
  }

  // C0/C1 controls, bidi overrides and isolates (U+202A-202E, U+2066-2069), marks (U+200E/F),
  // zero-width and other format characters, separators: written as escapes, the way the terminal
  // shows them (Python's unicode_escape), so a name cannot hide text or read backwards.
  var HIDDEN = /[\p{C}\p{Z}]/gu;
  var NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };
  function hex(n, width) { return ("0000000" + n.toString(16)).slice(-width); }
  function shown(v) {
    return String(v).replace(HIDDEN, function (c) {
      if (c === " ") { return c; }
      if (NAMED[c]) { return NAMED[c]; }
      var n = c.codePointAt(0);
      return n < 0x100 ? "\\x" + hex(n, 2) : n < 0x10000 ? "\\u" + hex(n, 4) : "\\U" + hex(n, 8);
    });
  }
  function put(el, text) { el.textContent = shown(text); return el; }
  function make(tag, text, cls) {
    var el = document.createElement(tag);
    if (text !== undefined) { put(el, text); }
    if (cls) { el.className = cls; }
    return el;
  }
  // A relative path the writer made (tiles/img0/t1.png): anything else is not loaded.
  function asset(p) { return /^[A-Za-z0-9_\/-]+\.(png|js)$/.test(String(p)) ? String(p) : ""; }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) { return "–"; }
    var a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
  }
  function option(sel, value, text) {
    var o = make("option", text); o.value = value; sel.appendChild(o);
  }
  function pct(v, digits) { return v === null || v === undefined ? "–" : (100 * v).toFixed(digits) + "%"; }
  function tap() { return R.taps[state.tap]; }
  function entry(img) { return R.images[img].taps[tap().name]; }

  function weightsText(w) {
    if (w.source === "random") {
      return "Weights: RANDOM init (seed " + w.seed + "), untrained: these maps are not what the network learned";
    }
    return "Weights: " + (w.source || "unknown") + (w.sha256 ? " (sha256 " + w.sha256.slice(0, 12) + ")" : "");
  }

  function header() {
    put($("title"), R.title);
    document.title = shown(R.title);
    put($("model-line"), R.model + " at " + R.input_size + "×" + R.input_size + ", precision " +
      R.precision + (R.math_mode ? ", math mode " + R.math_mode : "") + "; " + R.images.length + " images, " +
      R.taps.length + " taps. Tiles: each channel scaled to its own min..max (viridis).");
    put($("weights-line"), weightsText(R.weights || {}));
    if ((R.weights || {}).source === "random") { $("weights-line").className = "random"; }
  }

  function controls() {
    R.images.forEach(function (im, i) { option($("image-a"), i, im.name); option($("image-b"), i, im.name); });
    R.taps.forEach(function (t, i) {
      option($("tap"), i, t.name + (t.alias ? " (" + t.alias + ")" : "") + " · " + t.channels + " ch");
    });
    $("image-b").value = String(state.b);
    $("image-b").disabled = R.images.length < 2;
    $("compare").disabled = R.images.length < 2;
    $("image-a").addEventListener("change", function (e) { state.a = +e.target.value; render(); });
    $("image-b").addEventListener("change", function (e) { state.b = +e.target.value; render(); });
    $("tap").addEventListener("change", function (e) { state.tap = +e.target.value; state.pinned = null; render(); });
    $("sort").addEventListener("change", function (e) { state.sort = e.target.value; render(); });
    $("compare").addEventListener("change", function (e) { state.compare = e.target.checked; render(); });
    $("tile-size").addEventListener("input", function (e) {
      state.size = +e.target.value;
      document.documentElement.style.setProperty("--tile", state.size + "px");
      document.querySelectorAll(".tile.painted").forEach(paint);
    });
  }

  function order() {
    var n = tap().channels;
    if (state.sort === "index") { return Array.from({ length: n }, function (_, i) { return i; }); }
    return entry(state.a).order;  // image A's order on both sides: the same channel lines up
  }

  function spriteStyle(el, img, ch, size) {
    var t = tap();
    el.style.backgroundImage = "url(\"" + asset(entry(img).sprite) + "\")";
    el.style.backgroundSize = (t.cols * size) + "px " + (t.rows * size) + "px";
    el.style.backgroundPosition = (-(ch % t.cols) * size) + "px " + (-Math.floor(ch / t.cols) * size) + "px";
  }
  function paint(el) { spriteStyle(el, +el.dataset.img, +el.dataset.ch, state.size); el.classList.add("painted"); }

  function grid(el, img, ord) {
    el.textContent = "";
    var frag = document.createDocumentFragment();
    ord.forEach(function (ch, rank) {
      var d = document.createElement("div");
      d.className = "tile"; d.dataset.ch = ch; d.dataset.img = img; d.dataset.rank = rank;
      frag.appendChild(d);
    });
    el.appendChild(frag);
    el.querySelectorAll(".tile").forEach(function (d) { observer.observe(d); });
  }

  function parityVerdict(r, b) {
    if (!b) { return make("span", "–"); }
    var finite = r.rel_l2 !== null && r.rel_l2 !== undefined && (b.cosine === null || b.cosine === undefined ||
      (r.cosine !== null && r.cosine !== undefined));
    if (!finite) { return make("span", "OUTSIDE " + R.precision + " budget (NaN or ±inf in the maps)", "fail"); }
    var ok = r.rel_l2 <= b.rel_l2 && (b.cosine === null || b.cosine === undefined || r.cosine >= b.cosine);
    return make("span", (ok ? "within " : "OUTSIDE ") + R.precision + " budget (rel L2 ≤ " + fmt(b.rel_l2) + ")",
                ok ? "pass" : "fail");
  }

  function parityPanel() {
    var p = R.images[state.a].parity, t = tap(), panel = $("parity");
    if (!p || !p[t.name]) {
      put(panel, "Parity vs PyTorch reference: not computed" + (R.parity_note ? " (" + R.parity_note + ")" : ""));
      return;
    }
    var r = p[t.name];
    var tbl = document.createElement("table"), head = document.createElement("tr"), row = document.createElement("tr");
    ["parity " + t.name + " vs PyTorch (" + R.images[state.a].name + ")", "max abs", "rel L2", "cosine", "budget"]
      .forEach(function (text) { head.appendChild(make("th", text)); });
    [make("td"), make("td", fmt(r.max_abs)), make("td", fmt(r.rel_l2)), make("td", fmt(r.cosine))]
      .forEach(function (td) { row.appendChild(td); });
    row.appendChild(make("td")).appendChild(parityVerdict(r, R.parity_budget));
    tbl.appendChild(head); tbl.appendChild(row);
    panel.textContent = ""; panel.appendChild(tbl);
  }

  function nonfiniteText(img) {
    var n = entry(img).nonfinite;
    return n ? "; WARNING: " + n + " values of " + R.images[img].name + " here are NaN or ±inf (" +
      (R.nonfinite_colour || "magenta") + " pixels), left out of every statistic" : "";
  }

  function render() {
    var t = tap();
    put($("tap-info"), t.name + (t.alias ? " (" + t.alias + ")" : "") + ": " + t.channels + " channels, " +
      t.height + "×" + t.width + (t.reduction ? ", reduced in the graph: " + (t.reduction.spec || JSON.stringify(t.reduction)) : "") +
      (t.height * t.width === 1 ? "; one value per channel, coloured on one scale across the tap" : "") +
      (state.sort === "energy" ? "; sorted by energy (mean of squares) of " + R.images[state.a].name : "") +
      nonfiniteText(state.a) + (state.compare && state.b !== state.a ? nonfiniteText(state.b) : ""));
    $("pane-b").hidden = !state.compare;
    $("img-a").src = asset(R.images[state.a].file); put($("cap-a"), "A: " + R.images[state.a].name);
    $("img-b").src = asset(R.images[state.b].file); put($("cap-b"), "B: " + R.images[state.b].name);
    var ord = order();
    grid($("grid-a"), state.a, ord);
    if (state.compare) { grid($("grid-b"), state.b, ord); } else { $("grid-b").textContent = ""; }
    parityPanel();
    showChannel(state.pinned !== null ? state.pinned : ord[0]);
  }

  function statsOf(img, ch) {
    var s = entry(img).stats, o = entry(img).order;
    return { rank: o.indexOf(ch) + 1, energy: s.energy[ch], mean: s.mean[ch], std: s.std[ch], min: s.min[ch],
             max: s.max[ch], active: s.active[ch], nonfinite: s.nonfinite ? s.nonfinite[ch] : 0 };
  }

  function showChannel(ch) {
    var imgs = state.compare ? [state.a, state.b] : [state.a];
    put($("channel-title"), "Channel " + ch + " of " + tap().channels + " (" + tap().name + ")");
    var views = $("channel-views"); views.textContent = "";
    imgs.forEach(function (img) {
      var d = make("div", undefined, "big"); d.title = shown(R.images[img].name);
      d.dataset.img = img; d.dataset.ch = ch;
      spriteStyle(d, img, ch, 140); views.appendChild(d);
    });
    put($("pixel-value"), R.pixel_values ? "Hover the enlarged channel for values." : "");
    var rows = [["image"], ["energy rank"], ["energy"], ["mean"], ["std"], ["min"], ["max"], ["active (> 0)"],
                ["NaN or ±inf"]];
    imgs.forEach(function (img) {
      var s = statsOf(img, ch);
      rows[0].push(R.images[img].name); rows[1].push(s.rank + " / " + tap().channels); rows[2].push(fmt(s.energy));
      rows[3].push(fmt(s.mean)); rows[4].push(fmt(s.std)); rows[5].push(fmt(s.min)); rows[6].push(fmt(s.max));
      rows[7].push(pct(s.active, 1)); rows[8].push(String(s.nonfinite));
    });
    var tbl = document.createElement("table");
    rows.forEach(function (r, i) {
      var tr = document.createElement("tr");
      r.forEach(function (v, j) {
        tr.appendChild(make(i === 0 || j === 0 ? "th" : "td", v));
      });
      tbl.appendChild(tr);
    });
    $("channel-stats").textContent = ""; $("channel-stats").appendChild(tbl);
    $("channel-stats").dataset.channel = ch;
  }

  function pixelValue(e) {
    var el = e.target, img = +el.dataset.img, ch = +el.dataset.ch, t = tap();
    var tx = Math.min(t.tile - 1, Math.floor(e.offsetX / el.clientWidth * t.tile));
    var ty = Math.min(t.tile - 1, Math.floor(e.offsetY / el.clientHeight * t.tile));
    withValues(img, function (data) {
      var px = (ch % t.cols) * t.tile + tx, py = Math.floor(ch / t.cols) * t.tile + ty;
      var g = data.data[(py * data.width + px) * 4], s = entry(img).stats;
      var v = s.min[ch] + g / 255 * (s.max[ch] - s.min[ch]);
      var y = Math.floor(ty * t.height / t.tile), x = Math.floor(tx * t.width / t.tile);
      put($("pixel-value"), R.images[img].name + " ch " + ch + " at (y " + y + ", x " + x + "): value " +
        fmt(v) + (t.tile < t.height ? " (mean of a " + (t.height / t.tile).toFixed(1) + "-px block)" : ""));
    });
  }

  function highlight(ch) {
    document.querySelectorAll(".tile.hl").forEach(function (el) { el.classList.remove("hl"); });
    if (ch === null) { return; }
    document.querySelectorAll(".tile[data-ch=\"" + ch + "\"]").forEach(function (el) { el.classList.add("hl"); });
  }

  function tileEvents() {
    var tip = $("tooltip");
    $("channel-views").addEventListener("mousemove", function (e) {
      if (R.pixel_values && e.target.classList.contains("big")) { pixelValue(e); }
    });
    $("panes").addEventListener("mouseover", function (e) {
      var el = e.target.closest(".tile"); if (!el) { return; }
      var ch = +el.dataset.ch, s = statsOf(+el.dataset.img, ch);
      put(tip, R.images[+el.dataset.img].name + " · ch " + ch + " · energy " + fmt(s.energy) + " (rank " +
        s.rank + ") · mean " + fmt(s.mean) + " · max " + fmt(s.max) + " · active " + pct(s.active, 0) +
        (s.nonfinite ? " · " + s.nonfinite + " NaN/±inf" : ""));
      tip.hidden = false; highlight(ch);
      if (state.pinned === null) { showChannel(ch); }
    });
    $("panes").addEventListener("mousemove", function (e) {
      tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 14) + "px";
    });
    $("panes").addEventListener("mouseout", function (e) {
      if (e.target.closest(".tile")) { tip.hidden = true; highlight(null); }
    });
    $("panes").addEventListener("click", function (e) {
      var el = e.target.closest(".tile"); if (!el) { return; }
      var ch = +el.dataset.ch;
      document.querySelectorAll(".tile.pinned").forEach(function (t) { t.classList.remove("pinned"); });
      if (state.pinned === ch) { state.pinned = null; } else {
        state.pinned = ch;
        document.querySelectorAll(".tile[data-ch=\"" + ch + "\"]").forEach(function (t) { t.classList.add("pinned"); });
      }
      showChannel(ch);
    });
  }

  observer = new IntersectionObserver(function (items) {
    items.forEach(function (it) {
      if (it.isIntersecting) { paint(it.target); observer.unobserve(it.target); }
    });
  }, { rootMargin: "300px" });
  header();
  controls();
  tileEvents();
  render();
})();
