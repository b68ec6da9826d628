// Dashboard helpers: live counts (polling the event's stats), confirmations, copy buttons.
(function () {
  "use strict";

  // Live counts: every [data-stat] element shows one field of the stats; the event page's
  // <progress> shows done + failed out of all photos, and #rematch the background rematch after a
  // threshold change (hidden when none runs; "finished" once one ran out while the page was open).
  // Polls every 2 s while photos are in flight or a rematch runs, else every 5 s; a page that only
  // shows the rematch (settings) stops polling once none runs.
  var live = document.querySelector("[data-stats-url]");
  if (live && window.fetch) {
    var bar = document.getElementById("processing-progress");
    var text = document.getElementById("processing-text");
    var rematch = document.getElementById("rematch");
    var poll = function () {
      fetch(live.dataset.statsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (stats) {
          document.querySelectorAll("[data-stat]").forEach(function (el) {
            var value = stats[el.dataset.stat];
            if (value !== undefined && el.textContent !== String(value)) el.textContent = value;
          });
          if (bar) {
            var processed = stats.photos_done + stats.photos_failed;
            bar.max = Math.max(stats.photos, 1);
            bar.value = processed;
            bar.textContent = processed + " of " + stats.photos;
            text.textContent = processed + " of " + stats.photos + " photos processed";
          }
          var rematching = stats.rematch_done < stats.rematch_total;
          if (rematch) showRematch(stats, rematching);
          var busy = rematching || (bar && stats.photos_pending + stats.photos_processing > 0);
          if (busy || bar) setTimeout(poll, document.hidden ? 15000 : busy ? 2000 : 5000);
        })
        .catch(function () { setTimeout(poll, 10000); });
    };
    var showRematch = function (stats, rematching) {
      var progress = document.getElementById("rematch-progress");
      progress.max = Math.max(stats.rematch_total, 1);
      progress.value = stats.rematch_done;
      progress.textContent = stats.rematch_done + " of " + stats.rematch_total;
      document.getElementById("rematch-running").hidden = !rematching;
      document.getElementById("rematch-status").textContent = rematching ? "" :
        "Rematch finished: all " + stats.rematch_total + " photos now use the new threshold.";
      if (rematching) rematch.hidden = false; // a finished one stays hidden unless it ran while we watched
    };
    setTimeout(poll, 1500);
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    if (!navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var field = document.getElementById(button.dataset.copy);
      navigator.clipboard.writeText(field.value).then(function () { button.textContent = "Copied"; });
    });
  });
})();
