// The orchestrator dashboard: polls /status and /api, renders with the DOM.
//
// Everything shown comes from job params, logs, errors and plugin manifests, i.e. from users:
// it is only ever put in the page as text (textContent, text nodes, setAttribute on plain
// attributes). Nothing here parses HTML from data, and the page's CSP forbids inline script.
"use strict";

(() => {
  const TOKEN_KEY = "orchestrator.apiToken";
  const POLL_MS = 2000;
  const LOG_POLL_MS = 1000;
  const LOG_BATCH = 500;
  const PAGE = 25;
  const STATES = ["queued", "deferred", "running", "succeeded", "failed", "cancelled"];
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const ui = {
    view: "overview",
    jobId: null,
    workflowId: null,
    filters: { state: "", plugin: "", queue: "" },
    offset: 0,
    status: null,
    plugins: [],
    lastOk: null,
    pollTimer: null,
    logTimer: null,
    logAfter: "-",
    logJob: null,
    generation: 0, // bumped when the view or its filters change: answers to an older ask are dropped
    chain: 0,
  };

  // -- DOM helpers (text only) --
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "onclick") node.addEventListener("click", value);
      else if (key === "disabled") node.disabled = true;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function stateBadge(state) {
    return el("span", { class: `state state-${state || "none"}`, text: state || "-" });
  }

  function jobLink(jobId) {
    return el("a", { href: `#job/${encodeURIComponent(jobId)}`, class: "mono", title: jobId, text: short(jobId) });
  }

  function workflowLink(id) {
    return el("a", { href: `#workflow/${encodeURIComponent(id)}`, class: "mono", title: id, text: short(id) });
  }

  function short(id) {
    const text = String(id ?? "");
    return text.length > 14 ? `${text.slice(0, 12)}…` : text;
  }

  function pretty(value) {
    if (value === null || value === undefined) return "—";
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function ago(iso) {
    if (!iso) return "-";
    const t = typeof iso === "number" ? iso * 1000 : Date.parse(iso);
    if (Number.isNaN(t)) return String(iso);
    const s = Math.round((Date.now() - t) / 1000);
    if (s < 0) return `in ${span(-s)}`;
    return `${span(s)} ago`;
  }

  function span(s) {
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function seconds(value) {
    return value === null || value === undefined ? "-" : `${Number(value).toFixed(2)}s`;
  }

  // -- the token and the API --
  function token() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function setToken(value) {
    try {
      if (value) localStorage.setItem(TOKEN_KEY, value);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      notify("the browser refused to store the token", true);
    }
    renderAuth();
    if (ui.jobId) startLog(ui.jobId); // a log refused for want of the token reads again
    rerender();
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json" };
    // Job data needs the token too (when the server has one): send it with every request.
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (opts.write) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: opts.write ? "POST" : "GET",
      headers,
      body: opts.write ? JSON.stringify(opts.body || {}) : undefined,
      cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null) q.set(key, value);
    return q.toString();
  }

  // -- notices --
  function notify(message, isError, link) {
    $("notice").hidden = false;
    $("notice").classList.toggle("error", Boolean(isError));
    $("notice-text").textContent = message;
    const a = $("notice-link");
    if (link) {
      a.hidden = false;
      a.textContent = link.text;
      a.setAttribute("href", link.href);
    } else {
      a.hidden = true;
    }
  }

  // -- writes --
  function actionButton(label, job, run) {
    const readOnly = !token();
    return el("button", {
      type: "button",
      class: `act act-${label.toLowerCase()}`,
      "data-job": job.job_id,
      disabled: readOnly,
      title: readOnly ? "read-only: paste the API token first" : `${label.toLowerCase()} this job`,
      text: label,
      onclick: (event) => {
        event.preventDefault();
        run(job, event.currentTarget);
      },
    });
  }

  async function retry(job, button) {
    if (!token()) {
      notify("read-only: paste the API token to retry jobs", true);
      return;
    }
    button.disabled = true;
    try {
      const out = await api(`/api/jobs/${encodeURIComponent(job.job_id)}/retry`, { write: true });
      notify(`job ${job.job_id} retried as ${out.job_id}`, false, { text: "open", href: `#job/${encodeURIComponent(out.job_id)}` });
      if (ui.view === "job") location.hash = `#job/${encodeURIComponent(out.job_id)}`;
      else rerender();
    } catch (e) {
      notify(`retry refused: ${e.message}`, true);
      button.disabled = false;
    }
  }

  async function cancel(job, button) {
    if (!token()) {
      notify("read-only: paste the API token to cancel jobs", true);
      return;
    }
    button.disabled = true;
    try {
      const out = await api(`/api/jobs/${encodeURIComponent(job.job_id)}/cancel`, { write: true });
      notify(`job ${job.job_id}: ${out.state}`);
      rerender();
    } catch (e) {
      notify(`cancel refused: ${e.message}`, true);
      button.disabled = false;
    }
  }

  function actionsFor(job) {
    if (job.state === "failed" || job.state === "cancelled") return [actionButton("Retry", job, retry)];
    if (job.state && !FINAL.has(job.state)) return [actionButton("Cancel", job, cancel)];
    return [];
  }

  // -- header --
  function renderHeader() {
    const s = ui.status;
    if (!s) return;
    const leader = s.leader && s.leader.instance_id ? ` · leader ${s.leader.instance_id}` : "";
    $("summary").textContent = `v${s.version} · ${s.instance_id} · up ${span(Math.round(s.uptime_s || 0))}${leader}`;
  }

  function renderConn(error) {
    const c = $("conn");
    if (error) {
      c.textContent = `offline: ${error.message || error}`;
      c.className = "conn bad";
    } else {
      c.textContent = "live";
      c.className = "conn ok";
    }
  }

  // A read refused for want of the token (401/403): counts still show, job data waits for it.
  function renderLocked(message) {
    $("locked").hidden = !message;
    $("locked").textContent = message ? `Job data is hidden: ${message}.` : "";
  }

  function isLocked(e) {
    return e instanceof ApiError && (e.status === 401 || e.status === 403);
  }

  function renderAuth() {
    const has = Boolean(token());
    $("auth-state").textContent = has
      ? "Token set: job data, retry and cancel are enabled."
      : "Read-only: paste the API token to see job data and to retry or cancel jobs.";
    $("auth").classList.toggle("readonly", !has);
    $("token-forget").hidden = !has;
    $("token-form").hidden = has;
  }

  // -- overview --
  function renderQueues(s) {
    const rows = Object.entries(s.queues || {}).map(([name, q]) =>
      el("tr", {}, el("td", { text: name }), el("td", { class: "num", text: q.depth }), el("td", { class: "num", text: q.running }), el("td", { class: "num", text: q.concurrency })),
    );
    fill($("queues").tBodies[0], rows);
  }

  function renderStates(s) {
    const counts = s.jobs || {};
    const chips = STATES.map((state) =>
      el(
        "a",
        { class: `chip state-${state}`, href: "#jobs", "data-state": state, onclick: () => setFilters({ state, plugin: "", queue: "" }) },
        el("span", { class: "chip-n", text: counts[state] ?? 0 }),
        el("span", { text: state }),
      ),
    );
    $("states").replaceChildren(...chips);
  }

  function renderInstances(s) {
    const leaderId = s.leader && s.leader.instance_id;
    $("leader").textContent = leaderId
      ? `Leader: ${leaderId}${s.leader.token !== undefined && s.leader.token !== null ? ` (token ${s.leader.token})` : ""}${s.leader.since ? `, since ${ago(s.leader.since)}` : ""}`
      : "Leader: none (no instance holds the lease)";
    const instances = s.instances || {};
    const rows = Object.entries(instances).map(([id, info]) => {
      const alive = info.alive !== false;
      return el(
        "tr",
        { class: alive ? "" : "dead" },
        el("td", {}, el("span", { class: "mono", text: id }), id === leaderId ? el("span", { class: "badge", text: "leader" }) : null, alive ? null : el("span", { class: "badge bad", text: "gone" })),
        el("td", { text: info.role || "-" }),
        el("td", { text: Object.entries(info.queues || {}).map(([q, c]) => `${q}(${c})`).join(", ") || "none" }),
        el("td", { text: info.version || "-" }),
        el("td", { text: ago(info.started_at) }),
        el("td", { text: ago(info.seen_at) }),
      );
    });
    fill($("instances").tBodies[0], rows);
  }

  function renderChart(t) {
    const box = $("chart");
    const n = t.succeeded.length;
    const W = 600;
    const H = 120;
    const bw = W / n;
    const totals = t.succeeded.map((v, i) => v + t.failed[i] + t.cancelled[i]);
    const max = Math.max(1, ...totals, ...t.enqueued);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H + 1}`, role: "img", "aria-label": "jobs finished per minute, last hour", preserveAspectRatio: "none" });
    chart.append(svg("title", {}, "jobs finished per minute over the last hour"));
    for (let i = 0; i < n; i += 1) {
      let y = H;
      for (const [series, cls] of [["succeeded", "bar-ok"], ["failed", "bar-failed"], ["cancelled", "bar-cancelled"]]) {
        const v = t[series][i];
        if (!v) continue;
        const h = (v / max) * H;
        y -= h;
        const rect = svg("rect", { x: (i * bw + 0.5).toFixed(1), y: y.toFixed(1), width: Math.max(bw - 1, 1).toFixed(1), height: h.toFixed(1), class: cls });
        rect.append(svg("title", {}, `${v} ${series}`));
        chart.append(rect);
      }
    }
    const points = t.enqueued.map((v, i) => `${(i * bw + bw / 2).toFixed(1)},${(H - (v / max) * H).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { points, class: "line-enqueued" }));
    chart.append(svg("line", { x1: 0, y1: H, x2: W, y2: H, class: "axis" }));
    // Labels in HTML: the SVG stretches to the card's width and would distort text.
    box.replaceChildren(
      el("div", { class: "ticks" }, el("span", { text: `${max} per minute` })),
      chart,
      el("div", { class: "ticks" }, el("span", { text: "-60m" }), el("span", { text: "-30m" }), el("span", { text: "now" })),
    );
    const sum = (a) => a.reduce((x, y) => x + y, 0);
    const rate = t.failure_rate === null || t.failure_rate === undefined ? "-" : `${(t.failure_rate * 100).toFixed(1)}%`;
    $("chart-legend").replaceChildren(
      el("span", { class: "key key-ok", text: `succeeded ${sum(t.succeeded)}` }),
      el("span", { class: "key key-failed", text: `failed ${sum(t.failed)}` }),
      el("span", { class: "key key-cancelled", text: `cancelled ${sum(t.cancelled)}` }),
      el("span", { class: "key key-enqueued", text: `enqueued ${sum(t.enqueued)}` }),
      el("span", { class: "key", text: `failure rate ${rate}` }),
    );
  }

  function renderFinished(jobs) {
    fill(
      $("finished").tBodies[0],
      jobs.map((job) =>
        el(
          "tr",
          { "data-job": job.job_id },
          el("td", {}, jobLink(job.job_id)),
          el("td", { text: job.plugin || "-" }),
          el("td", {}, stateBadge(job.state)),
          el("td", { class: "num", text: seconds(job.duration_s) }),
          el("td", { title: job.finished_at || "", text: ago(job.finished_at) }),
        ),
      ),
    );
    $("finished-empty").hidden = jobs.length > 0;
  }

  async function loadOverview(gen) {
    const t = await api("/api/throughput?window_s=3600&bucket_s=60");
    if (gen !== ui.generation) return;
    renderQueues(ui.status);
    renderStates(ui.status);
    renderInstances(ui.status);
    renderChart(t);
    const finished = await api("/api/finished?limit=8"); // job data: refused without the token
    if (gen !== ui.generation) return;
    renderFinished(finished);
  }

  // -- jobs --
  function setOptions(select, values, current) {
    const wanted = ["", ...values];
    const have = Array.from(select.options).map((o) => o.value);
    if (wanted.join("\u0000") !== have.join("\u0000")) {
      select.replaceChildren(...wanted.map((v) => el("option", { value: v, text: v || "any" })));
    }
    select.value = current;
  }

  function renderFilterOptions() {
    setOptions($("filter-state"), STATES, ui.filters.state);
    setOptions($("filter-plugin"), ui.plugins.map((p) => p.name).sort(), ui.filters.plugin);
    setOptions($("filter-queue"), Object.keys((ui.status && ui.status.queues) || {}), ui.filters.queue);
  }

  function setFilters(filters) {
    ui.filters = { ...ui.filters, ...filters };
    ui.offset = 0;
    if (location.hash !== "#jobs") location.hash = "#jobs";
    else rerender();
  }

  function jobRow(job) {
    return el(
      "tr",
      { "data-job": job.job_id },
      el("td", {}, jobLink(job.job_id)),
      el("td", { text: job.plugin || "-" }),
      el("td", {}, stateBadge(job.state)),
      el("td", { text: job.queue || "-" }),
      el("td", { class: "num", text: job.attempt ?? 0 }),
      el("td", { title: job.enqueued_at || "", text: ago(job.enqueued_at) }),
      el("td", { class: "num", text: job.state === "running" ? `${ago(job.started_at).replace(" ago", "")} …` : seconds(job.duration_s) }),
      el("td", { class: "actions" }, ...actionsFor(job)),
    );
  }

  async function loadJobs(gen) {
    renderFilterOptions();
    const q = query({ ...ui.filters, limit: PAGE + 1, offset: ui.offset });
    const jobs = await api(`/api/jobs?${q}`);
    if (gen !== ui.generation) return;
    const shown = jobs.slice(0, PAGE);
    fill($("jobs").tBodies[0], shown.map(jobRow));
    $("jobs-empty").hidden = shown.length > 0;
    $("page-prev").disabled = ui.offset === 0;
    $("page-next").disabled = jobs.length <= PAGE;
    $("page-info").textContent = shown.length ? `${ui.offset + 1}–${ui.offset + shown.length}` : "";
  }

  // -- one job --
  function field(dl, name, value) {
    if (value === null || value === undefined || value === "") return;
    dl.append(el("dt", { text: name }), el("dd", { text: value }));
  }

  function renderJob(job) {
    $("job-id").textContent = job.job_id;
    const badge = $("job-state");
    badge.textContent = job.state;
    badge.className = `state state-${job.state}`;
    $("job-actions").replaceChildren(...actionsFor(job));
    const dl = $("job-fields");
    dl.replaceChildren();
    field(dl, "plugin", job.plugin);
    field(dl, "queue", job.queue);
    field(dl, "priority", job.priority === null || job.priority === undefined ? null : `${job.priority} (${job.priority_band})`);
    field(dl, "source", job.source);
    field(dl, "attempt", job.max_retries === null || job.max_retries === undefined ? job.attempt : `${job.attempt} of ${job.max_retries + 1}`);
    field(dl, "instance", job.instance);
    field(dl, "enqueued", job.enqueued_at);
    field(dl, "runs at", job.defer_until);
    field(dl, "started", job.started_at);
    field(dl, "finished", job.finished_at);
    field(dl, job.state === "running" ? "elapsed" : "duration", job.state === "running" ? ago(job.started_at).replace(" ago", "") : job.duration_s === null || job.duration_s === undefined ? null : seconds(job.duration_s));
    field(dl, "exit code", job.exit_code);
    field(dl, "batch", job.batch_id);
    if (job.workflow) {
      dl.append(el("dt", { text: "workflow" }), el("dd", {}, workflowLink(job.workflow), ` step ${job.step || "?"}`));
    }
    field(dl, "retry of", job.retry_of);
    field(dl, "trace", job.trace_id);  // tracing on: the id to look up in the trace viewer
    $("job-params").textContent = pretty(job.params);
    $("job-result").textContent = pretty(job.result);
    const hasError = Boolean(job.error || job.traceback);
    $("job-error-box").hidden = !hasError;
    $("job-error").textContent = hasError ? [job.error_type ? `${job.error_type}: ${job.error || ""}` : job.error, job.traceback].filter(Boolean).join("\n\n") : "";
  }

  async function loadJob(gen) {
    let job;
    try {
      job = await api(`/api/jobs/${encodeURIComponent(ui.jobId)}`);
    } catch (e) {
      if (e.status === 404 && gen === ui.generation) {
        $("job-missing").hidden = false;
        return;
      }
      throw e;
    }
    if (gen !== ui.generation) return;
    $("job-missing").hidden = true;
    renderJob(job);
  }

  function startLog(jobId) {
    stopLog();
    ui.logJob = jobId;
    ui.logAfter = "-";
    $("job-log").replaceChildren();
    $("log-status").textContent = "(loading…)";
    tailLog(jobId);
  }

  function stopLog() {
    clearTimeout(ui.logTimer);
    ui.logTimer = null;
    ui.logJob = null;
  }

  async function tailLog(jobId) {
    if (ui.logJob !== jobId) return;
    let done = false;
    let more = false;
    try {
      const out = await api(`/api/jobs/${encodeURIComponent(jobId)}/logs?${query({ after: ui.logAfter, limit: LOG_BATCH })}`);
      more = out.entries.length >= LOG_BATCH;
      if (ui.logJob !== jobId) return;
      const pre = $("job-log");
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      for (const entry of out.entries) {
        pre.append(el("span", { class: `line ${entry.stream}`, text: `${entry.line}\n` }));
        ui.logAfter = entry.id;
      }
      if (stick) pre.scrollTop = pre.scrollHeight;
      // Final and nothing new: the log is complete (a line flushed at the end arrived already).
      done = FINAL.has(out.state) && out.entries.length === 0;
      const count = pre.childElementCount;
      const lines = `${count} line${count === 1 ? "" : "s"}`;
      $("log-status").textContent = done ? `(${lines}, complete)` : `(${lines}, tailing…)`;
    } catch (e) {
      if (ui.logJob !== jobId) return;
      $("log-status").textContent = e.status === 404 ? "(no such job)" : `(retrying: ${e.message})`;
      done = e.status === 404 || isLocked(e); // the poll says why; a new token reloads the view
    }
    // A full batch means more is waiting: read on at once rather than a second later.
    const delay = more ? 0 : LOG_POLL_MS;
    if (!done && ui.logJob === jobId) ui.logTimer = setTimeout(() => tailLog(jobId), delay);
  }

  // -- failed-job store --
  async function loadFailed(gen) {
    const [failed, deferred] = await Promise.all([api("/api/jobs?state=failed&limit=100"), api("/api/jobs?state=deferred&limit=100")]);
    if (gen !== ui.generation) return;
    fill(
      $("failed").tBodies[0],
      failed.map((job) =>
        el(
          "tr",
          { "data-job": job.job_id },
          el("td", {}, jobLink(job.job_id)),
          el("td", { text: job.plugin || "-" }),
          el("td", { class: "error", text: job.error || "-" }),
          el("td", { class: "num", text: job.attempt ?? 0 }),
          el("td", { title: job.finished_at || "", text: ago(job.finished_at) }),
          el("td", { class: "actions" }, actionButton("Retry", job, retry)),
        ),
      ),
    );
    $("failed-empty").hidden = failed.length > 0;
    fill(
      $("deferred").tBodies[0],
      deferred.map((job) =>
        el(
          "tr",
          { "data-job": job.job_id },
          el("td", {}, jobLink(job.job_id)),
          el("td", { text: job.plugin || "-" }),
          el("td", { class: "error", text: job.error || "-" }),
          el("td", { class: "num", text: job.attempt ?? 0 }),
          el("td", { title: job.defer_until || "", text: ago(job.defer_until) }),
          el("td", { class: "actions" }, actionButton("Cancel", job, cancel)),
        ),
      ),
    );
    $("deferred-empty").hidden = deferred.length > 0;
  }

  // -- plugins, schedules, change capture --
  // A plugin's limits and their use: "concurrency 2, rate 10/s · user_id=42: 2 running, 3 held".
  function throttleText(t) {
    if (!t || !t.limits) return "-";
    const limits = Object.entries(t.limits).map(([k, v]) => `${k} ${v}`).join(", ") + (t.live ? " (live)" : "");
    const keys = (t.keys || []).map((k) => `${k.key || "all"}: ${k.running} running, ${k.held} held`);
    return [limits, ...keys].join(" · ");
  }

  async function loadPlugins(gen) {
    const plugins = await api("/api/plugins");
    ui.plugins = plugins;
    if (gen !== ui.generation) return;
    fill(
      $("plugins").tBodies[0],
      plugins.map((p) =>
        el(
          "tr",
          {},
          el("td", {}, el("a", { href: "#jobs", text: p.name, onclick: () => setFilters({ plugin: p.name, state: "", queue: "" }) })),
          el("td", { text: p.version || "-" }),
          el("td", { text: p.enabled ? "yes" : "no" }),
          el("td", {}, stateBadge(p.state)),
          el("td", { text: p.queue || "-" }),
          el("td", { class: "throttle", text: throttleText(p.throttle) }),
          el("td", { class: "reason", text: p.reason || "" }),
        ),
      ),
    );
  }

  function renderSchedules(s) {
    const schedules = Array.isArray(s.schedules) ? s.schedules : null;
    const none = $("schedules-none");
    none.hidden = Boolean(schedules && schedules.length);
    none.textContent = schedules ? "No schedules configured." : "Schedules: not configured on this build.";
    $("schedules").hidden = !(schedules && schedules.length);
    fill(
      $("schedules").tBodies[0],
      (schedules || []).map((sc) =>
        el(
          "tr",
          {},
          el("td", { class: "mono", text: sc.id }),
          el("td", { text: sc.plugin || "-" }),
          el("td", { text: sc.cron ? `cron ${sc.cron}${sc.timezone ? ` (${sc.timezone})` : ""}` : sc.every ? `every ${sc.every}` : "-" }),
          el("td", { title: sc.next_run_at || "", text: sc.next_run_at ? `${ago(sc.next_run_at)}` : "-" }),
          el("td", { title: sc.last_run_at || "", text: ago(sc.last_run_at) }),
          el("td", {}, sc.last_state ? stateBadge(sc.last_state) : "-"),
          el("td", { text: sc.enabled === false ? "no" : "yes" }),
        ),
      ),
    );
  }

  function renderCdc(s) {
    const cdc = s.cdc;
    const rules = cdc && Array.isArray(cdc.rules) ? cdc.rules : [];
    const why = cdc && cdc.reason ? ` (${cdc.reason})` : "";
    const none = $("cdc-none");
    if (!cdc || (!cdc.enabled && !rules.length)) none.textContent = `Change capture: not configured${why}.`;
    else if (!cdc.enabled) none.textContent = `Change capture is off${why}.`;
    else none.textContent = rules.length ? "" : "No change-capture rules.";
    none.hidden = !none.textContent;
    $("cdc").hidden = !rules.length;
    fill(
      $("cdc").tBodies[0],
      rules.map((r) =>
        el(
          "tr",
          { class: r.last_error ? "dead" : "" },
          el("td", { text: r.name }),
          el("td", { class: "mono", text: r.table || "-" }),
          el("td", { text: r.mode || "-" }),
          el("td", { text: r.enabled === false ? "no" : "yes" }),
          el("td", { class: "num", text: r.lag_s === null || r.lag_s === undefined ? "-" : seconds(r.lag_s) }),
          el("td", { class: "num", text: r.delivered ?? "-" }),
          el("td", { class: "mono", text: r.position === null || r.position === undefined ? "-" : typeof r.position === "object" ? JSON.stringify(r.position) : r.position }),
          el("td", { class: "error", text: r.last_error || "" }),
        ),
      ),
    );
  }

  // -- workflows --
  async function loadWorkflows(gen) {
    const workflows = await api("/api/workflows?limit=50");
    if (gen !== ui.generation) return;
    fill(
      $("workflows").tBodies[0],
      workflows.map((w) =>
        el(
          "tr",
          {},
          el("td", {}, workflowLink(w.workflow_id)),
          el("td", { text: w.name || "-" }),
          el("td", {}, stateBadge(w.state)),
          el("td", { class: "num", text: w.jobs }),
          el("td", { title: w.created_at || "", text: ago(w.created_at) }),
          el("td", { title: w.finished_at || "", text: w.finished_at ? ago(w.finished_at) : "-" }),
        ),
      ),
    );
    $("workflows-empty").hidden = workflows.length > 0;
  }

  // One step of the tree: a job (its plugin, state and job link) or a chain/group of steps.
  function stepItem(step) {
    if (step.kind === "job") {
      const link = step.state === "pending" || !step.job_id ? el("span", { class: "muted", text: "not started" }) : jobLink(step.job_id);
      const parts = [el("span", { class: "mono", text: step.plugin }), stateBadge(step.state), link];
      if (step.error) parts.push(el("span", { class: "error", text: step.error }));
      return el("li", { "data-step": step.step }, el("span", { class: "step" }, ...parts));
    }
    const label = step.kind === "group" && step.on_failure === "continue" ? "group (on failure: continue)" : step.kind;
    return el("li", {}, el("span", { class: "kind", text: label }), el("ul", {}, ...(step.steps || []).map(stepItem)));
  }

  async function loadWorkflow(gen) {
    let wf;
    try {
      wf = await api(`/api/workflows/${encodeURIComponent(ui.workflowId)}`);
    } catch (e) {
      if (e.status === 404 && gen === ui.generation) {
        $("workflow-missing").hidden = false;
        return;
      }
      throw e;
    }
    if (gen !== ui.generation) return;
    $("workflow-missing").hidden = true;
    const badge = $("workflow-state");
    badge.textContent = wf.state;
    badge.className = `state state-${wf.state}`;
    const dl = $("workflow-fields");
    dl.replaceChildren();
    field(dl, "name", wf.name);
    field(dl, "source", wf.source);
    field(dl, "started", wf.created_at);
    field(dl, "ended", wf.finished_at);
    field(dl, "duration", wf.duration_s === null || wf.duration_s === undefined ? null : seconds(wf.duration_s));
    field(dl, "steps", Object.entries(wf.counts || {}).map(([k, v]) => `${v} ${k}`).join(", "));
    field(dl, "error", wf.error);
    $("workflow-steps").replaceChildren(stepItem(wf.steps));
  }

  // -- navigation and polling --
  function route() {
    let hash = location.hash.replace(/^#/, "");
    try {
      hash = decodeURIComponent(hash);
    } catch (e) {
      // a hand-typed malformed escape: use it as it is
    }
    if (hash.startsWith("job/")) return { view: "job", jobId: hash.slice(4) };
    if (hash.startsWith("workflow/")) return { view: "workflow", jobId: null, workflowId: hash.slice(9) };
    const views = ["overview", "jobs", "failed", "plugins", "schedules", "workflows", "cdc"];
    return { view: views.includes(hash) ? hash : "overview", jobId: null };
  }

  function navigate() {
    const r = route();
    ui.view = r.view;
    for (const section of document.querySelectorAll("main > .view")) section.hidden = section.id !== `view-${r.view}`;
    const tab = r.view === "job" ? "jobs" : r.view === "workflow" ? "workflows" : r.view;
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === tab);
    if (r.view === "workflow" && ui.workflowId !== r.workflowId) {
      ui.workflowId = r.workflowId;
      $("workflow-id").textContent = r.workflowId;
      $("workflow-fields").replaceChildren();
      $("workflow-steps").replaceChildren();
    }
    if (r.view === "job") {
      if (ui.jobId !== r.jobId || ui.logJob !== r.jobId) {
        ui.jobId = r.jobId;
        $("job-id").textContent = r.jobId;
        $("job-fields").replaceChildren();
        startLog(r.jobId);
      }
    } else {
      ui.jobId = null;
      stopLog();
    }
    rerender();
  }

  async function refresh() {
    const gen = ui.generation;
    ui.status = await api("/status");
    // The plugin filter's options (the plugins view reads them itself).
    if (ui.view === "jobs") ui.plugins = await api("/api/plugins");
    renderHeader();
    if (gen !== ui.generation) return;
    switch (ui.view) {
      case "overview":
        return loadOverview(gen);
      case "jobs":
        return loadJobs(gen);
      case "job":
        return loadJob(gen);
      case "failed":
        return loadFailed(gen);
      case "plugins":
        return loadPlugins(gen);
      case "schedules":
        return renderSchedules(ui.status);
      case "workflows":
        return loadWorkflows(gen);
      case "workflow":
        return loadWorkflow(gen);
      case "cdc":
        return renderCdc(ui.status);
      default:
        return undefined;
    }
  }

  async function poll() {
    clearTimeout(ui.pollTimer);
    const chain = ++ui.chain; // a newer poll() takes over the timer: one polling chain at a time
    try {
      await refresh();
      renderConn(null);
      renderLocked(null);
      document.body.dataset.loaded = "1";
    } catch (e) {
      if (isLocked(e)) {
        renderConn(null);
        renderLocked(e.message);
        document.body.dataset.loaded = "1";
      } else {
        renderConn(e);
      }
    }
    if (chain === ui.chain) ui.pollTimer = setTimeout(poll, POLL_MS);
  }

  function rerender() {
    ui.generation += 1; // what the view asked for changed: drop answers to the old question
    poll();
  }

  function init() {
    $("filter-state").addEventListener("change", (e) => setFilters({ state: e.target.value }));
    $("filter-plugin").addEventListener("change", (e) => setFilters({ plugin: e.target.value }));
    $("filter-queue").addEventListener("change", (e) => setFilters({ queue: e.target.value }));
    $("filter-reset").addEventListener("click", () => setFilters({ state: "", plugin: "", queue: "" }));
    $("page-prev").addEventListener("click", () => {
      ui.offset = Math.max(0, ui.offset - PAGE);
      rerender();
    });
    $("page-next").addEventListener("click", () => {
      ui.offset += PAGE;
      rerender();
    });
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("token-input").value.trim();
      $("token-input").value = "";
      if (value) setToken(value);
    });
    $("token-forget").addEventListener("click", () => setToken(""));
    $("notice-close").addEventListener("click", () => {
      $("notice").hidden = true;
    });
    window.addEventListener("hashchange", navigate);
    renderAuth();
    navigate();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
