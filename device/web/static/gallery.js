// The sample page's cell gallery: reclassify a cell with a click (a small menu of the bundle's labels and
// "not a white cell") or from the keyboard (arrow keys move, Enter opens the menu, number keys pick a
// label at once, Escape closes). The answer carries the slide's summary and gallery as HTML, put in place
// without reloading the page. No external libraries; no inline scripts (the page's CSP).
"use strict";
(function () {
  var root = document.getElementById("gallery-root");
  var menu = document.getElementById("cell-menu");
  if (!root || !menu) return;
  var summary = document.getElementById("cells-summary");
  var status = document.getElementById("gallery-status");
  var current = null; // data-key of the cell the menu is for
  var busy = false;

  function thumbs() { return Array.prototype.slice.call(root.querySelectorAll(".cell-thumb")); }
  function byKey(key) {
    var all = thumbs();
    for (var i = 0; i < all.length; i++) if (all[i].getAttribute("data-key") === key) return all[i];
    return null;
  }
  function items() { return Array.prototype.slice.call(menu.querySelectorAll("[role=menuitem]")); }

  function openMenu(btn) {
    current = btn.getAttribute("data-key");
    var r = btn.getBoundingClientRect();
    menu.hidden = false;
    var left = Math.max(4, Math.min(r.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - menu.offsetWidth - 4));
    menu.style.left = left + "px";
    menu.style.top = (r.bottom + window.scrollY + 4) + "px";
    btn.setAttribute("aria-expanded", "true");
    var first = items()[0];
    if (first) first.focus();
  }
  function closeMenu(refocus) {
    if (menu.hidden) return;
    menu.hidden = true;
    var btn = current && byKey(current);
    if (btn) {
      btn.setAttribute("aria-expanded", "false");
      if (refocus) btn.focus();
    }
  }

  function pick(key, label) {
    var btn = byKey(key);
    if (!btn || busy) return;
    busy = true;
    closeMenu(false);
    btn.classList.add("saving");
    window.smearscope.postJSON(btn.getAttribute("data-url"), { label: label }).then(function (res) {
      busy = false;
      if (!res.ok) {
        btn.classList.remove("saving");
        status.textContent = (res.data && res.data.error) || String(res.status);
        btn.focus();
        return;
      }
      summary.innerHTML = res.data.summary_html;
      root.innerHTML = res.data.gallery_html;
      status.textContent = res.data.slide.call_text + " " + res.data.slide.verified;
      var again = byKey(key);
      if (again) again.focus();
    }, function () {
      busy = false;
      btn.classList.remove("saving");
      status.textContent = "⚠";
    });
  }

  // The cell above or below: the nearest one by horizontal position in the previous/next row.
  function vertical(all, i, dir) {
    var here = all[i].getBoundingClientRect();
    var best = null, bestDx = Infinity, rowTop = null;
    for (var j = i + dir; j >= 0 && j < all.length; j += dir) {
      var r = all[j].getBoundingClientRect();
      if (Math.abs(r.top - here.top) < 2) continue; // same row
      if (rowTop === null) rowTop = r.top;
      if (Math.abs(r.top - rowTop) >= 2) break; // past the adjacent row
      var dx = Math.abs(r.left - here.left);
      if (dx < bestDx) { bestDx = dx; best = j; }
    }
    return best === null ? i : best;
  }

  root.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest(".cell-thumb");
    if (!btn) return;
    if (!menu.hidden && current === btn.getAttribute("data-key")) closeMenu(true);
    else openMenu(btn);
  });

  root.addEventListener("keydown", function (ev) {
    var btn = ev.target.closest && ev.target.closest(".cell-thumb");
    if (!btn) return;
    var all = thumbs();
    var i = all.indexOf(btn), j = i;
    if (ev.key === "ArrowRight") j = Math.min(all.length - 1, i + 1);
    else if (ev.key === "ArrowLeft") j = Math.max(0, i - 1);
    else if (ev.key === "ArrowDown") j = vertical(all, i, 1);
    else if (ev.key === "ArrowUp") j = vertical(all, i, -1);
    else if (ev.key === "Home") j = 0;
    else if (ev.key === "End") j = all.length - 1;
    else if (/^[0-9]$/.test(ev.key)) {
      var item = menu.querySelector('[role=menuitem][data-key="' + ev.key + '"]');
      if (item) { ev.preventDefault(); pick(btn.getAttribute("data-key"), item.getAttribute("data-label")); }
      return;
    } else return;
    ev.preventDefault();
    closeMenu(false);
    all[j].focus();
  });

  menu.addEventListener("click", function (ev) {
    var item = ev.target.closest && ev.target.closest("[role=menuitem]");
    if (item && current) pick(current, item.getAttribute("data-label"));
  });

  menu.addEventListener("keydown", function (ev) {
    var all = items();
    var i = all.indexOf(document.activeElement);
    if (ev.key === "Escape") { ev.preventDefault(); closeMenu(true); }
    else if (ev.key === "ArrowDown") { ev.preventDefault(); all[(i + 1) % all.length].focus(); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); all[(i - 1 + all.length) % all.length].focus(); }
    else if (ev.key === "Tab") closeMenu(true);
    else if (/^[0-9]$/.test(ev.key)) {
      var item = menu.querySelector('[role=menuitem][data-key="' + ev.key + '"]');
      if (item && current) { ev.preventDefault(); pick(current, item.getAttribute("data-label")); }
    }
  });

  document.addEventListener("click", function (ev) {
    if (!menu.hidden && !menu.contains(ev.target) && !root.contains(ev.target)) closeMenu(false);
  });
})();
