// Dashboard helpers: live counts (polling the event's stats), confirmations, copy buttons.
(function () {
  "use strict";

  // Live counts: every [data-stat] element shows one field of the stats; the <progress> shows
  // done + failed out of all photos. Polls every 2 s while photos are in flight, else every 10 s.
  var live = document.getElementById("live");
  if (live && window.fetch) {
    var bar = document.getElementById("processing-progress");
    var text = document.getElementById("processing-text");
    var poll = function () {
      fetch(live.dataset.statsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (stats) {
          document.querySelectorAll("[data-stat]").forEach(function (el) {
            var value = stats[el.dataset.stat];
            if (value !== undefined && el.textContent !== String(value)) el.textContent = value;
          });
          var processed = stats.photos_done + stats.photos_failed;
          bar.max = Math.max(stats.photos, 1);
          bar.value = processed;
          bar.textContent = processed + " of " + stats.photos;
          text.textContent = processed + " of " + stats.photos + " photos processed";
          var busy = stats.photos_pending + stats.photos_processing > 0;
          setTimeout(poll, document.hidden ? 15000 : busy ? 2000 : 5000);
        })
        .catch(function () { setTimeout(poll, 10000); });
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
