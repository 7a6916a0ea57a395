"use strict";
// The status page: it polls the admin API (/series each second; /targets, /errors and /config
// every two seconds; /routes and /upstreams when the configuration changes), keeps the last 15
// minutes of points and draws them as SVG. Everything it shows is in window.fastgwStatus:
// the points, the lines each chart drew, the targets, errors and configuration as received.

const WINDOW = 900; // seconds of points kept, as the gateway keeps them
const RECENT = 10; // seconds the "now" figures in the tables average over
const SHORTEST = 60; // seconds a graph spans at least (a young gateway's graphs span its life)
const ERRORS_SHOWN = 20; // rows of recent errors before "show all"
const COLORS = ["#1f6feb", "#a85d00", "#b00020"];
const state = (window.fastgwStatus = {
  series: [], charts: {}, targets: [], errors: [], config: null, routes: [], upstreams: [],
  scope: {kind: "all", name: null}, loaded: false,
});
let token = sessionStorage.getItem("fastgw-admin-token") || "";
let revision = null; // the configuration the route and upstream tables were read for
let allErrors = false; // show every error kept, not only the newest ERRORS_SHOWN

// -- the admin API -------------------------------------------------------------------------------

async function api(path, answerErrors) {
  const headers = token ? {"Authorization": "Bearer " + token} : {};
  const response = await fetch(path, {headers});
  if (response.status === 401) {
    document.getElementById("token-form").style.display = "block";
    throw new Error("the admin API needs a token");
  }
  if (!response.ok && !answerErrors) throw new Error(path.split("?")[0] + ": HTTP " + response.status);
  return response.json();
}

async function pollSeries() {
  const last = state.series.length ? state.series[state.series.length - 1].t : 0;
  const data = await api("/series?since=" + last);
  state.series.push(...data.points);
  const newest = state.series.length ? state.series[state.series.length - 1].t : 0;
  while (state.series.length && state.series[0].t <= newest - WINDOW) state.series.shift();
}

async function pollState() {
  const [targets, errors, config] = await Promise.all([api("/targets"), api("/errors"), api("/config")]);
  state.targets = targets.targets;
  state.errors = errors.errors;
  state.config = config;
  const seen = config.digest + "@" + config.loaded_at;
  if (seen !== revision) {
    const [routes, upstreams] = await Promise.all([api("/routes"), api("/upstreams")]);
    state.routes = routes.routes;
    state.upstreams = upstreams.upstreams;
    revision = seen;
  }
}

// -- numbers -------------------------------------------------------------------------------------

function format(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  const size = Math.abs(value);
  return size >= 100 ? value.toFixed(0) : size >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function clock(seconds) {
  const d = new Date(seconds * 1000);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// The entry of a point for the scope shown: everything, one route or one upstream (or null).
function entryOf(point, scope) {
  if (scope.kind === "route") return point.routes[scope.name] || null;
  if (scope.kind === "upstream") return point.upstreams[scope.name] || null;
  return point.total;
}

// A count per second over the last RECENT seconds (null without points).
function recentRate(pick) {
  const newest = state.series.length ? state.series[state.series.length - 1].t : 0;
  let count = 0, seconds = 0;
  for (const point of state.series) {
    if (point.t <= newest - RECENT) continue;
    count += pick(point) || 0;
    seconds += point.dt;
  }
  return seconds ? count / seconds : null;
}

function latestOf(pick) {
  for (let i = state.series.length - 1; i >= 0; i--) {
    const value = pick(state.series[i]);
    if (value !== null && value !== undefined) return value;
  }
  return null;
}

// -- SVG -----------------------------------------------------------------------------------------

// The time the graphs span: the points kept (up to WINDOW), at least SHORTEST; and its end.
function timeSpan() {
  const series = state.series;
  if (!series.length) return {newest: Date.now() / 1000, span: SHORTEST};
  const newest = series[series.length - 1].t;
  const kept = newest - series[0].t + series[0].dt;
  return {newest, span: Math.min(WINDOW, Math.max(SHORTEST, kept))};
}

function ago(seconds) {
  if (seconds < 1) return "now";
  return seconds >= 120 ? "-" + Math.round(seconds / 60) + " min" : "-" + Math.round(seconds) + " s";
}

// lines: [{label, values: [[t, v or null], ...]}]; returns the SVG markup of the chart.
function chartMarkup(lines, width, height) {
  const pad = {left: 42, right: 6, top: 6, bottom: 16};
  const {newest, span} = timeSpan();
  const from = newest - span;
  let most = 0;
  for (const line of lines) for (const [, v] of line.values) if (v !== null && v > most) most = v;
  const top = niceCeiling(most);
  const x = (t) => pad.left + ((t - from) / span) * (width - pad.left - pad.right);
  const y = (v) => pad.top + (1 - v / top) * (height - pad.top - pad.bottom);
  const parts = [];
  for (const f of [0, 0.5, 1]) {
    parts.push(`<line class="grid" x1="${pad.left}" x2="${width - pad.right}" y1="${y(top * f)}" y2="${y(top * f)}"/>`);
    parts.push(`<text class="axis" x="${pad.left - 4}" y="${y(top * f) + 3}" text-anchor="end">${format(top * f)}</text>`);
  }
  for (const f of [1, 2 / 3, 1 / 3, 0]) {
    const anchor = f === 1 ? "start" : f === 0 ? "end" : "middle";
    parts.push(`<text class="axis" x="${x(newest - f * span)}" y="${height - 3}" text-anchor="${anchor}">${ago(f * span)}</text>`);
  }
  lines.forEach((line, i) => {
    let d = "", open = false;
    for (const [t, v] of line.values) {
      if (v === null || t < from) { open = false; continue; }
      d += (open ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1);
      open = true;
    }
    parts.push(`<path d="${d}" stroke="${COLORS[i % COLORS.length]}"/>`);
  });
  return parts.join("");
}

function drawChart(id, lines, hidden) {
  const figure = document.getElementById(id);
  figure.hidden = Boolean(hidden);
  state.charts[id] = lines;
  if (hidden) return;
  const svg = figure.querySelector("svg");
  const width = Math.max(svg.clientWidth || 300, 160), height = 140;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.innerHTML = chartMarkup(lines, width, height);
  const legend = figure.querySelector(".legend");
  legend.replaceChildren();
  lines.forEach((line, i) => {
    const span = document.createElement("span");
    span.style.setProperty("--swatch", COLORS[i % COLORS.length]);
    const known = line.values.filter(([, v]) => v !== null);
    span.textContent = line.label + " " + format(known.length ? known[known.length - 1][1] : null);
    legend.append(span);
  });
}

function sparkline(pick) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 90 20");
  svg.setAttribute("width", "90");
  svg.setAttribute("height", "20");
  const {newest, span} = timeSpan();
  const values = state.series.map((p) => [p.t, (pick(p) || 0) / p.dt]);
  const top = niceCeiling(Math.max(0, ...values.map(([, v]) => v)));
  const d = values.map(([t, v], i) => (i ? "L" : "M") + (((t - newest + span) / span) * 90).toFixed(1) +
    " " + (19 - (v / top) * 18).toFixed(1)).join("");
  svg.innerHTML = `<path class="spark" d="${d}"/>`;
  return svg;
}

// -- the graphs ----------------------------------------------------------------------------------

function rateLine(label, pick) {
  return {label, values: state.series.map((p) => { const v = pick(p); return [p.t, v === null ? null : v / p.dt]; })};
}

function valueLine(label, pick) {
  return {label, values: state.series.map((p) => [p.t, pick(p)])};
}

function drawCharts() {
  const scope = state.scope;
  const of = (key) => (p) => { const e = entryOf(p, scope); return e ? e[key] : (key[0] === "p" ? null : 0); };
  const requests = scope.kind === "upstream"
    ? [rateLine("attempts/s", of("n")), rateLine("5xx/s", of("n5")), rateLine("failed/s", of("failed"))]
    : [rateLine("requests/s", of("n")), rateLine("4xx/s", of("n4")), rateLine("5xx/s", of("n5"))];
  drawChart("chart-requests", requests);
  drawChart("chart-latency", [valueLine("p50", of("p50")), valueLine("p95", of("p95")), valueLine("p99", of("p99"))]);
  drawChart("chart-connections", scope.kind === "upstream"
    ? [valueLine("pool in use", of("in_use")), valueLine("pool idle", of("idle"))]
    : [valueLine("client connections", (p) => p.connections), valueLine("pool in use", (p) => p.pool_in_use),
       valueLine("pool idle", (p) => p.pool_idle)]);
  const limits = state.routes.some((r) => r.plugins.some((n) => ["rate_limit", "api_key", "jwt", "basic_auth",
    "introspection", "forward_auth", "ip_filter", "authorize"].includes(n)));
  const refused = state.series.some((p) => p.limited || p.denied);
  drawChart("chart-refusals", [rateLine("429 rate limited", (p) => p.limited), rateLine("401/403 denied", (p) => p.denied)],
    !(limits || refused));
  const cache = state.series.some((p) => p.cache);
  drawChart("chart-cache", [valueLine("hits %", (p) => (p.cache && p.cache.lookups ? (100 * p.cache.hits) / p.cache.lookups : null))],
    !cache);
  const name = document.getElementById("scope-name");
  name.textContent = scope.kind === "all" ? "all traffic" : scope.kind + " " + scope.name;
  document.getElementById("scope-reset").hidden = scope.kind === "all";
}

function choose(kind, name) {
  state.scope = state.scope.kind === kind && state.scope.name === name ? {kind: "all", name: null} : {kind, name};
  drawCharts();
  drawTables();
}

// -- the tables ----------------------------------------------------------------------------------

function cell(row, content, className) {
  const td = row.insertCell();
  if (content instanceof Node) td.append(content); else td.textContent = content;
  if (className) td.className = className;
  return td;
}

// A row of the route or upstream table: a click graphs that one alone (or all again).
function pickRow(body, kind, name) {
  const row = body.insertRow();
  row.dataset[kind] = name;
  row.className = "pick" + (state.scope.kind === kind && state.scope.name === name ? " chosen" : "");
  row.addEventListener("click", () => choose(kind, name));
  return row;
}

function drawRoutes() {
  const body = document.querySelector("#routes tbody");
  body.replaceChildren();
  for (const r of state.routes) {
    const row = pickRow(body, "route", r.id);
    const count = (key) => (p) => (p.routes[r.id] ? p.routes[r.id][key] : 0);
    cell(row, r.id); cell(row, r.path); cell(row, r.methods ? r.methods.join(", ") : "any");
    cell(row, r.upstream || "aggregate");
    cell(row, format(recentRate(count("n"))), "num");
    cell(row, sparkline(count("n")));
    cell(row, format(recentRate(count("n4"))), "num");
    cell(row, format(recentRate(count("n5"))), "num");
    cell(row, format(latestOf((p) => (p.routes[r.id] ? p.routes[r.id].p99 : null))), "num");
    cell(row, String(state.series.reduce((sum, p) => sum + count("n")(p), 0)), "num");
  }
}

function drawUpstreams() {
  const body = document.querySelector("#upstreams tbody");
  body.replaceChildren();
  for (const u of state.upstreams) {
    const row = pickRow(body, "upstream", u.name);
    const count = (key) => (p) => (p.upstreams[u.name] ? p.upstreams[u.name][key] : 0);
    cell(row, u.name); cell(row, u.balance);
    cell(row, format(recentRate(count("n"))), "num");
    cell(row, sparkline(count("n")));
    cell(row, format(recentRate(count("n5"))), "num");
    cell(row, format(recentRate(count("failed"))), "num");
    cell(row, format(latestOf((p) => (p.upstreams[u.name] ? p.upstreams[u.name].p99 : null))), "num");
    cell(row, format(latestOf(count("in_use"))), "num");
    cell(row, format(latestOf(count("idle"))), "num");
  }
}

const STATE_WORDS = {
  healthy: "healthy", failing_checks: "failing checks", ejected: "ejected",
  breaker_open: "breaker open", breaker_half_open: "breaker half-open",
};

// What one worker's view says beyond "healthy", in words.
function describe(view) {
  const words = [];
  if (view.breaker && view.breaker.state === "open") words.push(`breaker open, trial in ${format(view.breaker.trial_in)} s`);
  if (view.breaker && view.breaker.state === "half_open") words.push(`breaker half-open, ${view.breaker.trials_left} trial(s) to let through`);
  if (view.ejected_for !== null) words.push(`ejected, back in ${format(view.ejected_for)} s`);
  if (view.check && !view.check.up) words.push(`failing health checks (${view.check.against} passed in a row)`);
  if (view.check && view.check.up && view.check.against) words.push(`${view.check.against} health check(s) failed in a row`);
  if (!words.length) words.push(view.in_rotation ? "in rotation" : "out of rotation");
  return words.join("; ");
}

function drawTargets() {
  const body = document.querySelector("#targets tbody");
  body.replaceChildren();
  for (const t of state.targets) {
    const row = body.insertRow();
    row.dataset.upstream = t.upstream;
    row.dataset.target = t.target;
    row.dataset.state = t.state;
    cell(row, t.upstream); cell(row, t.target);
    const badges = document.createElement("span");
    for (const s of t.states) {
      const badge = document.createElement("span");
      badge.className = "badge " + s;
      badge.textContent = STATE_WORDS[s] || s;
      badges.append(badge);
    }
    cell(row, badges);
    const words = t.workers.map(describe);
    const alike = words.every((w) => w === words[0]);
    cell(row, alike ? words[0] || "" : t.workers.map((w, i) => `worker ${w.worker}: ${words[i]}`).join("; "), "wrap");
    cell(row, String(t.in_flight), "num");
    cell(row, format(t.latency_ewma_ms), "num");
    cell(row, String(t.pool.idle || 0), "num");
    cell(row, String(t.pool.in_use || 0), "num");
    cell(row, t.source);
  }
}

function drawErrors() {
  const body = document.querySelector("#errors tbody");
  body.replaceChildren();
  const newest = [...state.errors].reverse();
  for (const e of allErrors ? newest : newest.slice(0, ERRORS_SHOWN)) {
    const row = body.insertRow();
    row.dataset.requestId = e.request_id;
    row.dataset.status = e.status;
    cell(row, clock(e.at)); cell(row, e.route || "(none)");
    cell(row, e.status ? String(e.status) : "none", "num status" + Math.floor(e.status / 100));
    cell(row, e.reason, "wrap"); cell(row, e.request_id); cell(row, e.target || "-");
    cell(row, format(e.duration_ms), "num");
  }
  if (!state.errors.length) cell(body.insertRow(), "none kept", "empty").colSpan = 7;
  const more = document.getElementById("errors-more");
  more.hidden = state.errors.length <= ERRORS_SHOWN;
  more.textContent = allErrors ? `show the newest ${ERRORS_SHOWN}` : `show all ${state.errors.length}`;
}

function drawConfig() {
  const c = state.config;
  if (!c) return;
  const ago = Math.max(0, Date.now() / 1000 - c.loaded_at);
  const since = ago < 120 ? Math.round(ago) + " s ago" : Math.round(ago / 60) + " min ago";
  const facts = [
    ["Revision", c.digest ? c.digest.slice(0, 19) : "not from a file"],
    ["etcd revision", c.revision === null ? "-" : String(c.revision) + (c.rejected_revision === null ? "" : ` (refused: ${c.rejected_revision})`)],
    ["Source", c.source],
    ["Loaded", `${clock(c.loaded_at)} (${since}), by ${c.loaded_by}`],
    ["Reloads", `${c.reloads.succeeded} succeeded, ${c.reloads.failed} failed` + (c.last_reload_ok ? "" : " (the last one failed)")],
    ["Listeners", c.listeners.map((l) => `${l.name} on ${l.bind}`).join(", ")],
    ["Routes", `${c.routes} routes, ${c.upstreams} upstreams`],
  ];
  const list = document.getElementById("config");
  list.replaceChildren();
  for (const [term, value] of facts) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = term; dd.textContent = value;
    if (term === "Revision" && c.digest) dd.title = c.digest;
    list.append(dt, dd);
  }
  const body = document.querySelector("#reload-failures tbody");
  body.replaceChildren();
  for (const f of [...c.reload_failures].reverse()) {
    const row = body.insertRow();
    cell(row, clock(f.at)); cell(row, f.trigger); cell(row, f.key_path || "(the file)"); cell(row, f.message, "wrap");
  }
  if (!c.reload_failures.length) cell(body.insertRow(), "no reload failed", "empty").colSpan = 4;
}

function drawTables() {
  drawRoutes(); drawUpstreams(); drawTargets(); drawErrors(); drawConfig();
}

function drawSummary() {
  const rate = recentRate((p) => p.total.n), errors = recentRate((p) => p.total.n5);
  const p99 = latestOf((p) => p.total.p99);
  const out = state.targets.filter((t) => t.state !== "healthy").length;
  document.getElementById("summary").textContent =
    `${format(rate)} req/s, ${rate ? format((100 * errors) / rate) : "0.00"}% 5xx, p99 ${format(p99)} ms; ` +
    `${state.targets.length} targets, ${out} not healthy; ${state.routes.length} routes`;
}

// -- the loops -----------------------------------------------------------------------------------

function showError(error) {
  document.getElementById("error").textContent = error ? String(error.message || error) : "";
}

async function every(seconds, step) {
  for (;;) {
    try { await step(); } catch (error) { showError(error); }
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  }
}

async function start() {
  for (;;) {
    try {
      await pollState();
      await pollSeries();
      break;
    } catch (error) {
      showError(error);
      if (document.getElementById("token-form").style.display === "block") return; // until a token is given
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  drawCharts(); drawTables(); drawSummary();
  showError(null);
  state.loaded = true;
  document.body.dataset.loaded = "true";
  every(1, async () => { await pollSeries(); drawCharts(); drawSummary(); showError(null); });
  every(2, async () => { await pollState(); drawTables(); });
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem("fastgw-admin-token", token);
  document.getElementById("token-form").style.display = "none";
  if (!state.loaded) start();
});

document.getElementById("scope-reset").addEventListener("click", () => choose("all", null));
document.getElementById("errors-more").addEventListener("click", () => { allErrors = !allErrors; drawErrors(); });

document.getElementById("match-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = new URLSearchParams({
    method: document.getElementById("match-method").value,
    url: document.getElementById("match-url").value,
  });
  for (const line of document.getElementById("match-headers").value.split("\n")) {
    if (line.trim()) query.append("header", line.trim());
  }
  const out = document.getElementById("match-result");
  try {
    const answer = await api("/match?" + query, true);
    out.textContent = answer.error ? answer.error : answer.lines.join("\n");
    out.dataset.matched = answer.error ? "error" : String(answer.matched);
  } catch (error) {
    out.textContent = String(error.message || error);
  }
});

window.addEventListener("resize", () => { if (state.loaded) drawCharts(); });
start();
