// The live tail: asks the explorer every two seconds for the rows after the
// newest one shown and puts them on top. The rows are HTML the explorer
// rendered (and escaped); nothing from the ledger is interpreted here.
(function () {
  "use strict";
  var body = document.getElementById("tail-rows");
  var state = document.getElementById("tail-state");
  if (!body) { return; }
  function newest() {
    var first = body.querySelector("tr[data-seq]");
    return first ? first.getAttribute("data-seq") : "";
  }
  function poll() {
    var after = newest();
    fetch("/tail/rows" + (after === "" ? "" : "?after=" + encodeURIComponent(after)), { cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        if (html.trim() !== "") { body.insertAdjacentHTML("afterbegin", html); }
        if (state) { state.textContent = "live, checked " + new Date().toISOString(); }
      })
      .catch(function (e) { if (state) { state.textContent = "paused: " + e.message; } })
      .then(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
})();
