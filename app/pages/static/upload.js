// The event page's uploader: many photos and zips, each sent in pieces that survive a dropped
// connection (retried with backoff until the network is back) and a closed tab (the upload id is
// kept in localStorage per file; choosing the same file again carries on from the server's offset).
// Without script the form posts the files in one request.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.XMLHttpRequest || !window.localStorage) return;

  var input = document.getElementById("files");
  var list = document.getElementById("upload-list");
  var dropzone = document.getElementById("dropzone");
  var overall = document.getElementById("overall");
  var overallBar = document.getElementById("overall-progress");
  var overallText = document.getElementById("overall-text");
  var submit = document.getElementById("upload-submit");
  var csrf = document.querySelector("meta[name=csrf-token]").content;
  var base = form.dataset.uploadsUrl;
  var PARALLEL = 2;
  var jobs = [];
  var queue = [];
  var running = 0;

  submit.hidden = true; // files start as soon as they are chosen or dropped

  function key(file) {
    return "finishline-upload:" + base + ":" + file.name + ":" + file.size + ":" + file.lastModified;
  }

  function human(bytes) {
    if (bytes < 1024 * 1024) return Math.max(1, Math.round(bytes / 1024)) + " KB";
    if (bytes < 1024 * 1024 * 1024) return (bytes / 1024 / 1024).toFixed(1) + " MB";
    return (bytes / 1024 / 1024 / 1024).toFixed(2) + " GB";
  }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function backOnline(ms) {
    // offline: carry on the moment the network is back; otherwise after `ms`
    if (navigator.onLine !== false) return sleep(ms);
    return new Promise(function (resolve) { window.addEventListener("online", function () { resolve(); }, { once: true }); });
  }

  function api(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json", "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) { return { status: r.status, data: data }; });
    });
  }

  function putPiece(job, offset, blob) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", base + "/" + job.id + "?offset=" + offset);
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.timeout = 300000;
      xhr.upload.onprogress = function (e) { job.inflight = e.loaded; render(job); };
      xhr.onload = function () {
        var data = {};
        try { data = JSON.parse(xhr.responseText); } catch (e) { /* not ours */ }
        resolve({ status: xhr.status, data: data });
      };
      xhr.onerror = xhr.ontimeout = xhr.onabort = function () { resolve({ status: 0, data: {} }); };
      xhr.send(blob);
    });
  }

  function addJob(file) {
    var li = document.createElement("li");
    li.className = "upload-item";
    li.innerHTML = '<span class="name"></span><span class="state"></span><progress max="100" value="0"></progress>';
    li.querySelector(".name").textContent = file.name;
    list.appendChild(li);
    var job = { file: file, li: li, sent: 0, inflight: 0, state: "Waiting", done: false };
    li.querySelector("progress").setAttribute("aria-label", "Upload of " + file.name);
    jobs.push(job);
    queue.push(job);
    render(job);
    overall.hidden = false;
    pump();
  }

  function render(job) {
    var pct = job.file.size ? Math.min(100, Math.round(100 * (job.sent + job.inflight) / job.file.size)) : 0;
    job.li.querySelector("progress").value = job.done ? 100 : pct;
    job.li.querySelector(".state").textContent = job.state;
    var total = 0, sent = 0, finished = 0;
    jobs.forEach(function (j) {
      total += j.file.size;
      sent += j.done ? j.file.size : Math.min(j.file.size, j.sent + j.inflight);
      if (j.done) finished += 1;
    });
    overallBar.value = total ? Math.round(100 * sent / total) : 0;
    overallText.textContent = finished + " of " + jobs.length + " files · " + human(sent) + " of " + human(total);
  }

  function finish(job, text, kind) {
    job.done = kind !== "error";
    job.state = text;
    job.li.classList.add(kind === "error" ? "is-error" : "is-done");
    job.inflight = 0;
    render(job);
  }

  function describe(result) {
    var added = (result.photos || []).filter(function (p) { return !p.duplicate; }).length;
    var dupes = (result.photos || []).length - added;
    var refused = result.rejected || [];
    var parts = [];
    parts.push(added + " photo" + (added === 1 ? "" : "s") + " added");
    if (dupes) parts.push(dupes + " already there");
    if (refused.length) parts.push(refused.length + " refused: " + refused[0].detail);
    return { text: parts.join(", "), failed: refused.length && !added && !dupes };
  }

  function start(job) {
    var saved = localStorage.getItem(key(job.file));
    var resume = saved ? api("GET", base + "/" + saved) : Promise.resolve({ status: 404 });
    return resume.then(function (answer) {
      if (answer.status === 200 && answer.data.size === job.file.size) {
        job.id = answer.data.id;
        job.sent = answer.data.offset;
        job.chunk = answer.data.chunk_bytes;
        job.status = answer.data.status;
        job.result = answer.data.result;
        if (job.sent > 0) job.state = "Resuming at " + human(job.sent);
        return;
      }
      return api("POST", base, { filename: job.file.name, size: job.file.size }).then(function (created) {
        if (created.status !== 201) throw new Error(created.data.detail || created.data.error || "refused (" + created.status + ")");
        job.id = created.data.id;
        job.chunk = created.data.chunk_bytes;
        job.status = created.data.status;
        localStorage.setItem(key(job.file), job.id);
      });
    });
  }

  function send(job, attempt) {
    if (job.status !== "receiving") return Promise.resolve();
    if (job.sent >= job.file.size) return Promise.resolve();
    var piece = job.file.slice(job.sent, Math.min(job.file.size, job.sent + job.chunk));
    if (!attempt) job.state = "Uploading";
    render(job);
    return putPiece(job, job.sent, piece).then(function (answer) {
      job.inflight = 0;
      if (answer.status === 200 || answer.status === 409) {
        job.sent = answer.data.offset;
        job.status = answer.data.status;
        return send(job, 0);
      }
      if (answer.status === 401) throw new Error("Signed out: sign in again, then choose the file again to resume.");
      if (answer.status >= 400 && answer.status < 500 && answer.status !== 408 && answer.status !== 429) {
        throw new Error(answer.data.detail || answer.data.error || "refused (" + answer.status + ")");
      }
      // dropped connection, a restart, overload: wait and carry on from the server's offset
      var wait = Math.min(30000, 1000 * Math.pow(2, Math.min(attempt || 0, 5)));
      job.state = navigator.onLine === false ? "Connection lost: waiting for the network"
        : "Connection lost: retrying in " + Math.round(wait / 1000) + " s";
      render(job);
      return backOnline(wait).then(function () {
        return api("GET", base + "/" + job.id).then(function (state) {
          if (state.status === 200) { job.sent = state.data.offset; job.status = state.data.status; }
          return send(job, (attempt || 0) + 1);
        }, function () { return send(job, (attempt || 0) + 1); });
      });
    });
  }

  function waitForResult(job) {
    if (job.status === "done") return Promise.resolve(job.result || {});
    if (job.status === "failed") {  // for good: choosing the file again starts a new upload
      localStorage.removeItem(key(job.file));
      return Promise.reject(new Error((job.result || {}).error || "it could not be put together"));
    }
    job.state = "Unpacking and checking";
    render(job);
    return sleep(1000).then(function () {
      return api("GET", base + "/" + job.id).then(function (state) {
        job.status = state.data.status;
        job.result = state.data.result;
        return waitForResult(job);
      }, function () { return waitForResult(job); });
    });
  }

  function run(job) {
    running += 1;
    start(job)
      .then(function () { return send(job, 0); })
      .then(function () { return waitForResult(job); })
      .then(function (result) {
        localStorage.removeItem(key(job.file));
        var summary = describe(result);
        finish(job, summary.text, summary.failed ? "error" : "done");
      })
      .catch(function (error) { finish(job, "Not uploaded: " + error.message, "error"); })
      .then(function () { running -= 1; pump(); });
  }

  function pump() {
    while (running < PARALLEL && queue.length) run(queue.shift());
  }

  function take(files) {
    Array.prototype.forEach.call(files, addJob);
    input.value = "";
  }

  input.addEventListener("change", function () { take(input.files); });
  form.addEventListener("submit", function (event) { event.preventDefault(); take(input.files); });
  ["dragenter", "dragover"].forEach(function (name) {
    dropzone.addEventListener(name, function (event) { event.preventDefault(); dropzone.classList.add("is-over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropzone.addEventListener(name, function () { dropzone.classList.remove("is-over"); });
  });
  dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) take(event.dataTransfer.files);
  });
  window.addEventListener("beforeunload", function (event) {
    if (running || queue.length) { event.preventDefault(); event.returnValue = ""; }
  });
})();
