// Calibration page: start a run and poll its progress; freeze a frame and mark a micrometer on it.
"use strict";
(function () {
  document.querySelectorAll("#profiles form").forEach(function (f) {
    var b = f.querySelector("button.danger");
    if (!b) return;
    f.addEventListener("submit", function (e) {
      var name = f.querySelector('input[name="name"]').value;
      if (!window.confirm("Delete the calibration profile \u201c" + name + "\u201d?")) e.preventDefault();
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
    msg.textContent = "starting…";
    S.postJSON(root.dataset.run, body).then(function (res) {
      if (!res.ok) { msg.textContent = res.data.error || "refused"; msg.className = "error"; return; }
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
        r.um_per_px.toFixed(4) + " µm/px · red cell " + r.diameter_px.toFixed(1) + " px · " +
        r.n_confident + "/" + r.n_frames + " frames confident · spread " + (100 * r.spread).toFixed(1) + "%";
      showSave("auto-save", job);
    });
  });

  var white = document.getElementById("white-start");
  white.addEventListener("click", function () {
    start("white", { kind: "white" }, function (job) {
      var r = job.result;
      var took = Object.keys(r.controls).join(", ") || "none";
      document.getElementById("white-msg").textContent =
        "background " + r.before.join("/") + " → " + r.after.join("/") + " · camera controls applied: " + took +
        (r.ignored.length ? " · ignored by this camera: " + r.ignored.join(", ") : "") +
        " · software gain: " + (r.white_gains ? r.white_gains.join(", ") : "none needed");
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
        micMsg.textContent = "Click the first end of the known length.";
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
    if (points.length === 1) { micMsg.textContent = "Now click the other end."; form.hidden = true; return; }
    var px = Math.hypot(points[1][0] - points[0][0], points[1][1] - points[0][1]);
    ["x1", "y1", "x2", "y2"].forEach(function (k, i) {
      form.querySelector('input[name="' + k + '"]').value = points[i >> 1][i & 1];
    });
    micMsg.textContent = px.toFixed(1) + " px between the points. Type the known length (click again to re-mark).";
    form.hidden = false;
  });
})();
