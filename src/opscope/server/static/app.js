/* The opscope dashboard: status cards, alerts and silences, live charts and the targets table.
 *
 * On every (re)connection of the WebSocket /ws, the page asks for the last WINDOW_S seconds of
 * each chart's metric (get_historical), then subscribes to all of them and appends the points of
 * each metrics_update. Each series keeps at most WINDOW_S seconds and MAX_POINTS points.
 *
 * Alerts come from /api/v1/alerts, fetched again (debounced) on every {"type":"alert"} message of
 * the WebSocket and every ALERTS_REFRESH_MS; silences from /api/v1/silences. Without
 * notify.channels (/healthz says "notifications": false) the Silences section is shown disabled.
 *
 * Test hooks: every chart element carries data-metric (its metric name) and data-points (points
 * currently plotted across its series); <body data-ws> is connecting, open or closed. The alert
 * list carries data-alerts (its rows), each row data-state and data-alertname; the silence list
 * carries data-silences, each row data-state and data-silence-id; the Silences section carries
 * data-available (unknown, yes or no).
 */
"use strict";

const WINDOW_S = 15 * 60;
const MAX_POINTS = 1000;
const PLOT_HEIGHT = 200;
const TARGETS_REFRESH_MS = 10_000;
const TRIM_EVERY_MS = 10_000;
const RECONNECT_MIN_S = 1;
const RECONNECT_MAX_S = 30;
const DEFAULT_HISTORY_STEP_S = 3;
const ALERTS_REFRESH_MS = 15_000;
const ALERTS_DEBOUNCE_MS = 250;
const NEW_ALERT_MS = 10_000;
const RELATIVE_TIMES_MS = 5_000;
const MAX_EXPIRED_SILENCES = 10;

/* source: the kind of target that writes the metric (its interval sets the history step). */
const CHARTS = [
  { metric: "cpu_usage", title: "CPU usage", unit: "percent", labels: ["instance"], source: "system" },
  { metric: "memory_usage", title: "Memory usage", unit: "percent", labels: ["instance"], source: "system" },
  { metric: "disk_usage", title: "Disk usage", unit: "percent", labels: ["mount"], source: "system" },
  {
    metric: "network_receive_bytes_per_second", title: "Network receive",
    unit: "bytesPerSecond", labels: ["device"], source: "system",
  },
  {
    metric: "network_transmit_bytes_per_second", title: "Network transmit",
    unit: "bytesPerSecond", labels: ["device"], source: "system",
  },
  {
    metric: "probe_duration_seconds", title: "Probe latency",
    unit: "seconds", labels: ["instance"], source: "probe",
  },
  { metric: "up", title: "Scrape targets up", unit: "upDown", labels: ["job", "instance"], source: "scrape" },
  { metric: "probe_success", title: "Probes succeeding", unit: "upDown", labels: ["instance"], source: "probe" },
];

const COLORS = [
  "#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c",
  "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d",
];
const AXIS_COLOR = "#6b7280";
const GRID_COLOR = "#eef0f3";
const AXIS_FONT = "11px system-ui, -apple-system, sans-serif";

/* ------------------------------------------------------------------------------ formatting */

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

function formatBytes(value) {
  let scaled = Math.abs(value);
  let unit = 0;
  while (scaled >= 1024 && unit < BYTE_UNITS.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || scaled >= 10 ? 0 : 1;
  return `${Math.sign(value) < 0 ? "-" : ""}${scaled.toFixed(digits)} ${BYTE_UNITS[unit]}`;
}

function formatRate(value) {
  return `${formatBytes(value)}/s`;
}

function formatPercent(value) {
  return `${value.toFixed(1)}%`;
}

function formatSeconds(value) {
  const ms = value * 1000;
  if (ms === 0) return "0 ms";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${ms.toFixed(0)} ms`;
  return `${value.toFixed(2)} s`;
}

function formatUpDown(value) {
  return value >= 1 ? "up" : "down";
}

/* A compact local clock time, 24-hour: the window is short, so no date. */
function formatClock(seconds, withSeconds = true) {
  const date = new Date(seconds * 1000);
  const parts = [date.getHours(), date.getMinutes()];
  if (withSeconds) parts.push(date.getSeconds());
  return parts.map((n) => String(n).padStart(2, "0")).join(":");
}

function formatAgo(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, serverNow() - Date.parse(iso) / 1000);
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function paddedMax(max, floor) {
  return max != null && max > 0 ? max * 1.15 : floor;
}

/* Tick steps of powers of two, so that byte axes read 256 KiB/s, 512 KiB/s, 1 MiB/s. */
const BINARY_INCRS = Array.from({ length: 41 }, (_, i) => 2 ** i);

/* How each kind of value is formatted and scaled. */
const UNITS = {
  percent: {
    format: formatPercent,
    tick: (v) => `${v.toFixed(0)}%`,
    range: () => [0, 100],
    fill: true,
  },
  bytesPerSecond: {
    format: formatRate,
    tick: formatRate,
    range: (u, min, max) => [0, paddedMax(max, 1024)],
    incrs: BINARY_INCRS,
  },
  seconds: {
    format: formatSeconds,
    tick: formatSeconds,
    range: (u, min, max) => [0, paddedMax(max, 0.01)],
  },
  upDown: {
    format: formatUpDown,
    tick: formatUpDown,
    range: () => [-0.15, 1.15],
    splits: () => [0, 1],
    stepped: true,
  },
};

/* ---------------------------------------------------------------------------------- state */

const state = {
  ws: null,
  reconnectDelay: RECONNECT_MIN_S,
  reconnectTimer: null,
  clockOffset: 0, // server clock minus browser clock, in seconds
  connections: 0, // WebSocket connections opened so far
  targets: [],
  alerts: null, // the last /api/v1/alerts answer, sorted and counted
  alertsSignature: "", // what the alert list shows, to rebuild it only when that changes
  alertsSeq: 0,
  alertsTimer: null,
  firingKeys: null, // keys of the firing alerts of the last answer (null before the first)
  newAlerts: new Map(), // key of a newly firing alert -> when its highlight ends (ms)
  silences: [],
  silencesAvailable: null, // null until known; false without notify.channels
  silencesSeq: 0,
};

function serverNow() {
  return Date.now() / 1000 + state.clockOffset;
}

function $(id) {
  return document.getElementById(id);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/* ---------------------------------------------------------------------------------- charts */

function createChart(spec) {
  const root = element("section", "panel chart");
  root.dataset.metric = spec.metric;
  root.dataset.points = "0";
  const header = element("header", "panel-header");
  header.append(element("h3", "", spec.title));
  const note = element("span", "panel-note");
  header.append(note);
  const plotEl = element("div", "chart-plot");
  const emptyEl = element("div", "chart-empty", "No data yet");
  plotEl.append(emptyEl);
  root.append(header, plotEl);
  $("charts").append(root);
  return { spec, unit: UNITS[spec.unit], root, note, plotEl, emptyEl, series: new Map(), plot: null, layout: "" };
}

const charts = CHARTS.map(createChart);
const chartByMetric = new Map(charts.map((chart) => [chart.spec.metric, chart]));

function seriesKey(labels) {
  return JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));
}

function seriesName(spec, labels) {
  let parts = spec.labels.map((k) => labels[k]).filter(Boolean);
  if (!parts.length) {
    parts = Object.keys(labels).filter((k) => k !== "__name__").sort().map((k) => labels[k]);
  }
  return parts.join(" / ") || spec.metric;
}

function seriesFor(chart, labels) {
  const key = seriesKey(labels);
  let buffer = chart.series.get(key);
  if (!buffer) {
    buffer = { key, name: seriesName(chart.spec, labels), times: [], values: [] };
    chart.series.set(key, buffer);
  }
  return buffer;
}

/* Append one point; points not newer than the series' last one are ignored. */
function appendPoint(buffer, time, value) {
  const last = buffer.times.length ? buffer.times[buffer.times.length - 1] : -Infinity;
  if (!(time > last)) return;
  buffer.times.push(time);
  buffer.values.push(typeof value === "number" && Number.isFinite(value) ? value : null);
}

/* Drop points older than the window or beyond MAX_POINTS, and series left empty. */
function trimChart(chart, now = serverNow()) {
  const cutoff = now - WINDOW_S;
  let changed = false;
  for (const [key, buffer] of chart.series) {
    let drop = 0;
    while (drop < buffer.times.length && buffer.times[drop] < cutoff) drop += 1;
    drop = Math.max(drop, buffer.times.length - MAX_POINTS);
    if (drop > 0) {
      buffer.times.splice(0, drop);
      buffer.values.splice(0, drop);
      changed = true;
    }
    if (!buffer.times.length) chart.series.delete(key);
  }
  return changed;
}

/* Measure the widest tick label so that the y axis never clips it. */
function axisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
  if (longest) {
    u.ctx.font = axis.font[0];
    size += u.ctx.measureText(longest).width / devicePixelRatio;
  }
  return Math.ceil(size);
}

/* Legend values: at the cursor while hovering, otherwise the latest value of each series. */
function legendValue(chart, u, value, seriesIdx, idx) {
  const shown = idx == null ? lastValue(u.data[seriesIdx]) : value;
  return shown == null ? "–" : chart.unit.format(shown);
}

function legendTime(u, value, seriesIdx, idx) {
  if (idx == null) return "latest";
  return value == null ? "–" : formatClock(value);
}

function seriesOptions(chart, buffer, index, count) {
  const color = COLORS[index % COLORS.length];
  const options = {
    label: buffer.name,
    stroke: color,
    width: 1.5,
    value: (u, v, seriesIdx, idx) => legendValue(chart, u, v, seriesIdx, idx),
    points: { size: 4 },
  };
  if (chart.unit.fill && count === 1) options.fill = `${color}1f`;
  if (chart.unit.stepped) options.paths = uPlot.paths.stepped({ align: 1 });
  return options;
}

function xAxis() {
  return {
    stroke: AXIS_COLOR,
    font: AXIS_FONT,
    grid: { stroke: GRID_COLOR },
    ticks: { stroke: GRID_COLOR },
    space: 64,
    size: 32,
    values: (u, splits, axisIdx, space, incr) => splits.map((t) => formatClock(t, incr < 60)),
  };
}

function plotOptions(chart, buffers) {
  const unit = chart.unit;
  const yAxis = {
    stroke: AXIS_COLOR,
    font: AXIS_FONT,
    grid: { stroke: GRID_COLOR },
    ticks: { stroke: GRID_COLOR },
    size: axisSize,
    values: (u, splits) => splits.map((v) => (v == null ? "" : unit.tick(v))),
  };
  if (unit.incrs) yAxis.incrs = unit.incrs;
  if (unit.splits) yAxis.splits = unit.splits;
  return {
    width: Math.max(200, Math.floor(chart.plotEl.clientWidth)),
    height: PLOT_HEIGHT,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: unit.range } },
    axes: [xAxis(), yAxis],
    series: [{ value: legendTime }, ...buffers.map((b, i) => seriesOptions(chart, b, i, buffers.length))],
  };
}

/* uPlot wants one shared x array: join the series on their timestamps. Explicit nulls stay gaps;
 * timestamps that only another series has are spanned over. */
function alignedData(buffers) {
  return uPlot.join(buffers.map((b) => [b.times.slice(), b.values.slice()]));
}

function lastValue(values) {
  for (let i = (values || []).length - 1; i >= 0; i -= 1) {
    if (values[i] != null) return values[i];
  }
  return null;
}

function chartNote(chart, buffers) {
  if (!buffers.length) return "";
  if (chart.spec.unit === "upDown") {
    const up = buffers.filter((b) => lastValue(b.values) >= 1).length;
    return `${up} of ${buffers.length} up`;
  }
  if (buffers.length === 1) {
    const value = lastValue(buffers[0].values);
    return value == null ? "" : chart.unit.format(value);
  }
  return `${buffers.length} series`;
}

function destroyPlot(chart) {
  if (chart.plot) {
    chart.plot.destroy();
    chart.plot = null;
    chart.layout = "";
  }
}

/* Draw the chart's current buffers; a new or vanished series rebuilds the plot. */
function renderChart(chart) {
  const buffers = [...chart.series.values()];
  if (!buffers.length) {
    destroyPlot(chart);
  } else {
    const layout = buffers.map((b) => b.key).join("\n");
    const data = alignedData(buffers);
    if (chart.plot && chart.layout === layout) {
      chart.plot.setData(data);
    } else {
      destroyPlot(chart);
      chart.plot = new uPlot(plotOptions(chart, buffers), data, chart.plotEl);
      chart.layout = layout;
    }
  }
  chart.emptyEl.hidden = buffers.length > 0;
  chart.note.textContent = chartNote(chart, buffers);
  chart.root.dataset.points = String(buffers.reduce((n, b) => n + b.times.length, 0));
}

const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = charts.find((c) => c.plotEl === entry.target);
    const width = Math.floor(entry.contentRect.width);
    if (chart && chart.plot && width > 0 && width !== chart.plot.width) {
      chart.plot.setSize({ width, height: PLOT_HEIGHT });
    }
  }
});
charts.forEach((chart) => resizer.observe(chart.plotEl));

/* ----------------------------------------------------------------------------- live data */

/* The history step: the shortest collection interval of the metric's targets (one point per
 * sample), but never more than MAX_POINTS points over the window. */
function historyStep(spec) {
  const intervals = state.targets
    .filter((t) => t.kind === spec.source)
    .map((t) => parseFloat(t.scrapeInterval))
    .filter((s) => Number.isFinite(s) && s > 0);
  const interval = intervals.length ? Math.min(...intervals) : DEFAULT_HISTORY_STEP_S;
  return Math.max(interval, WINDOW_S / MAX_POINTS);
}

function requestHistory(ws) {
  // No "end": the server uses its own clock, so a skewed browser clock cannot ask for the future.
  const start = serverNow() - WINDOW_S;
  for (const chart of charts) {
    const metric = chart.spec.metric;
    const step = historyStep(chart.spec);
    ws.send(JSON.stringify({ type: "get_historical", id: metric, metric, start, step }));
  }
}

function subscribe(ws) {
  ws.send(JSON.stringify({ type: "subscribe", metrics: charts.map((c) => c.spec.metric) }));
}

function applyHistory(message) {
  const chart = chartByMetric.get(message.id) || chartByMetric.get(message.metric);
  if (!chart) return;
  chart.series.clear();
  for (const series of message.series || []) {
    const buffer = seriesFor(chart, series.metric);
    for (const [time, value] of series.values) appendPoint(buffer, time, value);
  }
  trimChart(chart);
  renderChart(chart);
}

function applyUpdate(message) {
  const touched = new Set();
  for (const sample of message.metrics || []) {
    const chart = chartByMetric.get(sample.metric.__name__);
    if (!chart) continue;
    appendPoint(seriesFor(chart, sample.metric), sample.timestamp, sample.value);
    touched.add(chart);
  }
  for (const chart of touched) {
    trimChart(chart);
    renderChart(chart);
  }
  if (message.system_status) renderStatus(message.system_status);
  $("last-update").textContent = `Updated ${formatClock(message.timestamp)}`;
}

function onMessage(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch (err) {
    console.warn("opscope: ignored a message that is not JSON", err);
    return;
  }
  switch (message.type) {
    case "historical_data":
      applyHistory(message);
      break;
    case "metrics_update":
      applyUpdate(message);
      break;
    case "alert":
      onAlertEvent(message);
      break;
    case "error":
      console.warn("opscope: server error:", message.error);
      break;
    default:
      break; // authenticated, subscription_confirmed, pong
  }
}

/* ----------------------------------------------------------------------------- connection */

/* An API token given once as /?token=… (servers that need one) is kept for this tab only and
   taken out of the address bar. */
const API_TOKEN = (() => {
  const params = new URLSearchParams(location.search);
  const given = params.get("token");
  if (given) {
    sessionStorage.setItem("opscope-token", given);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  return sessionStorage.getItem("opscope-token") || "";
})();

function authHeaders() {
  return API_TOKEN ? { Authorization: `Bearer ${API_TOKEN}` } : {};
}

function setConnection(status, text) {
  document.body.dataset.ws = status;
  $("connection-text").textContent = text;
}

function websocketUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  setConnection("connecting", "Connecting");
  const ws = new WebSocket(websocketUrl());
  state.ws = ws;
  ws.addEventListener("open", () => {
    // The token goes in the first message, never in the URL (proxies and access logs keep
    // URLs); the server answers {"type":"authenticated"} or closes with 1008.
    if (API_TOKEN) ws.send(JSON.stringify({ type: "auth", token: API_TOKEN }));
    onOpen(ws);
  });
  ws.addEventListener("message", (event) => onMessage(event.data));
  ws.addEventListener("close", () => onClose(ws));
}

async function onOpen(ws) {
  state.reconnectDelay = RECONNECT_MIN_S;
  setConnection("open", "Live");
  state.connections += 1;
  if (state.connections > 1) {
    // Transitions may have been missed while disconnected (the first load happens at start).
    refreshAlerts();
    loadHealth().then(() => {
      if (state.silencesAvailable !== false) refreshSilences();
    });
  }
  await Promise.all([loadHealth(), refreshTargets()]);
  if (ws.readyState !== WebSocket.OPEN) return;
  requestHistory(ws);
  subscribe(ws);
}

function onClose(ws) {
  if (state.ws !== ws) return;
  state.ws = null;
  const delay = state.reconnectDelay;
  state.reconnectDelay = Math.min(delay * 2, RECONNECT_MAX_S);
  setConnection("closed", `Disconnected, retrying in ${delay} s`);
  const jitter = 0.8 + Math.random() * 0.4;
  state.reconnectTimer = setTimeout(connect, delay * 1000 * jitter);
}

/* ------------------------------------------------------------------------------ REST data */

async function loadHealth() {
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json();
    if (Number.isFinite(body.time)) {
      // Server time minus browser time; ignore differences smaller than the round trip.
      const offset = body.time - Date.now() / 1000;
      state.clockOffset = Math.abs(offset) > 1 ? offset : 0;
    }
    if (body.notifications === false) {
      // Known from /healthz: no need to ask /api/v1/silences for its 400.
      state.silences = [];
      setSilencesAvailable(false, "notifications are not configured (no notify.channels)");
    } else if (body.notifications === true && state.silencesAvailable === false) {
      state.silencesAvailable = null;
    }
    const project = body.project || "opscope";
    $("project").textContent = project;
    document.title = `${project} · opscope`;
    $("version").textContent = body.version ? `opscope ${body.version}` : "opscope";
  } catch (err) {
    console.warn("opscope: /healthz failed", err);
  }
}

async function refreshTargets() {
  try {
    const response = await fetch("/api/v1/targets", { cache: "no-store", headers: authHeaders() });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    state.targets = body.data.activeTargets || [];
    renderTargets(state.targets);
  } catch (err) {
    renderTargetsError(err);
  }
}

/* -------------------------------------------------------------------------------- targets */

const HEALTH_ORDER = { down: 0, unknown: 1, up: 2 };

function compareTargets(a, b) {
  return (
    (HEALTH_ORDER[a.health] ?? 1) - (HEALTH_ORDER[b.health] ?? 1) ||
    a.kind.localeCompare(b.kind) ||
    a.scrapePool.localeCompare(b.scrapePool) ||
    a.scrapeUrl.localeCompare(b.scrapeUrl)
  );
}

function targetRow(target) {
  const row = document.createElement("tr");
  const health = element("span", `health health-${target.health}`, target.health);
  const instance = (target.labels && target.labels.instance) || target.scrapeUrl;
  const duration = target.lastScrapeDuration == null ? "–" : formatSeconds(target.lastScrapeDuration);
  const cells = [
    element("td"),
    element("td", "", target.kind),
    element("td", "", target.scrapePool),
    element("td", "instance", instance),
    element("td", "num", formatAgo(target.lastScrape)),
    element("td", "num", duration),
    element("td", "error", target.lastError || ""),
  ];
  cells[0].append(health);
  cells[3].title = target.scrapeUrl;
  cells[6].title = target.lastError || "";
  row.append(...cells);
  return row;
}

function renderTargets(targets) {
  const body = $("targets-body");
  body.replaceChildren(...[...targets].sort(compareTargets).map(targetRow));
  if (!targets.length) {
    const cell = element("td", "muted", "No targets configured");
    cell.colSpan = 7;
    const row = element("tr");
    row.append(cell);
    body.append(row);
  }
  // Count scrape and probe targets only, like the Targets card (the system collector is this
  // machine, not a target).
  const remote = targets.filter((t) => t.kind !== "system");
  const up = remote.filter((t) => t.health === "up").length;
  $("targets-summary").textContent = `${up} of ${remote.length} targets up`;
}

function renderTargetsError(err) {
  $("targets-summary").textContent = `Could not load targets (${err.message})`;
}

/* ---------------------------------------------------------------------------------- cards */

function level(value, warn, crit) {
  if (value == null) return "";
  if (value >= crit) return "crit";
  if (value >= warn) return "warn";
  return "ok";
}

function setCard(name, value, sub, cardLevel = "") {
  const card = document.querySelector(`[data-card="${name}"]`);
  card.querySelector(".card-value").textContent = value;
  card.querySelector(".card-sub").textContent = sub;
  if (cardLevel) card.dataset.level = cardLevel;
  else delete card.dataset.level;
}

function orDash(value, format) {
  return typeof value === "number" ? format(value) : "–";
}

function renderStatus(status) {
  setCard("cpu", orDash(status.cpu_usage, formatPercent), "usage", level(status.cpu_usage, 80, 90));
  setCard(
    "memory", orDash(status.memory_usage, formatPercent), "used", level(status.memory_usage, 80, 90),
  );
  renderDiskCard(status.disk_usage || {});
  setCard("load", orDash(status.load1, (v) => v.toFixed(2)), "1 min average");
  setCard("connections", orDash(status.active_connections, (v) => String(Math.round(v))), "active");
  const sent = orDash(status.network_transmit_bytes_per_second, formatRate);
  setCard("network", orDash(status.network_receive_bytes_per_second, formatRate), `in, ${sent} out`);
  renderTargetsCard(status.targets_up, status.targets_total);
}

function renderDiskCard(disks) {
  const entries = Object.entries(disks).filter(([, v]) => typeof v === "number");
  if (!entries.length) {
    setCard("disk", "–", "used");
    return;
  }
  const [mount, fullest] = entries.reduce((a, b) => (b[1] > a[1] ? b : a));
  const sub = entries.length > 1 ? `${mount}, fullest of ${entries.length}` : mount;
  setCard("disk", formatPercent(fullest), sub, level(fullest, 80, 90));
}

function renderTargetsCard(up, total) {
  if (typeof total !== "number") return;
  if (total === 0) {
    setCard("targets", "0", "none configured");
    return;
  }
  const down = total - up;
  setCard("targets", `${up} / ${total}`, down ? `${down} down` : "all up", down ? "crit" : "ok");
}

/* ------------------------------------------------------------------------------ REST calls */

class ApiError extends Error {
  constructor(message, status, errorType) {
    super(message);
    this.status = status;
    this.errorType = errorType;
  }
}

/* The `data` of a successful API answer; otherwise an ApiError carrying the answer's `error`. */
async function api(path, options = {}) {
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok || !body || body.status !== "success") {
    const message = (body && body.error) || `HTTP ${response.status} ${response.statusText}`.trim();
    throw new ApiError(message, response.status, body && body.errorType);
  }
  return body.data;
}

function postJson(path, payload) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

function showMessage(id, text) {
  const node = $(id);
  node.textContent = text;
  node.hidden = !text;
}

/* -------------------------------------------------------------------------- relative times */

function formatDuration(seconds) {
  const s = Math.max(0, seconds);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 10 * 3600) {
    const minutes = Math.round(s / 60);
    const rest = minutes % 60;
    return rest ? `${Math.floor(minutes / 60)} h ${rest} min` : `${minutes / 60} h`;
  }
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function formatLocal(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

/* A <time> whose text is kept relative to now: kind "for" (active for 3 min), "ends" (ends in
 * 59 min, or ended 2 min ago) or "starts" (starts in 10 min). */
function relativeTime(iso, kind, className) {
  const node = element("time", className);
  node.dateTime = iso || "";
  node.dataset.rel = kind;
  renderRelative(node);
  return node;
}

function renderRelative(node) {
  const time = Date.parse(node.dateTime);
  if (!Number.isFinite(time)) {
    node.textContent = "";
    return;
  }
  const delta = time / 1000 - serverNow();
  switch (node.dataset.rel) {
    case "for":
      node.textContent = `for ${formatDuration(-delta)}`;
      break;
    case "ends":
      node.textContent =
        delta > 0 ? `ends in ${formatDuration(delta)}` : `ended ${formatDuration(-delta)} ago`;
      break;
    case "starts":
      node.textContent =
        delta > 0 ? `starts in ${formatDuration(delta)}` : `started ${formatDuration(-delta)} ago`;
      break;
    default:
      break;
  }
}

function updateRelativeTimes() {
  document.querySelectorAll("time[data-rel]").forEach(renderRelative);
}

/* Rebuilding a list loses the focus: remember which row and button had it, and give it back. */
function focusedAction(list) {
  const active = document.activeElement;
  if (!active || !list.contains(active)) return null;
  const row = active.closest("[data-key]");
  return row ? { key: row.dataset.key, action: active.dataset.action || "" } : null;
}

function restoreFocus(list, focus) {
  if (!focus) return;
  const row = [...list.children].find((r) => r.dataset.key === focus.key);
  if (!row) return;
  const target = (focus.action && row.querySelector(`[data-action="${focus.action}"]`)) || row;
  target.focus({ preventScroll: true });
}

/* ------------------------------------------------------------------------------- matchers */

/* Alertmanager-style matchers (name="v", name!="v", name=~"re", name!~"re"; several separated by
 * commas, braces optional), parsed to mark the alerts that an active silence mutes. The server
 * decides what is muted; a matcher this cannot read just leaves the alert unmarked. */
const MATCHER_RE =
  /\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(,|$)/y;

function unquote(text) {
  const quote = text[0];
  const inner = text.slice(1, -1);
  if (quote === "`") return inner;
  if (quote === "'") return JSON.parse(`"${inner.replace(/\\'/g, "'").replace(/"/g, '\\"')}"`);
  return JSON.parse(text);
}

function parseMatchers(text) {
  let inner = text.trim();
  if (inner.startsWith("{") && inner.endsWith("}")) inner = inner.slice(1, -1);
  const matchers = [];
  MATCHER_RE.lastIndex = 0;
  try {
    while (MATCHER_RE.lastIndex < inner.length) {
      const match = MATCHER_RE.exec(inner);
      if (!match) return null;
      const [, name, op, quoted, separator] = match;
      const value = unquote(quoted);
      const test = op === "=~" || op === "!~" ? new RegExp(`^(?:${value})$`, "s") : null;
      const positive = op === "=" || op === "=~";
      matchers.push({ name, matches: (v) => (test ? test.test(v) : v === value) === positive });
      if (!separator) break;
    }
  } catch {
    return null; // a regex or an escape JavaScript does not read
  }
  return matchers.length ? matchers : null;
}

function compileSilence(silence) {
  const parsed = (silence.matchers || []).map(parseMatchers);
  return parsed.every(Boolean) ? parsed.flat() : null;
}

function mutingSilences(labels) {
  return state.silences.filter(
    (s) => s.status && s.status.state === "active" && s.compiled &&
      s.compiled.every((m) => m.matches(labels[m.name] ?? "")),
  );
}

function quoteMatcherValue(value) {
  return `"${String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}

/* --------------------------------------------------------------------------------- alerts */

const KEY_LABELS = ["instance", "job", "severity"];
const ALERT_ORDER = { firing: 0, pending: 1 };

function alertKey(alert) {
  return seriesKey(alert.labels || {});
}

function compareAlerts(a, b) {
  return (
    (ALERT_ORDER[a.state] ?? 2) - (ALERT_ORDER[b.state] ?? 2) ||
    (Date.parse(b.activeAt) || 0) - (Date.parse(a.activeAt) || 0) ||
    (a.labels.alertname || "").localeCompare(b.labels.alertname || "") ||
    alertKey(a).localeCompare(alertKey(b))
  );
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function scheduleAlertsRefresh() {
  clearTimeout(state.alertsTimer);
  state.alertsTimer = setTimeout(refreshAlerts, ALERTS_DEBOUNCE_MS);
}

async function refreshAlerts() {
  clearTimeout(state.alertsTimer);
  const seq = ++state.alertsSeq;
  try {
    const data = await api("/api/v1/alerts");
    if (seq !== state.alertsSeq) return; // a newer request is on its way
    showMessage("alerts-error", "");
    applyAlerts(data);
  } catch (err) {
    if (seq !== state.alertsSeq) return;
    showMessage("alerts-error", `Could not load alerts: ${err.message}`);
    if (!state.alerts) $("alerts-empty").hidden = true;
  }
}

function periodicAlerts() {
  refreshAlerts();
  // Without notify.channels the answer cannot change before a restart, that is a reconnection.
  if (state.silencesAvailable !== false) refreshSilences();
}

function onAlertEvent(message) {
  const alert = message.alert || {};
  if (message.event === "firing" && alert.labels) markNew(alertKey(alert));
  scheduleAlertsRefresh();
}

function markNew(key) {
  if (state.firingKeys && state.firingKeys.has(key)) return; // already shown as firing
  state.newAlerts.set(key, Date.now() + NEW_ALERT_MS);
  setTimeout(updateNewAlerts, NEW_ALERT_MS + 50);
  updateNewAlerts();
}

function applyAlerts(data) {
  const alerts = (data.alerts || [])
    .filter((a) => a.state === "firing" || a.state === "pending")
    .map((a) => ({ ...a, labels: a.labels || {}, annotations: a.annotations || {} }))
    .sort(compareAlerts);
  const firing = alerts.filter((a) => a.state === "firing");
  if (state.firingKeys) {
    const fresh = firing.filter((a) => !state.firingKeys.has(alertKey(a)));
    fresh.forEach((a) => markNew(alertKey(a)));
    if (fresh.length) announceFiring(fresh);
  }
  state.firingKeys = new Set(firing.map(alertKey));
  state.alerts = {
    alerts,
    firing: firing.length,
    pending: alerts.length - firing.length,
    rules: typeof data.alert_rules === "number" ? data.alert_rules : null,
  };
  renderAlerts();
}

function announceFiring(alerts) {
  const names = alerts.map((a) => {
    const summary = a.annotations.summary;
    return summary ? `${a.labels.alertname}: ${summary}` : a.labels.alertname || "alert";
  });
  $("alerts-announce").textContent = `Now firing: ${names.join("; ")}`;
}

function renderAlerts() {
  const data = state.alerts;
  if (!data) return;
  const list = $("alerts-list");
  const canSilence = state.silencesAvailable === true;
  const rows = data.alerts.map((alert) => ({
    alert,
    key: alertKey(alert),
    muted: mutingSilences(alert.labels),
  }));
  const signature = JSON.stringify([
    canSilence,
    rows.map(({ alert, key, muted }) => [
      key, alert.state, alert.activeAt, alert.firedAt, alert.annotations, muted.map((s) => s.id),
    ]),
  ]);
  if (signature !== state.alertsSignature) {
    const focus = focusedAction(list);
    list.replaceChildren(...rows.map((row) => alertRow(row, canSilence)));
    restoreFocus(list, focus);
    state.alertsSignature = signature;
  }
  list.dataset.alerts = String(rows.length);
  updateNewAlerts();

  const rules = data.rules == null ? "" : plural(data.rules, "alerting rule");
  const empty = $("alerts-empty");
  empty.hidden = rows.length > 0;
  if (data.rules === 0) empty.textContent = "No active alerts. No alerting rules are configured.";
  else empty.textContent = `No active alerts${rules ? ` (${rules} evaluated)` : ""}.`;
  $("alerts-summary").textContent = rows.length
    ? `${data.firing} firing, ${data.pending} pending${rules ? ` · ${rules}` : ""}`
    : rules;
  renderAlertsCard(data);
}

function alertRow({ alert, key, muted }, canSilence) {
  const labels = alert.labels;
  const name = labels.alertname || "(no alertname)";
  const row = element("li", "alert-row");
  row.dataset.key = key;
  row.dataset.state = alert.state;
  row.dataset.alertname = name;
  row.tabIndex = -1;

  const badge = element("span", `badge badge-${alert.state}`, alert.state);

  const main = element("div", "alert-main");
  const title = element("p", "alert-title");
  title.append(element("strong", "alert-name", name));
  const others = Object.keys(labels)
    .filter((k) => k !== "alertname" && !KEY_LABELS.includes(k))
    .sort()
    .map((k) => `${k}=${quoteMatcherValue(labels[k])}`);
  const summary = alert.annotations.summary || others.join(", ");
  if (summary) title.append(element("span", "alert-summary", summary));
  main.append(title);

  const chips = element("ul", "chips");
  chips.setAttribute("aria-label", "Alert labels");
  for (const label of KEY_LABELS) {
    if (!labels[label]) continue;
    const chip = element("li", `chip chip-${label}`);
    if (label === "severity") chip.dataset.severity = labels[label];
    chip.append(element("span", "chip-name", label), document.createTextNode(` ${labels[label]}`));
    chips.append(chip);
  }
  if (muted.length) {
    const chip = element("li", "chip chip-silenced", "silenced");
    chip.title = muted
      .map((s) => `Silenced by ${s.matchers.join(", ")} until ${formatLocal(s.endsAt)}`)
      .join("\n");
    chips.append(chip);
  }
  if (chips.children.length) main.append(chips);

  const since = relativeTime(alert.activeAt, "for", "alert-since");
  since.title = [
    `Active since ${formatLocal(alert.activeAt)}`,
    alert.firedAt ? `firing since ${formatLocal(alert.firedAt)}` : "",
    alert.value != null ? `value ${Number(alert.value)}` : "",
  ].filter(Boolean).join(", ");

  const actions = element("div", "row-actions");
  if (canSilence) {
    const button = element("button", "button", "Silence");
    button.type = "button";
    button.dataset.action = "silence";
    const where = labels.instance ? ` on ${labels.instance}` : "";
    button.setAttribute("aria-label", `Silence ${name}${where}`);
    button.addEventListener("click", () => prefillSilence(alert));
    actions.append(button);
  }
  row.append(badge, main, since, actions);
  return row;
}

/* Highlight the rows of newly firing alerts until their time is up. */
function updateNewAlerts() {
  const now = Date.now();
  for (const [key, until] of state.newAlerts) {
    if (until <= now) state.newAlerts.delete(key);
  }
  for (const row of $("alerts-list").children) {
    const isNew = row.dataset.state === "firing" && state.newAlerts.has(row.dataset.key);
    row.classList.toggle("alert-new", isNew);
  }
}

function renderAlertsCard(data) {
  const rules = data.rules == null ? "" : ` · ${plural(data.rules, "rule")}`;
  if (data.firing || data.pending) {
    const cardLevel = data.firing ? "crit" : "warn";
    setCard("alerts", String(data.firing), `firing · ${data.pending} pending`, cardLevel);
  } else {
    const sub = data.rules === 0 ? "no alerting rules" : `firing${rules}`;
    setCard("alerts", "0", sub, data.rules ? "ok" : "");
  }
}

/* ------------------------------------------------------------------------------- silences */

const SILENCE_ORDER = { active: 0, pending: 1, expired: 2 };
const SILENCES_OPEN_KEY = "opscope.silences.open";
const AUTHOR_KEY = "opscope.silences.author";

function storageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage disabled
  }
}

function storageSet(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage disabled: the preference lasts for this page only
  }
}

function silenceState(silence) {
  return (silence.status && silence.status.state) || "expired";
}

function compareSilences(a, b) {
  const sa = silenceState(a);
  const sb = silenceState(b);
  if (sa !== sb) return (SILENCE_ORDER[sa] ?? 3) - (SILENCE_ORDER[sb] ?? 3);
  const ends = (Date.parse(a.endsAt) || 0) - (Date.parse(b.endsAt) || 0);
  return sa === "expired" ? -ends : ends; // soonest to end first; most recently ended first
}

async function refreshSilences() {
  const seq = ++state.silencesSeq;
  try {
    const data = await api("/api/v1/silences");
    if (seq !== state.silencesSeq) return;
    const silences = Array.isArray(data) ? data : [];
    state.silences = silences.map((s) => ({ ...s, compiled: compileSilence(s) }));
    setSilencesAvailable(true, "");
    showMessage("silences-error", "");
  } catch (err) {
    if (seq !== state.silencesSeq) return;
    if (err.status === 400) {
      // The server's way of saying that notifications (and so silences) are not configured.
      state.silences = [];
      setSilencesAvailable(false, err.message);
      showMessage("silences-error", "");
    } else {
      showMessage("silences-error", `Could not load silences: ${err.message}`);
    }
  }
  renderSilences();
  renderAlerts();
}

function setSilencesAvailable(available, message) {
  state.silencesAvailable = available;
  $("silences").dataset.available = available ? "yes" : "no";
  $("silence-fieldset").disabled = !available;
  showMessage("silences-unavailable", available ? "" : `Silences are unavailable: ${message}`);
}

function renderSilences() {
  const list = $("silences-list");
  const sorted = [...state.silences].sort(compareSilences);
  const live = sorted.filter((s) => silenceState(s) !== "expired");
  const expired = sorted.filter((s) => silenceState(s) === "expired");
  const shown = [...live, ...expired.slice(0, MAX_EXPIRED_SILENCES)];
  const focus = focusedAction(list);
  list.replaceChildren(...shown.map(silenceRow));
  restoreFocus(list, focus);
  list.dataset.silences = String(shown.length);
  $("silences-empty").hidden = shown.length > 0 || state.silencesAvailable !== true;

  let note = "";
  if (state.silencesAvailable === false) {
    note = "unavailable";
  } else if (state.silencesAvailable) {
    const active = live.filter((s) => silenceState(s) === "active").length;
    const pending = live.length - active;
    note = active || pending ? `${active} active` : "none active";
    if (pending) note += `, ${pending} pending`;
    if (expired.length) note += ` · ${expired.length} expired`;
  }
  $("silences-summary").textContent = note;
}

function silenceRow(silence) {
  const status = silenceState(silence);
  const row = element("li", "silence-row");
  row.dataset.key = silence.id;
  row.dataset.silenceId = silence.id;
  row.dataset.state = status;
  row.tabIndex = -1;

  const badge = element("span", `badge badge-silence-${status}`, status);

  const main = element("div", "silence-main");
  const matchers = element("ul", "chips matchers");
  matchers.setAttribute("aria-label", "Silence matchers");
  for (const text of silence.matchers || []) {
    const chip = element("li", "chip");
    chip.append(element("code", "", text));
    matchers.append(chip);
  }
  const meta = element("p", "silence-meta", `by ${silence.createdBy || "unknown"}`);
  if (silence.comment) meta.append(" · ", element("span", "silence-comment", silence.comment));
  main.append(matchers, meta);

  const when = status === "pending"
    ? relativeTime(silence.startsAt, "starts", "silence-when")
    : relativeTime(silence.endsAt, "ends", "silence-when");
  when.title = `From ${formatLocal(silence.startsAt)} to ${formatLocal(silence.endsAt)}`;

  const actions = element("div", "row-actions");
  if (status !== "expired") {
    const button = element("button", "button", "Expire");
    button.type = "button";
    button.dataset.action = "expire";
    button.setAttribute("aria-label", `Expire the silence ${(silence.matchers || []).join(", ")}`);
    button.addEventListener("click", () => expireSilence(silence, button));
    actions.append(button);
  }
  row.append(badge, main, when, actions);
  return row;
}

async function expireSilence(silence, button) {
  button.disabled = true;
  showMessage("silences-error", "");
  try {
    await api(`/api/v1/silences/${encodeURIComponent(silence.id)}`, { method: "DELETE" });
    $("silence-form-status").textContent = "Silence expired";
    await refreshSilences();
    const row = [...$("silences-list").children].find((r) => r.dataset.silenceId === silence.id);
    if (row && !row.contains(document.activeElement)) row.focus({ preventScroll: true });
  } catch (err) {
    showMessage("silences-error", `Could not expire the silence: ${err.message}`);
    button.disabled = false;
  }
}

function setSilencesOpen(open) {
  $("silences-toggle").setAttribute("aria-expanded", String(open));
  $("silences-body").hidden = !open;
  storageSet(SILENCES_OPEN_KEY, open ? "1" : "0");
}

/* The "Silence" button of an alert: open the form with matchers for all the alert's labels. */
function prefillSilence(alert) {
  setSilencesOpen(true);
  const labels = alert.labels;
  const names = Object.keys(labels)
    .filter((k) => k !== "alertname")
    .sort();
  if (labels.alertname !== undefined) names.unshift("alertname");
  const matchers = $("silence-matchers");
  matchers.value = names.map((k) => `${k}=${quoteMatcherValue(labels[k])}`).join("\n");
  matchers.rows = Math.min(6, Math.max(2, names.length));
  showMessage("silence-form-error", "");
  const from = labels.alertname || "the alert";
  $("silence-form-status").textContent = `Matchers filled in from ${from}`;
  $("silence-form").scrollIntoView({ block: "start" });
  const author = $("silence-author");
  (author.value.trim() ? $("silence-comment") : author).focus({ preventScroll: true });
}

async function createSilence(event) {
  event.preventDefault();
  const matchersField = $("silence-matchers");
  const authorField = $("silence-author");
  const matchers = matchersField.value.split("\n").map((line) => line.trim()).filter(Boolean);
  const createdBy = authorField.value.trim();
  showMessage("silence-form-error", "");
  $("silence-form-status").textContent = "";
  let problem = null;
  if (!matchers.length) {
    problem = ['Enter at least one matcher, like alertname="TargetDown".', matchersField];
  } else if (!createdBy) {
    problem = ["Enter who creates the silence.", authorField];
  }
  if (problem) {
    showMessage("silence-form-error", problem[0]);
    problem[1].setAttribute("aria-invalid", "true");
    problem[1].focus();
    return;
  }
  matchersField.removeAttribute("aria-invalid");
  authorField.removeAttribute("aria-invalid");

  const seconds = Number($("silence-duration").value) || 3600;
  const payload = {
    matchers,
    endsAt: String(Math.round(serverNow() + seconds)), // Unix seconds on the server's clock
    createdBy,
    comment: $("silence-comment").value.trim(),
  };
  const submit = $("silence-submit");
  submit.disabled = true;
  $("silence-form-status").textContent = "Creating the silence";
  try {
    const created = await postJson("/api/v1/silences", payload);
    storageSet(AUTHOR_KEY, createdBy);
    matchersField.value = "";
    matchersField.rows = 2;
    $("silence-comment").value = "";
    $("silence-form-status").textContent = `Silence created, until ${formatLocal(created.endsAt)}`;
    await refreshSilences();
  } catch (err) {
    $("silence-form-status").textContent = "";
    showMessage("silence-form-error", err.message);
  } finally {
    submit.disabled = false;
  }
}

function initSilenceForm() {
  $("silences-toggle").addEventListener("click", () => {
    setSilencesOpen($("silences-toggle").getAttribute("aria-expanded") !== "true");
  });
  setSilencesOpen(storageGet(SILENCES_OPEN_KEY) === "1");
  $("silence-author").value = storageGet(AUTHOR_KEY) || "";
  $("silence-form").addEventListener("submit", createSilence);
  for (const id of ["silence-matchers", "silence-author"]) {
    $(id).addEventListener("input", () => $(id).removeAttribute("aria-invalid"));
  }
}

/* ---------------------------------------------------------------------------------- start */

function trimAll() {
  for (const chart of charts) {
    if (trimChart(chart) || (chart.plot && !chart.series.size)) renderChart(chart);
  }
}

initSilenceForm();
connect();
refreshAlerts();
// Silences only once /healthz said whether notifications are configured.
loadHealth().then(() => {
  if (state.silencesAvailable !== false) refreshSilences();
});
setInterval(refreshTargets, TARGETS_REFRESH_MS);
setInterval(trimAll, TRIM_EVERY_MS);
setInterval(periodicAlerts, ALERTS_REFRESH_MS);
setInterval(updateRelativeTimes, RELATIVE_TIMES_MS);
