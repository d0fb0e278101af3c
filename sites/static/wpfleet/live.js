// Keeps a site's or a job's page (and the list of sites) current while a job
// is open: polls a small JSON endpoint and reloads the page when what it
// shows has changed. The server renders the marker only while a job is open,
// so a finished page stops polling by itself.
(function () {
  "use strict";

  var INTERVAL_MS = 1500;
  var MAX_BACKOFF_MS = 30000;

  function start() {
    var marker = document.getElementById("wpfleet-live");
    if (!marker || !window.fetch) {
      return;
    }
    var url = marker.dataset.url;
    var seen = marker.dataset.fingerprint;
    var goneUrl = marker.dataset.goneUrl;
    var text = marker.querySelector(".wpf-live-text");
    var normalText = text ? text.textContent : "";
    var failures = 0;

    function later(ms) {
      window.setTimeout(tick, ms);
    }

    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status === 404) {
            // The site (or job) is gone: its deletion finished.
            window.location.assign(goneUrl);
            return null;
          }
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (data) {
          if (data === null) {
            return;
          }
          if (failures) {
            failures = 0;
            marker.classList.remove("wpf-stale");
            if (text) { text.textContent = normalText; }
          }
          if (data.fingerprint !== seen) {
            if (marker.dataset.keepSelection && document.querySelector("input.action-select:checked")) {
              // Reloading would drop the operator's selection: offer it instead.
              marker.classList.add("wpf-stale");
              if (text) { text.innerHTML = 'Sites on this page changed. <a href="">Reload</a> to see them.'; }
              return;
            }
            window.location.reload();
            return;
          }
          later(INTERVAL_MS);
        })
        .catch(function () {
          // The panel restarting, or the session gone: keep trying, more slowly.
          failures += 1;
          marker.classList.add("wpf-stale");
          if (text) { text.textContent = "Lost contact with the panel; retrying…"; }
          later(Math.min(MAX_BACKOFF_MS, INTERVAL_MS * Math.pow(2, failures)));
        });
    }

    later(INTERVAL_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
