// Shared helpers: CSRF header for fetch, small DOM utilities. No external libraries.
"use strict";
window.smearscope = (function () {
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  function postJSON(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {}),
    }).then(function (r) {
      return r.json().then(function (data) { return { ok: r.ok, status: r.status, data: data }; });
    });
  }
  function pct(x) { return (100 * (x || 0)).toFixed(1) + "%"; }
  // A confidence for people: never "100.0%" (a rounded 0.9996 is not certainty).
  function conf(x) { return (x || 0) >= 0.999 ? "\u2265 99.9%" : pct(x); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  return { csrf: csrf, postJSON: postJSON, pct: pct, conf: conf, el: el };
})();

// A form with data-confirm asks first (the page's <dialog>); confirming sets its hidden "confirm" field,
// which the server requires (without this script it shows its own confirmation page instead).
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (!question) return;
  ev.preventDefault();
  function go() {
    var field = form.querySelector('input[name="confirm"]');
    if (field) field.value = "yes";
    form.submit();
  }
  var dlg = document.getElementById("confirm-dialog");
  if (!dlg || typeof dlg.showModal !== "function") {
    if (window.confirm(question)) go();
    return;
  }
  document.getElementById("confirm-text").textContent = question;
  dlg.returnValue = "";
  dlg.addEventListener("close", function onClose() {
    dlg.removeEventListener("close", onClose);
    if (dlg.returnValue === "yes") go();
  });
  dlg.showModal();
});

// Buttons with data-print print the page (the report's print stylesheet does the layout).
document.addEventListener("click", function (ev) {
  var btn = ev.target.closest && ev.target.closest("[data-print]");
  if (btn) { ev.preventDefault(); window.print(); }
});
