// Calibration page: start a run and poll its progress; freeze a frame and mark a micrometer on it.
"use strict";
(function () {
  var holder = document.getElementById("calibration");
  var words = JSON.parse((holder && holder.dataset.words) || "{}");
  // a translated sentence from the page's words, "{name}" placeholders filled in
  function T(key, args) {
    return (words[key] || key).replace(/\{(\w+)\}/g, function (m, k) {
      return args && args[k] !== undefined ? String(args[k]) : m;
    });
  }
  document.querySelectorAll("#profiles form").forEach(function (f) {
    var b = f.querySelector("button.danger");
    if (!b) return;
    f.addEventListener("submit", function (e) {
      var name = f.querySelector('input[name="name"]').value;
      if (!window.confirm(T("delete", {name: name}))) e.preventDefault();
    });
  });
  var root = document.getElementById("calibration");
  if (!root) return;
  // a figure with the page language's decimal mark ("0,3044" in French)
  function num(x, digits) {
    return Number(x).toLocaleString(document.documentElement.lang || undefined,
      { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  var S = window.smearscope;

  // what the run said last: its state in words, the step and percentage, or why it stopped
  function say(prefix, job) {
    var msg = document.getElementById(prefix + "-msg");
    var bar = document.getElementById(prefix + "-progress");
    var v = job.view || {};
    if (bar && v.percent !== null && v.percent !== undefined) { bar.hidden = false; bar.max = 100; bar.value = v.percent; }
    msg.textContent = "";
    msg.className = job.state === "failed" ? "error" : "hint";
    var head = document.createElement("strong");
    head.textContent = v.text || "";
    msg.appendChild(head);
    if (v.step) msg.appendChild(document.createTextNode(" · " + v.step));
    if (v.sentence) msg.appendChild(document.createTextNode(" — " + v.sentence));
    if (v.details) {
      var d = document.createElement("details");
      var s = document.createElement("summary");
      s.textContent = T("details");
      var p = document.createElement("p");
      p.className = "details";
      p.textContent = v.details;
      d.appendChild(s);
      d.appendChild(p);
      msg.appendChild(d);
    }
  }

  function poll(prefix, onDone) {
    fetch(root.dataset.job, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var job = data.job;
        if (!job) return;
        say(prefix, job);
        if (job.state === "running") {
          setTimeout(function () { poll(prefix, onDone); }, 500);
        } else if (job.state === "done") {
          onDone(job);
        }
      })
      .catch(function () { setTimeout(function () { poll(prefix, onDone); }, 1000); });
  }

  function start(prefix, body, onDone) {
    var msg = document.getElementById(prefix + "-msg");
    msg.className = "hint";
    msg.textContent = T("starting");
    S.postJSON(root.dataset.run, body).then(function (res) {
      if (!res.ok) {
        msg.textContent = (res.data && (res.data.message || res.data.error)) || T("refused");
        msg.className = "error";
        return;
      }
      poll(prefix, onDone);
    });
  }

  function showSave(id, job) {
    var form = document.getElementById(id);
    form.querySelector('input[name="job"]').value = job.id;
    form.hidden = false;
  }

  function autoDone(job) {
      var r = job.result;
      document.getElementById("auto-msg").appendChild(document.createTextNode(" " +
        T("auto_result", {um: num(r.um_per_px, 4), px: num(r.diameter_px, 1), confident: r.n_confident,
                          frames: r.n_frames, spread: num(100 * r.spread, 1)})));
      showSave("auto-save", job);
  }

  function whiteDone(job) {
      var r = job.result;
      var took = Object.keys(r.controls).join(", ") || T("none");
      document.getElementById("white-msg").appendChild(document.createTextNode(" " +
        T("white_result", {before: r.before.join("/"), after: r.after.join("/"), took: took}) +
        (r.ignored.length ? T("white_ignored", {which: r.ignored.join(", ")}) : "") +
        T("white_gain", {gains: r.white_gains ? r.white_gains.join(", ") : T("none_needed")})));
      showSave("white-save", job);
  }

  document.getElementById("auto-start").addEventListener("click", function () {
    var frames = parseInt(document.getElementById("auto-frames").value, 10) || 20;
    start("auto", { kind: "auto", frames: frames }, autoDone);
  });
  document.getElementById("white-start").addEventListener("click", function () {
    start("white", { kind: "white" }, whiteDone);
  });
  // a run started before this page was opened (another tab, a reload): follow it to its end
  if (root.dataset.running === "auto") poll("auto", autoDone);
  if (root.dataset.running === "white") poll("white", whiteDone);

  // stage micrometer: a canvas with the frozen frame at its own pixel size; clicks → frame pixels
  var canvas = document.getElementById("mic-canvas");
  var form = document.getElementById("mic-form");
  var micMsg = document.getElementById("mic-msg");
  var img = null;
  var points = [];

  function draw() {
    var ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    var r = Math.max(4, canvas.width / 150);
    ctx.strokeStyle = "#00e5ff";
    ctx.fillStyle = "#00e5ff";
    ctx.lineWidth = Math.max(2, canvas.width / 500);
    points.forEach(function (p) { ctx.beginPath(); ctx.arc(p[0], p[1], r, 0, 2 * Math.PI); ctx.fill(); });
    if (points.length === 2) {
      ctx.beginPath(); ctx.moveTo(points[0][0], points[0][1]); ctx.lineTo(points[1][0], points[1][1]); ctx.stroke();
    }
  }

  document.getElementById("mic-freeze").addEventListener("click", function () {
    S.postJSON(root.dataset.freeze, {}).then(function (res) {
      if (!res.ok) { micMsg.textContent = res.data.error; micMsg.className = "error"; return; }
      img = new Image();
      img.onload = function () {
        canvas.width = res.data.width;
        canvas.height = res.data.height;
        canvas.hidden = false;
        points = [];
        form.querySelector('input[name="token"]').value = res.data.token;
        micMsg.className = "hint";
        micMsg.textContent = T("mic_first");
        draw();
      };
      img.src = res.data.url;
    });
  });

  canvas.addEventListener("click", function (e) {
    var rect = canvas.getBoundingClientRect();
    var x = (e.clientX - rect.left) * canvas.width / rect.width;
    var y = (e.clientY - rect.top) * canvas.height / rect.height;
    if (points.length === 2) points = [];
    points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
    draw();
    if (points.length === 1) { micMsg.textContent = T("mic_second"); form.hidden = true; return; }
    var px = Math.hypot(points[1][0] - points[0][0], points[1][1] - points[0][1]);
    ["x1", "y1", "x2", "y2"].forEach(function (k, i) {
      form.querySelector('input[name="' + k + '"]').value = points[i >> 1][i & 1];
    });
    micMsg.textContent = T("mic_px", {px: px.toFixed(1)});
    form.hidden = false;
  });
})();
