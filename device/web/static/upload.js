// Upload form: typing a scale selects "Typed"; choosing another scale clears the typed number, so what
// the form shows is what the station uses. No inline handlers (the page's CSP forbids them).
"use strict";
(function () {
  var typed = document.getElementById("scale-typed");
  var radio = document.getElementById("scale-typed-radio");
  if (!typed || !radio) return;
  typed.addEventListener("input", function () { if (typed.value.trim()) radio.checked = true; });
  typed.addEventListener("focus", function () { radio.checked = true; });
  document.querySelectorAll('input[name="um_per_px"]').forEach(function (r) {
    r.addEventListener("change", function () {
      if (r !== radio && r.checked) typed.value = "";
      if (r === radio && r.checked) typed.focus();
    });
  });
})();
