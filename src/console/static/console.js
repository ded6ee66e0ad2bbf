// Live refresh: a page with data-refresh="N" reloads every N seconds while its tab is visible,
// and stops once something has been typed or ticked, so a half-written note is never lost.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!seconds) { return; }
  var touched = false;
  var timer = null;
  document.addEventListener("input", function () { touched = true; });
  document.addEventListener("change", function () { touched = true; });
  function arm() {
    clearTimeout(timer);
    if (touched || document.visibilityState !== "visible") { return; }
    timer = setTimeout(function () {
      if (!touched && document.visibilityState === "visible") { window.location.reload(); }
    }, seconds * 1000);
  }
  document.addEventListener("visibilitychange", arm);
  arm();
})();
