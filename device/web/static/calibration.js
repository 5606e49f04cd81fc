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
  var S = window.smearscope;

  function poll(prefix, onDone) {
    var msg = document.getElementById(prefix + "-msg");
    var bar = document.getElementById(prefix + "-progress");
    fetch(root.dataset.job, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var job = data.job;
        if (!job) return;
        if (bar && job.total) { bar.hidden = false; bar.max = job.total; bar.value = job.done; }
        if (job.state === "running") {
          msg.textContent = (job.total ? job.done + " / " + job.total + " · " : "") + job.message;
          setTimeout(function () { poll(prefix, onDone); }, 500);
        } else if (job.state === "failed") {
          msg.textContent = job.error;
          msg.className = "error";
        } else {
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
      if (!res.ok) { msg.textContent = res.data.error || T("refused"); msg.className = "error"; return; }
      poll(prefix, onDone);
    });
  }

  function showSave(id, job) {
    var form = document.getElementById(id);
    form.querySelector('input[name="job"]').value = job.id;
    form.hidden = false;
  }

  var auto = document.getElementById("auto-start");
  auto.addEventListener("click", function () {
    var frames = parseInt(document.getElementById("auto-frames").value, 10) || 20;
    start("auto", { kind: "auto", frames: frames }, function (job) {
      var r = job.result;
      document.getElementById("auto-msg").textContent =
        T("auto_result", {um: r.um_per_px.toFixed(4), px: r.diameter_px.toFixed(1), confident: r.n_confident,
                          frames: r.n_frames, spread: (100 * r.spread).toFixed(1)});
      showSave("auto-save", job);
    });
  });

  var white = document.getElementById("white-start");
  white.addEventListener("click", function () {
    start("white", { kind: "white" }, function (job) {
      var r = job.result;
      var took = Object.keys(r.controls).join(", ") || T("none");
      document.getElementById("white-msg").textContent =
        T("white_result", {before: r.before.join("/"), after: r.after.join("/"), took: took}) +
        (r.ignored.length ? T("white_ignored", {which: r.ignored.join(", ")}) : "") +
        T("white_gain", {gains: r.white_gains ? r.white_gains.join(", ") : T("none_needed")});
      showSave("white-save", job);
    });
  });

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
