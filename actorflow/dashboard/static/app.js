// actorflow dashboard: keep filters in the URL, refresh the live part when the journal changes.
(function () {
  "use strict";
  var filters = document.getElementById("filters");
  if (filters) {
    // submit without empty fields, so the address holds just the filters in use
    filters.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var params = new URLSearchParams();
      new FormData(filters).forEach(function (v, k) { if (String(v).trim() !== "") params.set(k, String(v).trim()); });
      var qs = params.toString();
      window.location.assign("/runs" + (qs ? "?" + qs : ""));
    });
    filters.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () { filters.requestSubmit(); });
    });
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) { if (!window.confirm(f.dataset.confirm)) ev.preventDefault(); });
  });
  var live = document.querySelector("[data-live]");
  var status = document.getElementById("live-status");
  if (!live) return;
  // the journal's change marker when the server read this page's data: a change that lands before the
  // first tick (an action applied by the engine while the page loads) still refreshes it
  var marker = live.dataset.marker ? Number(live.dataset.marker) : null, busy = false;
  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    fetch("/api/marker", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (m) {
      if (status) status.classList.remove("stale");
      if (marker === null || m.marker === marker) { marker = m.marker; return null; }
      marker = m.marker;
      return fetch(window.location.href, { headers: { "X-Fragment": "1" }, cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { live.innerHTML = html; document.body.dataset.refreshed = String(Date.now()); } });
    }).catch(function () { if (status) status.classList.add("stale"); })
      .finally(function () { busy = false; });
  }
  tick();
  window.setInterval(tick, 1000);
})();
