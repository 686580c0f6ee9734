// C3 dashboard: live job progress over the API's server-sent events, the start form's
// placeholders following the chosen method and recipe, and confirmation of deletes.
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

  // As service.dashboard.templating.duration: "45 s", "3 min 20 s", "2 h 5 min".
  function duration(seconds) {
    const whole = Math.round(seconds);
    if (whole < 60) return whole + " s";
    if (whole < 3600) return Math.floor(whole / 60) + " min " + (whole % 60) + " s";
    return Math.floor(whole / 3600) + " h " + Math.floor((whole % 3600) / 60) + " min";
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
    const eta = el.querySelector("[data-role=eta]");
    if (eta) {
      const left = progress && state === "running" && typeof progress.eta_seconds === "number";
      eta.textContent = left ? (progress.stops_early ? "at most " : "about ") + duration(progress.eta_seconds) + " left" : "";
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

  const start = document.getElementById("start-form");
  if (start && start.dataset.defaults) {
    const defaults = JSON.parse(start.dataset.defaults);
    const placeholders = function () {
      const byMethod = defaults[start.elements.method.value] || defaults.c3;
      const d = byMethod[start.elements.recipe.value] || byMethod.adaptive;
      start.elements.steps.placeholder = String(d.steps);
      start.elements.batch_size.placeholder = String(d.batch_size);
      start.querySelector("[data-role=steps-hint]").textContent = "(blank: " + (d.stops_early ? "up to " : "") + d.steps + ")";
      start.querySelector("[data-role=batch-hint]").textContent = "(blank: " + d.batch_size + ")";
      Object.keys(d.weights).forEach(function (w) {
        const input = start.elements["w_" + w];
        if (input) input.placeholder = d.weights[w];
      });
    };
    start.elements.method.addEventListener("change", placeholders);
    start.elements.recipe.addEventListener("change", placeholders);
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  });

  const refresh = document.querySelector("[data-refresh]");
  if (refresh) setTimeout(function () { location.reload(); }, Number(refresh.dataset.refresh));
})();
