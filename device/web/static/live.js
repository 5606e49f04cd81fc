// Live view: MJPEG <img>, newest result over Server-Sent Events, capture button, sample summary.
"use strict";
(function () {
  var S = window.smearscope;
  var root = document.getElementById("live");
  if (!root) return;
  var readonly = root.dataset.readonly === "1";
  var img = document.getElementById("stream");
  var callBox = document.getElementById("call");
  var callLabel = document.getElementById("call-label");
  var callSub = document.getElementById("call-sub");
  var ovLabel = document.getElementById("ov-label");
  var ovTime = document.getElementById("ov-time");
  var qState = document.getElementById("q-state");
  var qWhy = document.getElementById("q-why");
  var heat = document.getElementById("heatmap");
  var words = JSON.parse(root.dataset.words || "{}");
  // a translated sentence from the page's words, "{name}" placeholders filled in
  function T(key, args) {
    return (words[key] || key).replace(/\{(\w+)\}/g, function (m, k) {
      return args && args[k] !== undefined ? String(args[k]) : m;
    });
  }
  var adviceBox = document.getElementById("advice");
  var barsNone = document.getElementById("bars-none");
  var lastAt = 0;
  var results = 0;
  root.dataset.results = "0";

  function setCall(kind, label, sub) {
    callBox.className = "call " + kind;
    callLabel.textContent = label;
    callSub.textContent = sub || "";
    ovLabel.textContent = label;
    ovLabel.className = kind;
  }

  function setBars(probs) {
    var bars = document.getElementById("bars");
    Object.keys(probs || {}).forEach(function (k) {
      var row = bars.querySelector('.bar[data-label="' + CSS.escape(k) + '"]');
      if (!row) {
        row = S.el("div", "bar");
        row.dataset.label = k;
        row.appendChild(S.el("span", "bar-name", k));
        var bar = S.el("progress", "bar-fill");
        bar.max = 1;
        row.appendChild(bar);
        row.appendChild(S.el("span", "bar-val", ""));
        bars.appendChild(row);
      }
      row.querySelector(".bar-fill").value = probs[k] || 0;
      row.querySelector(".bar-val").textContent = S.pct(probs[k]);
    });
  }

  var scaleLine = document.getElementById("scale-line");
  var tilesLayer = document.getElementById("tiles-layer");
  var tilesToggle = document.getElementById("tiles-toggle");
  var lastTiles = null;

  function drawTiles(r) {
    if (r) lastTiles = r.outlines || null;
    if (!tilesLayer) return;
    tilesLayer.textContent = "";
    tilesLayer.hidden = !(tilesToggle && tilesToggle.checked && lastTiles);
    if (tilesLayer.hidden) return;
    // the image is letterboxed (object-fit: contain): place the boxes on the picture itself
    var cw = img.clientWidth, ch = img.clientHeight;
    var nw = img.naturalWidth || cw, nh = img.naturalHeight || ch;
    var k = Math.min(cw / nw, ch / nh), dw = nw * k, dh = nh * k, ox = (cw - dw) / 2, oy = (ch - dh) / 2;
    lastTiles.forEach(function (b) {
      var d = S.el("div", "tile-box " + b.state, b.label || "");
      d.style.left = (ox + b.x * dw) + "px";
      d.style.top = (oy + b.y * dh) + "px";
      d.style.width = (b.w * dw) + "px";
      d.style.height = (b.h * dh) + "px";
      tilesLayer.appendChild(d);
    });
  }
  if (tilesToggle) tilesToggle.addEventListener("change", function () { drawTiles(null); });

  // Cell results: every detected white cell outlined in its class colour over the picture. The SVG's
  // viewBox is the published frame's size and it letterboxes like the image (xMidYMid meet = contain),
  // so the boxes stay on their cells at any screen size without measuring the image.
  var SVGNS = "http://www.w3.org/2000/svg";
  var cellsLayer = document.getElementById("cells-layer");
  var cellsToggle = document.getElementById("cells-toggle");
  var cellsToggleBox = document.getElementById("cells-toggle-box");
  var cellsInfo = document.getElementById("cells-info");
  var fieldLine = document.getElementById("field-line");
  var legendList = document.getElementById("cells-legend");
  var slideBox = document.getElementById("slide-count");
  var summaryBox = document.getElementById("summary");
  var lastCells = null;

  function cellRect(state, colour, x, y, w, h) {
    var rc = document.createElementNS(SVGNS, "rect");
    rc.setAttribute("class", "cell " + state);
    rc.setAttribute("stroke", colour);
    rc.setAttribute("x", x);
    rc.setAttribute("y", y);
    rc.setAttribute("width", w);
    rc.setAttribute("height", h);
    return rc;
  }

  function drawCells(r) {
    if (r) lastCells = Array.isArray(r.cells) ? r : null;
    if (!cellsLayer) return;
    while (cellsLayer.firstChild) cellsLayer.removeChild(cellsLayer.firstChild);
    if (cellsToggleBox) cellsToggleBox.hidden = !lastCells;
    if (tilesToggle) tilesToggle.parentNode.hidden = !!lastCells;  // a cell result has no tiles
    // an SVG element has no `hidden` property: the attribute itself
    cellsLayer.toggleAttribute("hidden", !(lastCells && (!cellsToggle || cellsToggle.checked)));
    if (!lastCells) return;
    var size = lastCells.frame_size || [img.naturalWidth || 1, img.naturalHeight || 1];
    cellsLayer.setAttribute("viewBox", "0 0 " + size[0] + " " + size[1]);
    lastCells.cells.forEach(function (c) {
      var b = c.box;
      var rc = cellRect(c.state + " " + c.kind, c.colour, b[0], b[1], b[2] - b[0], b[3] - b[1]);
      rc.setAttribute("data-index", c.index);
      var title = document.createElementNS(SVGNS, "title");
      title.textContent = c.display;
      rc.appendChild(title);
      cellsLayer.appendChild(rc);
    });
  }
  if (cellsToggle) cellsToggle.addEventListener("change", function () { drawCells(null); });

  function legendItem(entry) {
    var li = S.el("li", "legend-" + entry.state);
    var sw = document.createElementNS(SVGNS, "svg");
    sw.setAttribute("viewBox", "0 0 22 16");
    sw.setAttribute("aria-hidden", "true");
    sw.appendChild(cellRect(entry.state + " " + entry.kind, entry.colour, 3, 3, 16, 10));
    li.appendChild(sw);
    li.appendChild(S.el("span", "", entry.text));
    return li;
  }

  // the field line, the legend and the running slide count, in the reader's words (view.cells)
  function showCellWords(r) {
    if (!cellsInfo) return;
    var cv = (r.view || {}).cells || null;
    var legend = (cv && cv.legend) || [];
    fieldLine.textContent = (cv && cv.field_line) || "";
    legendList.textContent = "";
    legend.forEach(function (e) { legendList.appendChild(legendItem(e)); });
    cellsInfo.hidden = !(cv && (cv.field_line || legend.length));
    var s = cv && cv.slide;
    if (!s && r.state === "moving") return;  // the stage moves: the slide's count stands
    // the station counts its newest open sample: never show that count as another sample's
    var mine = summaryBox && summaryBox.dataset.sample;
    if (s && s.sample_id && mine && s.sample_id !== mine) s = null;
    slideBox.hidden = !s;
    if (!s) return;
    slideBox.className = "slide-count " + s.call;
    document.getElementById("slide-line").textContent = s.line;
    document.getElementById("slide-call").textContent = s.decided ? s.call_words : "";
    document.getElementById("slide-details").textContent = s.details || "";
    document.getElementById("slide-details-box").hidden = !s.details;
  }

  function onResult(r) {
    lastAt = Date.now();
    results += 1;
    root.dataset.results = String(results);
    var q = r.quality || {};
    var qOk = q.ok !== false;
    qState.textContent = qOk ? T("good") : T("poor");
    qState.className = qOk ? "ok" : "bad";
    qWhy.textContent = ((r.view || {}).quality || q.reasons || []).join("; ");
    var view = r.view || {};
    var adv = view.advice;
    var cellCall = (view.cells || {}).call || null;
    if (r.state === "moving") {
      setCall("stale", T("moving"), T("moving_sub"));
    } else if (adv && adv.refused) {
      setCall("poor", adv.title, "");
    } else if (adv) {
      setCall("uncertain", adv.title, T("uncertain_sub", {label: r.label}));
    } else if (!qOk) {
      setCall("poor", T("poor_quality", {label: r.label}), T("confidence", {conf: S.conf(r.confidence)}));
    } else if (cellCall) {
      // a field counted cell by cell: its blasts and unread cells, no field label with a confidence
      setCall(cellCall.kind, cellCall.title, cellCall.sub);
    } else {
      var row = document.querySelector('.bar[data-label="' + CSS.escape(r.label) + '"]');
      var malignant = row ? row.querySelector(".bar-fill").classList.contains("malignant") : false;
      var name = row ? row.querySelector(".bar-name").textContent : r.label;
      setCall(malignant ? "malignant" : "ok", name, T("confidence", {conf: S.conf(r.confidence)}));
    }
    if (r.state !== "moving") {
      // what happened and what to do; the engineer's reason behind "details"
      adviceBox.hidden = !adv;
      document.getElementById("advice-text").textContent = adv ? adv.sentence : "";
      document.getElementById("advice-details").textContent = adv ? adv.details : "";
      adviceBox.querySelector("details").hidden = !(adv && adv.details);
      // no bars read as a call when none was made
      var called = view.has_call !== false;
      document.getElementById("bars").classList.toggle("no-call", !called);
      barsNone.hidden = called || !!cellCall;
      // a cell field's mean probabilities are no call: its cells are outlined and listed instead
      document.getElementById("bars").hidden = !!cellCall;
    }
    callBox.dataset.label = r.label || "";
    if (heat && r.has_heatmap === false && !heat.checked) {
      heat.disabled = true;
      heat.parentNode.title = T("no_heatmap");
    } else if (heat && r.has_heatmap) {
      heat.disabled = false;
    }
    if (r.state !== "moving") { setBars(r.probabilities); drawTiles(r); }
    drawCells(r);
    showCellWords(r);
    var sc = r.scale_check;
    if (scaleLine && r.state !== "moving") {
      var camera = r.um_per_px ? T(r.profile ? "camera_scale_profile" : "camera_scale",
                                   {um: Number(r.um_per_px).toPrecision(3), profile: r.profile}) : "";
      var tiles = r.tiles && !r.tiles.legacy ? T("tiles_line", {classified: r.tiles.classified, tiles: r.tiles.tiles}) : "";
      scaleLine.textContent = [camera, tiles].filter(Boolean).join(" · ");
      scaleLine.title = sc ? sc.message : "";  // the engineer's scale-check figures
    }
    ovTime.textContent = view.time || "";
    captureState(r);
  }

  // Capture is enabled only when the station would store this field; otherwise the button says why
  // (its title and the visible hint below it), mirroring services.capture_field's refusals.
  var captureBusy = false;
  function captureWhy(r) {
    var btn = document.getElementById("capture");
    if (!btn) return null;
    if (btn.dataset.hasSample !== "1") return T("need_sample");
    if (!r) return T("no_field");
    if (r.state === "moving") return T("moving_capture");
    var adv = (r.view || {}).advice;
    if (adv && adv.refused) return T("cannot_capture", {why: adv.sentence});
    if (!r.label) return T("no_field");
    return null;
  }
  var lastResult = null;
  function captureState(r) {
    if (r !== undefined) lastResult = r;
    var btn = document.getElementById("capture");
    var why = document.getElementById("capture-why");
    if (!btn) return;
    var reason = lastAt && Date.now() - lastAt > 10000 ? T("stale_capture")
                                                       : captureWhy(lastResult);
    btn.disabled = captureBusy || reason !== null;
    btn.title = reason || T("store_field");
    if (why) { why.textContent = reason || ""; why.hidden = reason === null; }
  }

  // When the server's stream budget is spent (503) EventSource gives up: poll the newest result
  // once a second instead, and try the stream again every 30 s.
  var pollTimer = null;
  var lastSeq = null;
  function poll() {
    fetch(root.dataset.result, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (b) {
        if (b && b.result && b.seq !== lastSeq) { lastSeq = b.seq; onResult(b.result); }
      })
      .catch(function () { /* next tick */ });
  }
  function connect() {
    var es = new EventSource(root.dataset.events);
    es.addEventListener("open", function () {
      if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    });
    es.addEventListener("result", function (ev) {
      try { onResult(JSON.parse(ev.data)); } catch (e) { /* a malformed event is skipped */ }
    });
    es.addEventListener("error", function () {
      if (es.readyState !== EventSource.CLOSED) return;  // the browser reconnects by itself
      if (!pollTimer) pollTimer = setInterval(poll, 1000);
      setTimeout(connect, 30000);
    });
  }
  connect();

  setInterval(function () {
    if (lastAt && Date.now() - lastAt > 10000) {
      setCall("stale", T("stale", {n: Math.round((Date.now() - lastAt) / 1000)}), T("stale_sub"));
      captureState();
    }
  }, 2000);

  function streamUrl() {
    return root.dataset.stream + "?" + (heat && heat.checked ? "heatmap=1&" : "") + "t=" + Date.now();
  }
  function stillUrl() {
    return root.dataset.frame + "?" + (heat && heat.checked ? "heatmap=1&" : "") + "t=" + Date.now();
  }
  // Still-frame mode: when the stream is refused (budget spent, 503) the img shows one JPEG a second
  // and the stream is tried again every 30 s.
  var stills = false;
  var stillTimer = null;
  function streamAgain() {
    stills = false;
    if (stillTimer) { clearInterval(stillTimer); stillTimer = null; }
    img.src = streamUrl();
  }
  function stillMode() {
    stills = true;
    root.dataset.stills = "1";
    if (!stillTimer) stillTimer = setInterval(function () { img.src = stillUrl(); }, 1000);
    setTimeout(streamAgain, 30000);
  }
  if (heat) {
    heat.addEventListener("change", function () { img.src = stills ? stillUrl() : streamUrl(); });
  }
  function onImgError() {
    if (stills) return;  // no frame yet: the next tick tries again
    fetch(streamUrl(), {method: "HEAD", credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (r.status === 503) { stillMode(); } else { setTimeout(streamAgain, 2000); } })
      .catch(function () { setTimeout(streamAgain, 2000); });
  }
  img.addEventListener("error", onImgError);
  // the stream may have been refused before this script ran (its error event already fired)
  if (img.complete && img.naturalWidth === 0) onImgError();

  if (readonly) return;

  var summary = document.getElementById("summary");
  var sampleSel = document.getElementById("sample");
  var captureBtn = document.getElementById("capture");
  var msg = document.getElementById("capture-msg");

  // a sample of counted white cells (device/cells_summary.py): its call and counts, no field fractions
  function renderCellSummary(s) {
    var callText = words["cells_call_" + s.call]
      ? T("cells_call_" + s.call, {n: s.counted, target: s.goal || s.target}) : s.call_text;
    summary.appendChild(S.el("p", "sum-call " + (s.call || ""), callText || ""));
    summary.appendChild(S.el("p", "", T("cells_summary_counts", {fields: s.fields, counted: s.counted,
      blasts: s.blasts, unclassified: s.unclassified})));
  }

  // a label's display name (its bar's), not its id
  function labelName(id) {
    var row = document.querySelector('.bar[data-label="' + CSS.escape(id || "") + '"] .bar-name');
    return row ? row.textContent : id;
  }

  function renderSummary(s) {
    if (!summary) return;
    summary.textContent = "";
    if (!s) return;
    if (s.kind === "cells") { renderCellSummary(s); return; }
    var callText = words["call_" + s.call] ? T("call_" + s.call, {label: s.top_malignant_label}) : s.call_text;
    var call = S.el("p", "sum-call " + (s.call || ""), callText || "");
    summary.appendChild(call);
    summary.appendChild(S.el("p", "", T("summary_counts", {fields: s.fields, confident: s.confident_fields,
      uncertain: s.uncertain_fields, reviewed: s.reviewed_fields})));
    var ul = S.el("ul", "fractions");
    Object.keys(s.label_fractions || {}).forEach(function (k) {
      ul.appendChild(S.el("li", "", k + ": " + S.pct(s.label_fractions[k]) + " (" + s.label_counts[k] + ")"));
    });
    summary.appendChild(ul);
    summary.appendChild(S.el("p", "hint", T("rule", {rule: words.slide_rule || s.rule || ""})));
  }

  function loadSummary() {
    var id = summary && summary.dataset.sample;
    if (!id) return;
    fetch(root.dataset.sampleApi + "/" + encodeURIComponent(id), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s) renderSummary(s.summary); })
      .catch(function () {});
  }
  loadSummary();
  setInterval(loadSummary, 10000);

  if (sampleSel) {
    sampleSel.addEventListener("change", function () { sampleSel.form.submit(); });
  }

  if (captureBtn) {
    captureBtn.addEventListener("click", function () {
      captureBusy = true;
      captureBtn.disabled = true;
      msg.textContent = T("capturing");
      S.postJSON(root.dataset.capture, { sample: sampleSel ? sampleSel.value : null })
        .then(function (res) {
          if (res.ok) {
            var rec = res.data.record || {};
            msg.textContent = T("stored", {call: rec.abstained ? T("uncertain_short") : labelName(rec.label),
                                          n: res.data.summary ? res.data.summary.fields : "?"});
            renderSummary(res.data.summary);
          } else {
            msg.textContent = T("not_stored", {why: res.data.error || res.status});
          }
        })
        .catch(function (e) { msg.textContent = T("not_stored", {why: e}); })
        .finally(function () { captureBusy = false; captureState(); });
    });
  }
})();
