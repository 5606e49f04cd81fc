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
