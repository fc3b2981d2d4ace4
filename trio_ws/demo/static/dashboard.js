// trio_ws dashboard: reads one JSON snapshot per second from the /stats WebSocket and draws
// it. Snapshots carry counters; rates are computed here from two consecutive snapshots.
// Plain JavaScript, no dependencies; the charts are drawn on canvases by this file.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const WINDOW = 120;              // seconds of history kept and drawn
  const BACKOFF_FIRST = 1000, BACKOFF_MAX = 15000;
  const COLORS = { a: "#4f46e5", b: "#0891b2", c: "#16a34a" };
  const CLOSE_CODES = {
    1000: "normal closure", 1001: "going away", 1002: "protocol error",
    1003: "unsupported data", 1005: "no status code", 1006: "connection lost",
    1007: "invalid data", 1008: "policy violation", 1009: "message too big",
    1010: "extension required", 1011: "server error", 1012: "service restart",
    1013: "try again later", 1015: "TLS failure",
  };
  const HTTP_STATUS = {
    400: "bad request", 404: "not found", 405: "method not allowed", 403: "forbidden (origin)", 426: "upgrade required (version)",
    431: "request head too large", 503: "server full",
  };

  const history = [];              // [{t, connections, clients, inRate, outRate, bytesIn, bytesOut}]
  let previous = null;             // the previous snapshot
  let queueRates = new Map();
  let attempt = 0;

  // ------------------------------------------------------------------ connection

  function statsURL() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(location.search).get("token");
    return `${scheme}//${location.host}/stats${token ? `?token=${encodeURIComponent(token)}` : ""}`;
  }

  function setStatus(state, text, detail = "") {
    $("status").dataset.state = state;
    $("status-text").textContent = text;
    $("status-detail").textContent = detail;
    $("status-detail").hidden = !detail;
  }

  function connect() {
    setStatus("connecting", attempt ? `Reconnecting (attempt ${attempt})…` : "Connecting…");
    const ws = new WebSocket(statsURL());
    ws.onopen = () => setStatus("open", "Live");
    ws.onmessage = (ev) => {
      let snap;
      try { snap = JSON.parse(ev.data); } catch { return; }
      if (snap.type === "stats") {
        attempt = 0;
        update(snap);
      }
    };
    ws.onclose = (ev) => {
      attempt += 1;
      const delay = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1));
      const label = CLOSE_CODES[ev.code] ? ` ${CLOSE_CODES[ev.code]}` : "";
      const detail = ev.code === 1008
        ? "This dashboard needs a token: open it as /dashboard?token=… ."
        : `The statistics stream closed; reconnecting in ${(delay / 1000).toFixed(0)} s.`;
      setStatus("closed", `Closed (${ev.code}${label})${ev.reason ? `: ${ev.reason}` : ""}`, detail);
      previous = null;  // counters may restart with the server: no rate across the gap
      setTimeout(connect, delay);
    };
  }

  // ------------------------------------------------------------------ formatting

  const int = (n) => (n == null ? "—" : Math.round(n).toLocaleString());
  function rate(n) {
    if (n == null || !Number.isFinite(n)) return "—";
    return n >= 100 ? Math.round(n).toLocaleString() : n.toFixed(1);
  }
  function bytes(n) {
    if (n == null || !Number.isFinite(n)) return "—";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
  }
  function duration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }
  const ms = (x) => (x == null ? "—" : x < 1 ? `${(x * 1000).toFixed(0)} µs` : `${x.toFixed(2)} ms`);
  const axisNumber = (v) => (v >= 1000 ? Math.round(v).toLocaleString() : String(+v.toFixed(3)));

  function cell(text, cls = "") {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }
  function row(cells, attrs = {}) {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs)) tr.setAttribute(k, v);
    tr.append(...cells);
    return tr;
  }
  function fill(tableId, rows, columns, empty) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren(...(rows.length ? rows : [row([Object.assign(cell(empty, "empty"), { colSpan: columns })])]));
  }

  // ------------------------------------------------------------------ one snapshot

  function update(s) {
    const dt = previous ? s.time - previous.time : 0;
    const per = (key) => (previous && dt > 0 ? Math.max(0, (s[key] - previous[key]) / dt) : null);
    const point = {
      t: s.time,
      connections: s.connections,
      clients: s.clients,
      inRate: per("messages_in"),
      outRate: per("messages_out"),
      bytesIn: per("bytes_in"),
      bytesOut: per("bytes_out"),
    };
    const newRates = new Map();
    for (const q of s.queues || []) {
      const before = previous && (previous.queues || []).find((p) => p.name === q.name);
      const count = (x) => x.published ?? x.seq;
      newRates.set(q.name, before && dt > 0 ? Math.max(0, (count(q) - count(before)) / dt) : queueRates.get(q.name) ?? null);
    }
    queueRates = newRates;
    previous = s;
    history.push(point);
    while (history.length && history[0].t < s.time - WINDOW) history.shift();

    $("kpi-connections").textContent = int(s.connections);
    $("kpi-clients").textContent = int(s.clients);
    $("kpi-total").textContent = int(s.connections_total);
    $("kpi-uptime").textContent = duration(s.uptime || 0);
    $("kpi-in").textContent = rate(point.inRate);
    $("kpi-out").textContent = rate(point.outRate);
    document.body.dataset.connections = String(s.connections);

    fill("queues", (s.queues || []).map((q) => row([
      cell(q.name, "symbol"), cell(int(q.subscribers), "num"), cell(int(q.seq), "num"),
      cell(int(q.published ?? q.seq), "num"), cell(int(q.depth), "num"), cell(int(q.drops), "num"),
      cell(rate(queueRates.get(q.name)), "num"),
    ], { "data-queue": q.name })), 7, "No queues yet.");

    const broker = s.broker || {};
    const latency = broker.latency_ms ? `, ${broker.latency_ms} ms per round trip` : "";
    $("broker-state").textContent = broker.kind
      ? `${broker.kind} broker ${broker.state}${latency}; this node ${s.node}`
      : "";
    document.body.dataset.broker = broker.state || "";
    fill("nodes", (s.nodes || []).map((n) => row([
      cell(n.id === s.node ? `${n.id} (this node)` : n.id, "symbol"),
      cell(int(n.connections), "num"), cell(int(n.clients), "num"),
    ], { "data-node": n.id })), 3, s.nodes === null ? "The broker cannot be reached." : "No node reported yet.");

    fill("services", (s.services || []).map((sv) => row([
      cell(sv.type, "symbol"), cell(int(sv.calls), "num"), cell(int(sv.errors), "num"),
      cell(ms(sv.mean_ms), "num"), cell(ms(sv.p99_ms), "num"),
    ], { "data-service": sv.type })), 5, "No calls yet.");

    const closes = Object.entries(s.close_codes || {}).map(([code, n]) => row([
      cell(code, "symbol"), cell(CLOSE_CODES[code] || ""), cell(int(n), "num"),
    ], { "data-code": code }));
    const refused = Object.entries(s.refused || {}).map(([status, n]) => row([
      cell(`HTTP ${status}`, "symbol"), cell(`refused: ${HTTP_STATUS[status] || "handshake refused"}`), cell(int(n), "num"),
    ], { "data-refused": status }));
    fill("close-codes", [...closes, ...refused], 3, "No connection closed yet.");
    $("http-requests").textContent = `Plain HTTP requests served: ${int(s.http_requests)}`;

    drawAll();
  }

  // ------------------------------------------------------------------ charts

  const CHARTS = [
    { id: "connections", format: int, axis: axisNumber, integer: true, series: [["connections", "Connections", COLORS.a], ["clients", "Logged-in clients", COLORS.c]] },
    { id: "messages", format: rate, axis: axisNumber, series: [["inRate", "In", COLORS.a], ["outRate", "Out", COLORS.b]] },
    { id: "bytes", format: (n) => `${bytes(n)}/s`, axis: (n) => `${bytes(n)}/s`, series: [["bytesIn", "In", COLORS.a], ["bytesOut", "Out", COLORS.b]] },
  ];

  // The smallest "nice" step (1, 2, 2.5 or 5 times a power of ten) at least `raw`.
  function niceStep(raw, integer) {
    if (!(raw > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) {
      const step = m * p;
      if (step >= raw && (!integer || Number.isInteger(step))) return step;
    }
    return 10 * p;
  }

  function draw(chart) {
    const canvas = $(`chart-${chart.id}`);
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const grid = css.getPropertyValue("--border").trim();
    const muted = css.getPropertyValue("--muted").trim();

    ctx.font = "11px system-ui, sans-serif";
    const now = history.length ? history[history.length - 1].t : Date.now() / 1000;
    // The time axis grows with the history, from 30 s up to the whole window.
    const span = Math.min(WINDOW, Math.max(30, history.length ? now - history[0].t : 0));
    const t0 = now - span;
    let top_ = 0;
    for (const p of history) for (const [key] of chart.series) if (p[key] != null) top_ = Math.max(top_, p[key]);
    const step = niceStep((top_ * 1.1) / 4, chart.integer);
    const max = step * 4;
    const labelWidth = Math.max(...[0, 1, 2, 3, 4].map((i) => ctx.measureText(chart.axis(step * i)).width));
    const left = labelWidth + 12, right = 8, top = 8, bottom = 20;
    const x = (t) => left + ((t - t0) / span) * (w - left - right);
    const y = (v) => top + (1 - v / max) * (h - top - bottom);

    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = step * i;
      ctx.strokeStyle = grid;
      ctx.beginPath(); ctx.moveTo(left, Math.round(y(v)) + 0.5); ctx.lineTo(w - right, Math.round(y(v)) + 0.5); ctx.stroke();
      ctx.fillStyle = muted;
      ctx.textAlign = "right"; ctx.textBaseline = "middle";
      ctx.fillText(chart.axis(v), left - 6, y(v));
    }
    ctx.textAlign = "center"; ctx.textBaseline = "alphabetic";
    const every = span > 60 ? 30 : span > 30 ? 15 : 10;
    for (let s = 0; s <= span + 0.01; s += every) {
      ctx.fillText(s ? `-${s}s` : "now", Math.max(left + 10, Math.min(x(now - s), w - right - 12)), h - 4);
    }

    for (const [key, , color] of chart.series) {
      const pts = history.filter((p) => p[key] != null);
      if (!pts.length) continue;
      // a soft fill under the line, then the line
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
      ctx.lineTo(x(pts[pts.length - 1].t), y(0));
      ctx.lineTo(x(pts[0].t), y(0));
      ctx.closePath();
      ctx.fillStyle = `${color}1a`;
      ctx.fill();
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.8;
      ctx.lineJoin = "round";
      ctx.stroke();
      ctx.lineWidth = 1;
    }

    const last = history.length ? history[history.length - 1] : {};
    $(`legend-${chart.id}`).replaceChildren(...chart.series.map(([key, label, color]) => {
      const span = document.createElement("span");
      span.style.setProperty("--swatch", color);
      span.textContent = `${label}: ${last[key] == null ? "—" : chart.format(last[key])}`;
      span.dataset.series = key;
      return span;
    }));
  }

  function drawAll() {
    for (const chart of CHARTS) draw(chart);
  }

  window.addEventListener("resize", drawAll);
  drawAll();
  connect();
})();
