// The selfie form, made better with script (it works without): preview, shrink, progress, retry.
// The photo is shrunk in the browser to ~1600 px JPEG before upload: a face needs a few hundred KB,
// not the 3-8 MB a phone camera writes. The form is sent with XHR for upload progress; a dropped
// connection is retried with backoff, and the chosen selfie stays in memory after any error.
(function () {
  "use strict";
  var form = document.getElementById("selfie-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) return;

  var MAX_SIDE = parseInt(form.dataset.maxSide || "1600", 10);
  var inputs = [document.getElementById("selfie"), document.getElementById("selfie-library")];
  var previewBox = document.getElementById("selfie-preview-box");
  var preview = document.getElementById("selfie-preview");
  var kept = document.getElementById("selfie-kept");
  var facesBox = document.getElementById("faces");
  var faceChoices = document.getElementById("face-choices");
  var submit = document.getElementById("submit");
  var progress = document.getElementById("upload-progress");
  var status = document.getElementById("upload-message");
  var retry = document.getElementById("retry");
  var chosen = null; // the Blob to send (shrunk when the browser could decode it)
  var preparing = Promise.resolve(); // the shrink of the latest choice; a quick tap on send waits for it
  var previewUrl = null;
  var RETRY_DELAYS = [1000, 3000, 7000];

  function say(text) { status.textContent = text; }

  function showPreview(blob) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(blob);
    preview.src = previewUrl;
    previewBox.hidden = false;
  }

  function shrink(file) {
    // createImageBitmap applies the EXIF orientation; a HEIC a browser cannot decode is sent as is.
    if (!window.createImageBitmap || !/^image\/(jpeg|png|webp)$/.test(file.type)) return Promise.resolve(file);
    return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bitmap) {
      var scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
      if (scale === 1 && file.size < 1500000) return file;
      var canvas = document.createElement("canvas");
      canvas.width = Math.round(bitmap.width * scale);
      canvas.height = Math.round(bitmap.height * scale);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) { resolve(blob || file); }, "image/jpeg", 0.86);
      });
    }).catch(function () { return file; });
  }

  function clearFaces() {
    facesBox.hidden = true;
    faceChoices.textContent = "";
  }

  inputs.forEach(function (input) {
    if (!input) return;
    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      if (!file) return;
      inputs.forEach(function (other) { if (other && other !== input) other.value = ""; });
      if (kept) { kept.remove(); kept = null; }
      clearFaces();
      say("Preparing your photo…");
      preparing = shrink(file).then(function (blob) {
        chosen = blob;
        showPreview(blob);
        say("");
        inputs[0].required = false;
      });
    });
  });

  function showError(text, field) {
    var box = document.getElementById("error");
    if (!box) {
      box = document.createElement("div");
      box.id = "error";
      box.className = "alert alert-error";
      box.setAttribute("role", "alert");
      box.tabIndex = -1;
      box.innerHTML = '<h2 class="alert-title">That did not work</h2><p></p>';
      form.parentNode.insertBefore(box, form);
    }
    box.querySelector("p").textContent = text;
    box.querySelector("h2").textContent = field === "face" ? "One more step" : "That did not work";
    document.querySelectorAll(".field-error.from-script").forEach(function (el) { el.remove(); });
    document.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    var target = field && field !== "face" && document.getElementById(field);
    if (target) {
      var note = document.createElement("p");
      note.className = "field-error from-script";
      note.id = field + "-error";
      note.textContent = text;
      target.parentNode.appendChild(note);
      if (target.tagName === "INPUT") {
        target.setAttribute("aria-invalid", "true");
        target.setAttribute("aria-describedby", ((target.getAttribute("aria-describedby") || "") + " " + note.id).trim());
      }
    }
    box.focus();
  }

  function showFaces(faces) {
    faceChoices.textContent = "";
    faces.forEach(function (face, i) {
      var label = document.createElement("label");
      label.className = "face-choice";
      var radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "face";
      radio.value = face.index;
      radio.required = true;
      var img = document.createElement("img");
      img.src = face.crop;
      img.alt = "";
      img.width = 96; img.height = 96;
      var span = document.createElement("span");
      // faces come left to right: say where each one is (its image alone names nothing)
      span.textContent = i === 0 ? "Far left" : i === faces.length - 1 ? "Far right" : (i + 1) + ". from the left";
      label.append(radio, img, span);
      faceChoices.appendChild(label);
    });
    facesBox.hidden = false;
  }

  function busy(on) {
    submit.disabled = on;
    submit.textContent = on ? "Sending…" : "Find my photos";
    progress.hidden = !on;
    if (on) retry.hidden = true;
  }

  function body() {
    var data = new FormData(form);
    data.delete("selfie");
    if (chosen) data.append("selfie", chosen, "selfie.jpg");
    return data;
  }

  function send(attempt) {
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.timeout = 120000;
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) return;
      var pct = Math.round(100 * e.loaded / e.total);
      progress.value = pct;
      progress.textContent = pct + "%";
      say(pct < 100 ? "Uploading your selfie: " + pct + "%" : "Looking for your face…");
    };
    xhr.onload = function () {
      var answer = null;
      try { answer = JSON.parse(xhr.responseText); } catch (e) { /* a proxy's HTML error page */ }
      if (xhr.status >= 200 && xhr.status < 300 && answer && answer.redirect) {
        say("Done! Taking you to your confirmation…");
        window.location.assign(answer.redirect);
        return;
      }
      busy(false);
      say("");
      if (xhr.status >= 500 && xhr.status !== 503 && attempt < RETRY_DELAYS.length) return later(attempt);
      if (answer && answer.faces && answer.faces.length) showFaces(answer.faces);
      showError(answer && answer.error ? answer.error :
        "Something went wrong on our side (" + xhr.status + "). Your selfie is still here: please try again.",
        answer && answer.field);
      if (!answer || xhr.status >= 500) retry.hidden = false;
    };
    xhr.onerror = xhr.ontimeout = function () {
      if (attempt < RETRY_DELAYS.length) return later(attempt);
      busy(false);
      say("");
      showError("We lost the connection. Your selfie is still here: check your signal and tap Try again.");
      retry.hidden = false;
    };
    busy(true);
    xhr.send(body());
  }

  function later(attempt) {
    var wait = RETRY_DELAYS[attempt];
    busy(true);
    if (navigator.onLine === false) {
      // no network at all: wait for it instead of using up the retries
      say("You are offline. We send your selfie as soon as you are back online. Trying again…");
      window.addEventListener("online", function () { send(attempt); }, { once: true });
      return;
    }
    say("Connection dropped. Trying again in " + Math.round(wait / 1000) + " s…");
    setTimeout(function () { send(attempt + 1); }, wait);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    preparing.then(function () {
      if (!chosen && !kept) {
        showError("Please add a selfie: take one, or choose a photo of your face.", "selfie");
        return;
      }
      send(0);
    });
  });
  retry.addEventListener("click", function () { send(0); });
})();
