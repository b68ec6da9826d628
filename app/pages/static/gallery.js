// The gallery viewer: tiles open a full-screen <dialog> with swipe, arrow keys, download, share
// and "Not me" (asks first; the gallery then offers Undo). Without script every tile links to the
// photo's own page, which has the same buttons.
(function () {
  "use strict";
  var tiles = Array.prototype.slice.call(document.querySelectorAll("#photo-grid .tile"));
  var viewer = document.getElementById("viewer");
  if (!tiles.length || !viewer || typeof viewer.showModal !== "function") return;

  var img = document.getElementById("viewer-image");
  var mark = document.getElementById("viewer-mark");
  var rect = mark.querySelector("rect");
  var count = document.getElementById("viewer-count");
  var download = document.getElementById("viewer-download");
  var share = document.getElementById("viewer-share");
  var notMe = document.getElementById("viewer-not-me");
  var confirmBox = document.getElementById("not-me-confirm");
  var prevButton = document.getElementById("viewer-prev");
  var nextButton = document.getElementById("viewer-next");
  var current = 0;
  var opener = null;

  function show(index) {
    current = (index + tiles.length) % tiles.length;
    var tile = tiles[current].dataset;
    img.src = tile.preview;
    img.alt = "Photo " + (current + 1) + " of " + tiles.length;
    count.textContent = (current + 1) + " / " + tiles.length;
    download.href = tile.original;
    confirmBox.action = tile.notMe;
    confirmBox.hidden = true;
    var box = tile.box ? tile.box.split(",").map(Number) : null;
    if (box && tile.width && tile.height) {
      mark.setAttribute("viewBox", "0 0 " + tile.width + " " + tile.height);
      rect.setAttribute("x", box[0]); rect.setAttribute("y", box[1]);
      rect.setAttribute("width", box[2] - box[0]); rect.setAttribute("height", box[3] - box[1]);
      rect.setAttribute("rx", (box[2] - box[0]) * 0.18);
      mark.hidden = false;
    } else {
      mark.hidden = true;
    }
    prevButton.hidden = nextButton.hidden = tiles.length < 2;
    // the next photo is fetched now, so a swipe shows it at once
    new Image().src = tiles[(current + 1) % tiles.length].dataset.preview;
  }

  tiles.forEach(function (tile, i) {
    tile.addEventListener("click", function (event) {
      if (event.metaKey || event.ctrlKey || event.shiftKey) return; // open in a new tab as usual
      event.preventDefault();
      opener = tile;
      show(i);
      viewer.showModal();
    });
  });

  viewer.addEventListener("close", function () {
    img.removeAttribute("src");
    if (opener) opener.focus();
  });
  document.getElementById("viewer-close").addEventListener("click", function () { viewer.close(); });
  prevButton.addEventListener("click", function () { show(current - 1); });
  nextButton.addEventListener("click", function () { show(current + 1); });
  viewer.addEventListener("keydown", function (event) {
    if (!confirmBox.hidden) return;
    if (event.key === "ArrowLeft") show(current - 1);
    if (event.key === "ArrowRight") show(current + 1);
  });

  // swipe: a mostly horizontal move of 50 px or more changes the photo
  var start = null;
  var stage = document.getElementById("viewer-stage");
  stage.addEventListener("pointerdown", function (e) { start = { x: e.clientX, y: e.clientY }; });
  stage.addEventListener("pointerup", function (e) {
    if (!start) return;
    var dx = e.clientX - start.x, dy = e.clientY - start.y;
    start = null;
    if (Math.abs(dx) > 50 && Math.abs(dx) > 1.5 * Math.abs(dy)) show(current + (dx < 0 ? 1 : -1));
  });
  stage.addEventListener("pointercancel", function () { start = null; });

  notMe.addEventListener("click", function () {
    confirmBox.hidden = false;
    document.getElementById("not-me-no").focus();
  });
  document.getElementById("not-me-no").addEventListener("click", function () {
    confirmBox.hidden = true;
    notMe.focus();
  });

  // Share: the photo file itself where the phone can (to messengers, social apps)
  if (navigator.canShare && window.File) {
    share.hidden = false;
    share.addEventListener("click", function () {
      var url = tiles[current].dataset.original;
      fetch(url).then(function (r) { return r.blob(); }).then(function (blob) {
        var file = new File([blob], "photo.jpg", { type: blob.type || "image/jpeg" });
        if (navigator.canShare({ files: [file] })) return navigator.share({ files: [file] });
        throw new Error("cannot share files");
      }).catch(function () { /* the runner cancelled, or the browser cannot share files */ });
    });
  }
  var shareGallery = document.getElementById("share-gallery");
  if (shareGallery && (navigator.share || navigator.clipboard)) {
    shareGallery.hidden = false;
    shareGallery.addEventListener("click", function () {
      var data = { title: shareGallery.dataset.shareTitle, url: window.location.href.split("?")[0] };
      if (navigator.share) { navigator.share(data).catch(function () {}); return; }
      navigator.clipboard.writeText(data.url).then(function () {
        shareGallery.textContent = "Link copied";
        // a focused button's new text is not read out; a status region is
        var status = document.getElementById("share-status");
        if (status) status.textContent = "The link to your gallery is copied.";
      });
    });
  }
})();
