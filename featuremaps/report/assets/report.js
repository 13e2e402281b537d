/* featuremaps report viewer: reads window.FEATUREMAPS_REPORT (data.js), draws channel grids from
   PNG sprite sheets (one per image and tap), paints tiles lazily as they scroll into view. */
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
    var key = entry(img).values;
    if (!key) { return false; }
    var slot = values[key];
    if (slot && slot.data) { cb(slot.data); return true; }
    if (slot) { slot.pending.push(cb); return true; }
    values[key] = { pending: [cb] };
    var s = document.createElement("script"); s.src = key; document.body.appendChild(s);
    return true;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) { return "–"; }
    var a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
  }
  function option(sel, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o);
  }
  function tap() { return R.taps[state.tap]; }
  function entry(img) { return R.images[img].taps[tap().name]; }

  function weightsText(w) {
    if (w.source === "random") {
      return "Weights: RANDOM init (seed " + w.seed + "), untrained: these maps are not what the network learned";
    }
    return "Weights: " + (w.source || "unknown") + (w.sha256 ? " (sha256 " + w.sha256.slice(0, 12) + ")" : "");
  }

  function header() {
    $("title").textContent = R.title;
    document.title = R.title;
    $("model-line").textContent = R.model + " at " + R.input_size + "×" + R.input_size + ", precision " +
      R.precision + (R.math_mode ? ", math mode " + R.math_mode : "") + "; " + R.images.length + " images, " +
      R.taps.length + " taps. Tiles: each channel scaled to its own min..max (viridis).";
    $("weights-line").textContent = weightsText(R.weights || {});
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
    el.style.backgroundImage = "url(\"" + entry(img).sprite + "\")";
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

  function parityPanel() {
    var p = R.images[state.a].parity, t = tap();
    if (!p || !p[t.name]) {
      $("parity").textContent = "Parity vs PyTorch reference: not computed" + (R.parity_note ? " (" + R.parity_note + ")" : "");
      return;
    }
    var r = p[t.name], b = R.parity_budget;
    var ok = b ? (r.rel_l2 <= b.rel_l2 && (b.cosine === null || b.cosine === undefined || r.cosine >= b.cosine)) : null;
    $("parity").innerHTML = "";
    var tbl = document.createElement("table");
    var head = "<tr><th>parity " + t.name + " vs PyTorch (" + R.images[state.a].name + ")</th><th>max abs</th>" +
      "<th>rel L2</th><th>cosine</th><th>budget</th></tr>";
    var verdict = ok === null ? "–" : "<span class=\"" + (ok ? "pass" : "fail") + "\">" +
      (ok ? "within " : "OUTSIDE ") + R.precision + " budget (rel L2 ≤ " + fmt(b.rel_l2) + ")</span>";
    tbl.innerHTML = head + "<tr><td></td><td>" + fmt(r.max_abs) + "</td><td>" + fmt(r.rel_l2) + "</td><td>" +
      fmt(r.cosine) + "</td><td>" + verdict + "</td></tr>";
    $("parity").appendChild(tbl);
  }

  function render() {
    var t = tap();
    $("tap-info").textContent = t.name + (t.alias ? " (" + t.alias + ")" : "") + ": " + t.channels + " channels, " +
      t.height + "×" + t.width + (t.reduction ? ", reduced in the graph: " + (t.reduction.spec || JSON.stringify(t.reduction)) : "") +
      (t.height * t.width === 1 ? "; one value per channel, coloured on one scale across the tap" : "") +
      (state.sort === "energy" ? "; sorted by energy (mean of squares) of " + R.images[state.a].name : "");
    $("pane-b").hidden = !state.compare;
    $("img-a").src = R.images[state.a].file; $("cap-a").textContent = "A: " + R.images[state.a].name;
    $("img-b").src = R.images[state.b].file; $("cap-b").textContent = "B: " + R.images[state.b].name;
    var ord = order();
    grid($("grid-a"), state.a, ord);
    if (state.compare) { grid($("grid-b"), state.b, ord); } else { $("grid-b").textContent = ""; }
    parityPanel();
    showChannel(state.pinned !== null ? state.pinned : ord[0]);
  }

  function statsOf(img, ch) {
    var s = entry(img).stats, o = entry(img).order;
    return { rank: o.indexOf(ch) + 1, energy: s.energy[ch], mean: s.mean[ch], std: s.std[ch], min: s.min[ch],
             max: s.max[ch], active: s.active[ch] };
  }

  function showChannel(ch) {
    var imgs = state.compare ? [state.a, state.b] : [state.a];
    $("channel-title").textContent = "Channel " + ch + " of " + tap().channels + " (" + tap().name + ")";
    var views = $("channel-views"); views.textContent = "";
    imgs.forEach(function (img) {
      var d = document.createElement("div"); d.className = "big"; d.title = R.images[img].name;
      d.dataset.img = img; d.dataset.ch = ch;
      spriteStyle(d, img, ch, 140); views.appendChild(d);
    });
    $("pixel-value").textContent = R.pixel_values ? "Hover the enlarged channel for values." : "";
    var rows = [["image"], ["energy rank"], ["energy"], ["mean"], ["std"], ["min"], ["max"], ["active (> 0)"]];
    imgs.forEach(function (img) {
      var s = statsOf(img, ch);
      rows[0].push(R.images[img].name); rows[1].push(s.rank + " / " + tap().channels); rows[2].push(fmt(s.energy));
      rows[3].push(fmt(s.mean)); rows[4].push(fmt(s.std)); rows[5].push(fmt(s.min)); rows[6].push(fmt(s.max));
      rows[7].push((100 * s.active).toFixed(1) + "%");
    });
    var tbl = document.createElement("table");
    rows.forEach(function (r, i) {
      var tr = document.createElement("tr");
      r.forEach(function (v, j) {
        var c = document.createElement(i === 0 || j === 0 ? "th" : "td"); c.textContent = v; tr.appendChild(c);
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
      $("pixel-value").textContent = R.images[img].name + " ch " + ch + " at (y " + y + ", x " + x + "): value " +
        fmt(v) + (t.tile < t.height ? " (mean of a " + (t.height / t.tile).toFixed(1) + "-px block)" : "");
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
      tip.textContent = R.images[+el.dataset.img].name + " · ch " + ch + " · energy " + fmt(s.energy) + " (rank " +
        s.rank + ") · mean " + fmt(s.mean) + " · max " + fmt(s.max) + " · active " + (100 * s.active).toFixed(0) + "%";
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
