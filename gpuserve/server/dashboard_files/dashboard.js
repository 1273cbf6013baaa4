// gpuserve's live dashboard: polls GET /api/dashboard with the admin key and draws every endpoint.
//
// The key: typed into the login field, or passed once as /dashboard#key=KEY (the fragment never
// reaches the server and is removed from the address bar at once). It is kept in sessionStorage
// (this tab only, gone when it closes) and sent as `Authorization: Bearer KEY`. A worker's log
// opens in the page (#log=WORKER), fetched with the same header.
"use strict";

(function () {
  const KEY_ITEM = "gpuserve.adminKey";
  const POLL_MS = 2000;
  const STATE_COLORS = {
    INITIALIZING: "#bf8700", IDLE: "#57606a", RUNNING: "#1a7f37",
    THROTTLED: "#8250df", OUTDATED: "#0969da", UNHEALTHY: "#cf222e",
  };
  const $ = (id) => document.getElementById(id);
  const charts = new Map(); // "endpoint/chart" -> uPlot
  const cards = new Map(); // endpoint id -> its card's parts
  let timer = null;
  let lastOk = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // -- the key --------------------------------------------------------------------------------

  function keyFromFragment() {
    const m = location.hash.match(/^#key=(.+)$/);
    if (m) {
      sessionStorage.setItem(KEY_ITEM, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_ITEM);
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("endpoints").hidden = true;
    $("log").hidden = true;
    $("logout").hidden = true;
    $("auth-error").textContent = message || "";
    $("status").textContent = "not signed in";
    $("key").focus();
  }

  // -- numbers ----------------------------------------------------------------------------------

  function ms(v) {
    if (v === null || v === undefined) return "–";
    return v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + " s" : v.toFixed(v >= 100 ? 0 : 1) + " ms";
  }
  function usd(v) { return "$" + (v < 0.01 ? v.toFixed(5) : v.toFixed(2)); }
  function dur(s) {
    if (s < 60) return s.toFixed(0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function clock(tS) { return timeLabel(new Date(tS * 1000)); }

  // -- charts -----------------------------------------------------------------------------------

  const timeLabel = uPlot.fmtDate("{H}:{mm}:{ss}"); // one line, the same format across a minute's change
  function chartWidth(box) { return Math.max(260, box.clientWidth - 4); }

  // Counts change in steps; a stacked chart fills each series down to zero, drawn top first.
  // `how`: {stacked, integer}; counts of workers and jobs get whole-number ticks only.
  function makeChart(box, series, yLabel, how) {
    const stacked = Boolean(how.stacked);
    const steps = uPlot.paths.stepped({ align: 1 });
    const opts = {
      width: chartWidth(box),
      height: 180,
      series: [{}, ...series.map((s) => ({
        label: s.label, stroke: s.color, width: stacked ? 1 : 2, spanGaps: false,
        fill: stacked ? s.color + "cc" : undefined, paths: s.steps ? steps : undefined,
      }))],
      axes: [{ space: 70, values: (u, splits) => splits.map((v) => timeLabel(new Date(v * 1000))) }, { label: yLabel, size: 50, incrs: how.integer ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000] : undefined }],
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(stacked ? 1 : 0, max) * 1.1 || 1] } },
      legend: { live: false },
    };
    return new uPlot(opts, [[], ...series.map(() => [])], box);
  }

  function drawChart(id, box, series, yLabel, data, how) {
    let u = charts.get(id);
    if (!u) {
      u = makeChart(box, series, yLabel, how || {});
      charts.set(id, u);
    }
    u.setData(data);
  }

  // Workers by state, stacked from the bottom (running) up; series i holds states i.. summed.
  const STACK = ["UNHEALTHY", "OUTDATED", "THROTTLED", "INITIALIZING", "IDLE", "RUNNING"];
  function stackedWorkers(s) {
    return STACK.map((_, i) => s.tS.map((_, t) => STACK.slice(i).reduce((sum, st) => sum + s.workers[st][t], 0)));
  }

  window.addEventListener("resize", () => {
    for (const u of charts.values()) u.setSize({ width: chartWidth(u.root.parentElement), height: 180 });
  });

  // -- an endpoint's card --------------------------------------------------------------------------

  function tile(name, label) {
    const value = el("div", { class: "value" }, "–");
    const sub = el("div", { class: "sub" }, "");
    return { node: el("div", { class: "tile", "data-tile": name }, el("div", { class: "label" }, label), value, sub), value, sub };
  }

  function card(ep) {
    let c = cards.get(ep.id);
    if (c) return c;
    const tiles = {
      workers: tile("workers", "Workers"), queue: tile("queue", "Queue"), delay: tile("delay", "Queue delay p50 / p99"),
      execution: tile("execution", "Execution p50 / p99"), cold: tile("cold", "Cold starts"), cost: tile("cost", "Cost so far"),
    };
    const box = () => el("div", { class: "plot" });
    const plots = { workers: box(), queue: box(), latency: box() };
    const decisions = el("ol", {});
    const last = el("p", { class: "muted" }, "");
    const tbody = el("tbody", {});
    const node = el("section", { class: "endpoint", "data-endpoint": ep.id },
      el("h2", {}, ep.id),
      el("div", { class: "muted meta" }, ""),
      el("div", { class: "tiles" }, ...Object.values(tiles).map((t) => t.node)),
      el("p", { class: "waiting" }, ""),
      el("div", { class: "charts" },
        el("div", { class: "chart" }, el("h3", {}, "Workers by state"), plots.workers),
        el("div", { class: "chart" }, el("h3", {}, "Queue depth"), plots.queue),
        el("div", { class: "chart" }, el("h3", {}, "Latency (last minute)"), plots.latency)),
      el("div", { class: "lower" },
        el("div", { class: "decisions" }, el("h3", {}, "Scale decisions"), last, decisions),
        el("div", { class: "workers" }, el("h3", {}, "Workers"),
          el("table", {},
            el("thead", {}, el("tr", {}, ...["worker", "state", "host", "GPU", "uptime", "jobs", "cold start", "cost", ""]
              .map((h) => el("th", {}, h)))),
            tbody))));
    $("endpoints").append(node);
    c = { node, tiles, plots, decisions, last, tbody };
    cards.set(ep.id, c);
    return c;
  }

  function renderEndpoint(ep) {
    const c = card(ep);
    c.node.querySelector(".meta").textContent =
      `${ep.type} · ${ep.policy} · workers ${ep.minWorkers}–${ep.maxWorkers} · idle timeout ${ep.idleTimeoutS} s · ` +
      (ep.gpuType ? ep.gpuType : "CPU") + (ep.version ? ` · version ${ep.version}` : "");

    const counts = {};
    for (const w of ep.workers) counts[w.state] = (counts[w.state] || 0) + 1;
    c.tiles.workers.value.textContent = String(ep.workers.length);
    c.tiles.workers.sub.textContent = Object.entries(counts).map(([s, n]) => `${n} ${s.toLowerCase()}`).join(", ") || "none";
    c.tiles.queue.value.textContent = String(ep.queue.inQueue);
    c.tiles.queue.sub.textContent = `${ep.queue.inProgress} in progress`;
    c.tiles.delay.value.textContent = `${ms(ep.latencyMs.delayP50)} / ${ms(ep.latencyMs.delayP99)}`;
    c.tiles.execution.value.textContent = `${ms(ep.latencyMs.executionP50)} / ${ms(ep.latencyMs.executionP99)}`;
    c.tiles.cold.value.textContent = String(ep.coldStarts.total);
    c.tiles.cold.sub.textContent = Object.entries(ep.coldStarts.byKind).map(([k, n]) => `${n} ${k}`).join(", ");
    c.tiles.cost.value.textContent = usd(ep.cost.costUsd);
    c.tiles.cost.sub.textContent = `${ep.cost.gpuSeconds.toFixed(1)} GPU-s`;
    c.node.querySelector(".waiting").textContent = ep.waiting ? `Queued jobs wait: ${ep.waiting.reason}` : "";

    const s = ep.series;
    if (s && s.tS.length) {
      drawChart(ep.id + "/workers", c.plots.workers,
        STACK.map((st) => ({ label: st.toLowerCase(), color: STATE_COLORS[st], steps: true })),
        "workers", [s.tS, ...stackedWorkers(s)], { stacked: true, integer: true });
      drawChart(ep.id + "/queue", c.plots.queue,
        [{ label: "in queue", color: "#bf8700", steps: true }, { label: "in progress", color: "#1a7f37", steps: true }],
        "jobs", [s.tS, s.inQueue, s.inProgress], { integer: true });
      drawChart(ep.id + "/latency", c.plots.latency,
        [{ label: "delay p50", color: "#54aeff" }, { label: "delay p99", color: "#0969da" },
         { label: "exec p50", color: "#ff8182" }, { label: "exec p99", color: "#cf222e" }],
        "ms", [s.tS, s.delayP50Ms, s.delayP99Ms, s.executionP50Ms, s.executionP99Ms]);
    }

    c.last.textContent = ep.lastDecision
      ? `Latest: wants ${ep.lastDecision.desiredWorkers ?? "no change"} (${ep.lastDecision.reason})`
      : "No decision yet.";
    c.decisions.replaceChildren(...ep.actions.map((a) => {
      const what = [a.start ? `+${a.start} start` : "", a.stop.length ? `stop ${a.stop.join(", ")}` : ""].filter(Boolean).join(", ");
      return el("li", { class: "decision" }, el("span", { class: "when" }, clock(a.atS) + " "), `${what} → ${a.target}: `, a.reason);
    }));
    if (!ep.actions.length) c.decisions.append(el("li", { class: "muted" }, "no workers started or stopped yet"));

    c.tbody.replaceChildren(...ep.workers.map((w) => el("tr", { class: "worker", "data-worker": w.id },
      el("td", { class: "id" }, w.id),
      el("td", {}, el("span", { class: "state state-" + w.state }, w.state + (w.draining ? " (draining)" : "")),
        // UNHEALTHY's cause (an exit code, an image that cannot be pulled), under the badge.
        ...(w.failure ? [el("div", { class: "failure" }, w.failure)] : [])),
      el("td", {}, w.host),
      el("td", {}, w.gpu),
      el("td", { class: "num" }, dur(w.uptimeS)),
      el("td", { class: "num" }, `${w.inFlight}/${w.capacity}`),
      el("td", { class: "num" }, w.coldStartS === null ? "–" : w.coldStartS.toFixed(2) + " s"),
      el("td", { class: "num" }, usd(w.costUsd)),
      el("td", {}, el("a", { href: "#log=" + encodeURIComponent(w.id), class: "log-link" }, "log")))));
    if (!ep.workers.length) c.tbody.append(el("tr", { class: "no-workers" }, el("td", { colspan: "9", class: "muted" }, "no workers (scaled to zero)")));
  }

  // -- polling ------------------------------------------------------------------------------------

  async function poll() {
    clearTimeout(timer);
    let r;
    try {
      r = await fetch("/api/dashboard", { headers: authHeaders(), cache: "no-store" });
    } catch (e) {
      $("status").textContent = "server unreachable, retrying…";
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    if (r.status === 401 || r.status === 403) {
      const body = await r.json().catch(() => ({}));
      showLogin(body.error || `HTTP ${r.status}`);
      return; // until a key is given
    }
    if (!r.ok) {
      $("status").textContent = `HTTP ${r.status}, retrying…`;
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    const data = await r.json();
    $("login").hidden = true;
    $("endpoints").hidden = false;
    $("logout").hidden = !sessionStorage.getItem(KEY_ITEM);
    $("host").textContent = `on ${data.host}`;
    const seen = new Set(data.endpoints.map((e) => e.id));
    for (const [id, c] of cards) {
      if (!seen.has(id)) { c.node.remove(); cards.delete(id); for (const k of [...charts.keys()]) if (k.startsWith(id + "/")) charts.delete(k); }
    }
    data.endpoints.forEach(renderEndpoint);
    if (!data.endpoints.length) $("endpoints").replaceChildren(el("p", { class: "muted" }, "This server has no endpoints."));
    lastOk = Date.now();
    $("status").textContent = `updated ${timeLabel(new Date(lastOk))}`;
    await refreshLog();
    timer = setTimeout(poll, POLL_MS);
  }

  // -- a worker's log ----------------------------------------------------------------------------

  function logWorker() {
    const m = location.hash.match(/^#log=(.+)$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  async function refreshLog() {
    const worker = logWorker();
    $("log").hidden = worker === null;
    if (worker === null) return;
    $("log-worker").textContent = worker;
    const r = await fetch(`/api/workers/${encodeURIComponent(worker)}/logs?tail=200`, { headers: authHeaders(), cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    $("log-text").textContent = r.ok ? (body.logs || "(nothing written yet)") : (body.error || `HTTP ${r.status}`);
  }

  // -- start ----------------------------------------------------------------------------------------

  function start() {
    keyFromFragment();
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(KEY_ITEM, $("key").value.trim());
      $("key").value = "";
      poll();
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_ITEM);
      clearTimeout(timer);
      showLogin("");
    });
    $("log-close").addEventListener("click", (ev) => {
      ev.preventDefault();
      history.replaceState(null, "", location.pathname + location.search);
      $("log").hidden = true;
    });
    window.addEventListener("hashchange", () => {
      if (location.hash.startsWith("#key=")) { keyFromFragment(); poll(); } else refreshLog();
    });
    poll();
  }

  start();
})();
