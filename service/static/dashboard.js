// C3 dashboard: live job progress over the API's server-sent events, nothing else.
"use strict";
(function () {
  const FINAL = ["succeeded", "failed", "cancelled"];
  const MAX_STREAMS = 4; // browsers allow ~6 connections per host: leave room for images
  const phases = JSON.parse(document.body.dataset.phases || "{}");

  function overall(progress, state) {
    if (state === "succeeded") return 1;
    if (!progress) return 0;
    const span = phases[progress.phase] || [0, 0];
    return span[0] + (span[1] - span[0]) * (progress.fraction || 0);
  }

  function show(el, progress, state) {
    const percent = Math.round(overall(progress, state) * 100);
    const box = el.querySelector("[data-role=progress]");
    if (box) {
      box.dataset.percent = String(percent);
      box.setAttribute("aria-valuenow", String(percent));
      box.querySelector(".bar").style.width = percent + "%";
      let text = percent + "%";
      if (progress && state !== "succeeded") text += " · " + progress.phase + " " + progress.step + "/" + (progress.stops_early && progress.phase === "training" ? "up to " : "") + progress.total_steps;
      box.querySelector("[data-role=progress-label]").textContent = text;
    }
    if (progress && typeof progress.confident_share === "number") {
      const c = el.querySelector("[data-role=confident]") || document.querySelector("[data-role=confident]");
      if (c) c.textContent = (progress.confident_share * 100).toFixed(1) + "%";
    }
  }

  function setState(el, state) {
    el.dataset.state = state;
    const badge = el.querySelector("[data-role=state]");
    if (badge) { badge.textContent = state; badge.className = "badge state-" + state; }
  }

  function finished(el, state) {
    setState(el, state);
    if (state === "succeeded") show(el, null, state);
    if (el.dataset.reloadOnFinish) setTimeout(function () { location.reload(); }, 400);
  }

  function follow(el) {
    const id = el.dataset.job;
    let last = null;
    const source = new EventSource("/inversions/" + encodeURIComponent(id) + "/events");
    source.addEventListener("progress", function (e) {
      last = JSON.parse(e.data);
      show(el, last, el.dataset.state === "queued" ? "running" : el.dataset.state);
      if (el.dataset.state === "queued") setState(el, "running");
    });
    source.addEventListener("state", function (e) {
      const state = JSON.parse(e.data).state;
      if (FINAL.includes(state)) { source.close(); finished(el, state); }
      else { setState(el, state); show(el, last, state); }
    });
  }

  function poll(el) {
    const id = el.dataset.job;
    fetch("/inversions/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (!job) return;
        show(el, job.progress, job.state);
        if (FINAL.includes(job.state)) finished(el, job.state);
        else { setState(el, job.state); setTimeout(function () { poll(el); }, 2000); }
      })
      .catch(function () { setTimeout(function () { poll(el); }, 5000); });
  }

  document.querySelectorAll("[data-live]").forEach(function (el, i) {
    if (i < MAX_STREAMS && window.EventSource) follow(el); else poll(el);
  });

  const refresh = document.querySelector("[data-refresh]");
  if (refresh) setTimeout(function () { location.reload(); }, Number(refresh.dataset.refresh));
})();
