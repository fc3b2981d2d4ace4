// trio_ws demo page: the demo protocol (docs/protocol.md) through the browser client
// /trio_ws.js, which logs in, reconnects with backoff and resumes every subscription.
// This file only shows things: it keeps no connection logic of its own.
import { Client, CLOSE_CODES, STREAM } from "/trio_ws.js";

const $ = (id) => document.getElementById(id);

const WHO_EVERY = 3000;         // ms, refresh of the user list / members while shown
const PING_EVERY = 15000;       // ms, the client's heartbeat (shown as the round trip)
const CHART_WINDOW = 60000;     // ms of ticker history drawn

const token = new URLSearchParams(location.search).get("token");

const state = {
  client: null,          // the Client of the current session (null when logged out)
  name: "",              // the name asked for
  loggedIn: false,
  tab: "echo",
  groups: new Map(),     // group -> {sub, lastSeq, members: []}
  currentGroup: "",
  stream: { wanted: false, sub: null, subscribed: false, subscribedAt: 0, lastSeq: 0, rows: new Map(), received: [] },
  skipped: 0,            // seqs never received and never reported by a `gap` (should stay 0)
  countdownTimer: null,
  lastClose: "",         // the last close, in words, for the reconnecting status
};

// ------------------------------------------------------------------ helpers

const pad = (n) => String(n).padStart(2, "0");
const clock = (d = new Date()) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "title" || k === "role") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function nameColor(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 60% 45%)`;
}

function addLog(list, { cls = "", tag = null, from = null, seq = null, text = "", data = {} }) {
  const li = el("li", { class: cls });
  for (const [k, v] of Object.entries(data)) li.dataset[k] = v;
  li.append(el("span", { class: "time", text: clock() }));
  if (tag) li.append(el("span", { class: "tag", text: tag }));
  if (from) {
    const f = el("span", { class: "from", text: from });
    if (!cls.includes("out")) f.style.color = nameColor(from.replace(/^(to|from) /, ""));
    li.append(f);
  }
  if (seq != null) li.append(el("span", { class: "seq", text: `#${seq}` }));
  li.append(el("span", { class: "text", text }));
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  while (list.children.length > 200) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
  return li;
}

function event(text, cls = "") {
  addLog($("events"), { cls, text });
}

function send(message) {
  if (state.client && state.client.send(message)) return true;
  showError("not_connected", "The connection is not open; your message was not sent.");
  return false;
}

// ------------------------------------------------------------------ status and errors

function setStatus(stateName, text, detail = "") {
  const status = $("status");
  status.dataset.state = stateName;
  $("status-text").textContent = text;
  const d = $("status-detail");
  d.textContent = detail;
  d.hidden = !detail;
}

function showError(code, message) {
  $("error-code").textContent = code;
  $("error-message").textContent = message || "";
  $("error").dataset.code = code;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").dataset.code = "";
}

function showLoginError(code, message) {
  const p = $("login-error");
  p.textContent = `${message || code} (${code})`;
  p.dataset.code = code;
  p.hidden = false;
}

function closeText(code, reason) {
  const label = CLOSE_CODES[code] ? ` ${CLOSE_CODES[code]}` : "";
  return `Closed (${code}${label})${reason ? `: ${reason}` : ""}`;
}

// ------------------------------------------------------------------ the session

// Client-side close codes (4000-4999) in words, for the connection log.
const CLIENT_CLOSE_WORDS = { 4000: "no answer to a heartbeat", 4001: "no welcome in time", 4002: "name still taken" };

function statusOf(client) {
  switch (client.state) {
    case "connecting":
      return ["connecting", client.attempt ? `Reconnecting (attempt ${client.attempt})…` : "Connecting…"];
    case "login": return ["open", "Open · logging in…"];
    case "connected": return ["open", `Open · ${client.name}`];
    case "offline": return ["reconnecting", "Offline · reconnects when the network is back"];
    default: return null;
  }
}

function startSession(name) {
  const options = { name, heartbeatInterval: PING_EVERY };
  if (token) options.token = token;
  const client = new Client(options);
  state.client = client;
  state.name = name;
  event(`connecting to ${client.url}`);

  client.on("state", ({ state: now }) => {
    if (client !== state.client) return;
    state.loggedIn = now === "connected";
    if (now !== "reconnecting") clearInterval(state.countdownTimer);
    if (now !== "connected") { state.stream.subscribed = false; renderStream(); }
    const status = statusOf(client);
    if (status) setStatus(...status);
    if (now === "offline") event("offline: waiting for the network");
  });
  client.on("close", ({ code, reason, willRetry, wasLoggedIn }) => {
    if (client !== state.client) return;
    const text = closeText(code, reason || CLIENT_CLOSE_WORDS[code] || "");
    state.lastClose = text;
    event(text.toLowerCase(), "error");
    if (willRetry) return;
    // Not retried (docs/js-client.md): say why, and let the user log in again.
    const why = code === 1008
      ? "closed by the server's policy: your name may have been taken over by a newer session"
      : reason || CLOSE_CODES[code] || "connection closed";
    setStatus("closed", text, wasLoggedIn ? "The connection will not be retried; log in again to continue." : "");
    resetSession();
    $("app-view").hidden = true;
    $("login-view").hidden = false;
    $("login-name").value = state.name;
    showLoginError(`closed ${code}`, why);
  });
  client.on("reconnecting", ({ attempt, delay }) => {
    if (client !== state.client) return;
    const why = state.lastClose || "Connection lost";
    const due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, (due - Date.now()) / 1000).toFixed(1);
      setStatus("reconnecting", `${why} · retrying in ${left} s`,
        `Connection lost. Reconnecting automatically (attempt ${attempt}); your groups and stream resume where they left off.`);
    };
    tick();
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(tick, 100);
    event(`reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})`);
  });
  client.on("welcome", ({ name: registered, resumed }) => {
    if (client !== state.client) return;
    event(resumed ? `logged in again as ${registered}` : `logged in as ${registered}`);
    $("login-error").hidden = true;
    if (["not_connected"].includes($("error").dataset.code)) clearError();
    $("me").textContent = registered;
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    renderGroups();
    refreshShown();
    if (!resumed) $(`tab-${state.tab}`).focus();
  });
  client.on("loginerror", ({ code, message }) => {
    if (client !== state.client) return;
    if (client.stats.logins) {
      // Could not get our name back after a reconnect: let the user choose.
      resetSession();
      $("login-view").hidden = false;
      $("app-view").hidden = true;
      $("login-name").value = state.name;
    }
    showLoginError(code, message);
  });
  client.on("subscribed", ({ group, resumed }) => {
    if (client !== state.client) return;
    if (group === STREAM) {
      state.stream.subscribed = true;
      state.stream.subscribedAt = Date.now();
      state.stream.lastSeq = client.subscriptions.get(STREAM)?.lastSeq ?? 0;
      renderStream();
      return;
    }
    const g = state.groups.get(group);
    if (g) g.lastSeq = g.sub.lastSeq;
    if (resumed) event(`resumed ${group} after #${g ? g.lastSeq : "?"}`);
    renderGroups();
    requestMembers(group);
  });
  client.on("gap", (gap) => { if (client === state.client) onGap(gap); });
  client.on("reset", (reset) => { if (client === state.client) onReset(reset); });
  client.on("error", (error) => { if (client === state.client) onError(error); });
  client.on("pong", ({ rtt }) => {
    $("latency").textContent = `· round trip ${rtt < 10 ? rtt.toFixed(1) : Math.round(rtt)} ms`;
  });
  client.on("message", (m) => { if (client === state.client) handle(m); });

  setLoginEnabled(false);
  client.connect().catch((err) => {
    if (client !== state.client) return;  // logged out, or the close handler took over
    setLoginEnabled(true);
    if (!client.stats.logins) setStatus("idle", "Not connected");  // loginerror said why
  });
}

function setLoginEnabled(enabled) {
  $("login-button").disabled = !enabled;
  $("login-name").disabled = !enabled;
}

function resetSession() {
  const client = state.client;
  state.client = null;
  state.loggedIn = false;
  if (client) client.close("logout");
  clearInterval(state.countdownTimer);
  state.groups.clear();
  state.currentGroup = "";
  state.stream.wanted = false;
  state.stream.sub = null;
  state.stream.subscribed = false;
  state.stream.lastSeq = 0;
  state.stream.rows.clear();
  state.stream.received = [];
  for (const id of ["echo-log", "routed-log", "group-log"]) $(id).replaceChildren();
  $("stream-notices").replaceChildren();
  renderGroups();
  renderMembers([]);
  renderStream();
  renderTicker();
  setLoginEnabled(true);
}

function logout() {
  resetSession();
  clearError();
  setStatus("idle", "Not connected");
  event("logged out");
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-name").focus();
}

// ------------------------------------------------------------------ incoming messages

// What the client does not handle itself: replies and deliveries to show.
function handle(m) {
  switch (m.type) {
    case "echo": return addLog($("echo-log"), { tag: "echo", text: m.text, data: { testid: "echo-item" } });
    case "routed": return onRouted(m);
    case "who": return onWho(m);
    case "members": return onMembers(m);
    case "unsubscribed": return onUnsubscribed(m);
    default: return undefined;  // welcome, subscribed, gap, grouped, streamed, pong, error: via the client
  }
}

function onError(error) {
  if (error.code === "unknown_recipient") {
    addLog($("routed-log"), { cls: "error", tag: "error", text: error.message || "No such user is connected." });
    requestWho();
  }
  const message = error.message.replace(`${error.code}: `, "");
  showError(error.code, message);
  event(`error ${error.code}: ${message}`, "error");
}

// ------------------------------------------------------------------ routed

function onRouted(m) {
  addLog($("routed-log"), { cls: "in", from: m.from, text: m.text, data: { testid: "routed-item", from: m.from } });
  if (state.tab !== "routed") markTab("routed");
}

function requestWho() {
  if (state.loggedIn) send({ type: "who" });
}

function onWho(m) {
  const select = $("routed-to");
  const current = select.value;
  const others = m.names.filter((n) => n !== state.client?.name);
  const options = others.map((n) => el("option", { value: n, text: n }));
  if (!options.length) options.push(el("option", { value: "", text: "Nobody else is online" }));
  select.replaceChildren(...options);
  if (others.includes(current)) select.value = current;
  $("routed-online").textContent = m.names.length ? m.names.join(", ") : "—";
}

// ------------------------------------------------------------------ groups

function onUnsubscribed(m) {
  if (m.group === STREAM) {
    state.stream.subscribed = false;
    renderStream();
    return;
  }
  event(`left group ${m.group}`);
}

function onReset({ group, seq }) {
  if (group === STREAM) {
    notice($("stream-notices"), `The stream started again at #${seq} (the server restarted).`);
    state.stream.lastSeq = 0;
    return;
  }
  addLog($("group-log"), { cls: "notice", tag: group, text: `Group restarted at #${seq} (the server restarted).` });
  const g = state.groups.get(group);
  if (g) g.lastSeq = 0;
}

function onGap(gap) {
  if (!gap.reported) state.skipped += gap.to - gap.from + 1;  // a hole nobody announced
  const text = `Missed #${gap.from}–#${gap.to}: the server no longer keeps those messages.`;
  if (gap.group === STREAM) {
    state.stream.lastSeq = Math.max(state.stream.lastSeq, gap.to);
    notice($("stream-notices"), text, { testid: "gap", from: gap.from, to: gap.to });
  } else {
    const g = state.groups.get(gap.group);
    if (g) g.lastSeq = Math.max(g.lastSeq, gap.to);
    addLog($("group-log"), { cls: "notice", tag: gap.group, text, data: { testid: "gap", from: gap.from, to: gap.to } });
  }
  event(`gap in ${gap.group}: #${gap.from}–#${gap.to}`);
}

function notice(container, text, data = { testid: "notice" }) {
  const div = el("div", { class: "notice", text: `${clock()} ${text}` });
  Object.assign(div.dataset, data);
  container.append(div);
  while (container.children.length > 3) container.firstElementChild.remove();
}

function onGrouped(m) {
  const g = state.groups.get(m.group);
  if (!g) return;
  g.lastSeq = m.seq;
  addLog($("group-log"), {
    cls: m.from === state.client?.name ? "own" : "in",
    tag: m.group, from: m.from, seq: m.seq, text: m.text,
    data: { testid: "group-item", group: m.group, from: m.from, seq: m.seq },
  });
  if (!g.members.includes(m.from)) requestMembers(m.group);
  renderGroups();
  if (state.tab !== "group") markTab("group");
}

function requestMembers(group) {
  if (group && state.loggedIn) send({ type: "grouped", action: "members", group });
}

function onMembers(m) {
  const g = state.groups.get(m.group);
  if (g) g.members = m.names;
  if (m.group === state.currentGroup) renderMembers(m.names);
}

function renderMembers(names) {
  $("group-members-of").textContent = state.currentGroup ? `of ${state.currentGroup}` : "";
  const list = $("group-members");
  if (!state.currentGroup) {
    list.replaceChildren(el("li", { class: "muted", text: "Join a group to see its members." }));
    return;
  }
  if (!names.length) {
    list.replaceChildren(el("li", { class: "muted", text: "Nobody yet." }));
    return;
  }
  const me = state.client?.name;
  list.replaceChildren(...names.map((n) => el("li",
    { class: n === me ? "me" : "", "data-testid": "member", "data-name": n },
    el("span", { class: "dot" }), el("span", { text: n === me ? `${n} (you)` : n }))));
}

function renderGroups() {
  const chips = [...state.groups.entries()].map(([group, g]) => {
    const chip = el("button", {
      type: "button", class: "chip", "data-testid": "group-chip", "data-group": group,
      "aria-pressed": String(group === state.currentGroup), title: `Show ${group}`,
    }, el("span", { text: group }), el("span", { class: "seq", text: `#${g.lastSeq}` }));
    chip.addEventListener("click", () => selectGroup(group));
    return chip;
  });
  $("group-list").replaceChildren(...chips);
}

function selectGroup(group) {
  state.currentGroup = group;
  $("group-name").value = group;
  const g = state.groups.get(group);
  renderMembers(g ? g.members : []);
  renderGroups();
  requestMembers(group);
}

function groupName() {
  const group = $("group-name").value.trim();
  if (!group) { $("group-name").focus(); return ""; }
  return group;
}

function joinGroup(group) {
  if (!state.client) return;
  if (!state.groups.has(group)) {
    const sub = state.client.subscribe(group, {
      onMessage: onGrouped,
      onError: (error) => { state.groups.delete(group); renderGroups(); onError(error); },
    });
    state.groups.set(group, { sub, lastSeq: sub.lastSeq, members: [] });
  }
  selectGroup(group);
}

function leaveGroup(group) {
  const g = state.groups.get(group);
  state.groups.delete(group);
  if (g) g.sub.unsubscribe().catch(() => {});
  if (state.currentGroup === group) {
    state.currentGroup = state.groups.size ? [...state.groups.keys()][0] : "";
    $("group-name").value = state.currentGroup;
  }
  const current = state.groups.get(state.currentGroup);
  renderMembers(current ? current.members : []);
  renderGroups();
  requestMembers(state.currentGroup);
}

// ------------------------------------------------------------------ streamed

function onStreamed(m) {
  const s = state.stream;
  if (!s.wanted) return;
  s.lastSeq = m.seq;  // in order, each once: the client sees to that
  const d = m.data || {};
  const symbol = String(d.symbol ?? "value");
  const price = Number(d.price ?? d.value);
  const now = Date.now();
  let row = s.rows.get(symbol);
  if (!row) {
    row = { first: price, prev: price, price, seq: m.seq, time: d.time, points: [] };
    s.rows.set(symbol, row);
  }
  row.prev = row.price;
  row.price = price;
  row.seq = m.seq;
  row.time = d.time;
  row.points.push([now, price]);
  while (row.points.length && row.points[0][0] < now - CHART_WINDOW) row.points.shift();
  s.received.push(now);
  while (s.received.length && s.received[0] < now - 5000) s.received.shift();
  updateRow(symbol, row);
  renderStream();
  scheduleChart();
}

function formatPrice(p) {
  if (!Number.isFinite(p)) return "—";
  return p.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function formatTime(t) {
  if (t == null) return clock();
  const d = typeof t === "number" ? new Date(t > 1e12 ? t : t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return `${clock(d)}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

function updateRow(symbol, row) {
  const body = $("stream-rows");
  body.querySelector("tr.empty")?.remove();
  let tr = body.querySelector(`tr[data-symbol="${CSS.escape(symbol)}"]`);
  if (!tr) {
    tr = el("tr", { "data-symbol": symbol, "data-testid": "stream-row" },
      el("td", { class: "symbol" }), el("td", { class: "num price" }), el("td", { class: "num change" }),
      el("td", { class: "num seq" }), el("td", { class: "num time" }));
    // Keep rows sorted by symbol.
    const after = [...body.children].find((r) => r.dataset.symbol > symbol);
    body.insertBefore(tr, after || null);
  }
  const change = row.first ? ((row.price - row.first) / row.first) * 100 : 0;
  tr.cells[0].textContent = symbol;
  tr.cells[0].style.color = symbolColor(symbol);
  tr.cells[1].textContent = formatPrice(row.price);
  tr.cells[1].className = `num price ${row.price > row.prev ? "up" : row.price < row.prev ? "down" : ""}`;
  tr.cells[2].textContent = `${change >= 0 ? "+" : ""}${change.toFixed(2)} %`;
  tr.cells[2].className = `num change ${change > 0 ? "up" : change < 0 ? "down" : ""}`;
  tr.cells[3].textContent = `#${row.seq}`;
  tr.cells[4].textContent = formatTime(row.time);
  tr.dataset.price = String(row.price);
  tr.dataset.seq = String(row.seq);
  tr.classList.remove("flash");
  void tr.offsetWidth;  // restart the flash animation
  tr.classList.add("flash");
}

function renderTicker() {
  const body = $("stream-rows");
  if (!state.stream.rows.size) {
    body.replaceChildren(el("tr", { class: "empty" },
      el("td", { colSpan: 5, class: "muted", text: "Subscribe to see the ticker." })));
  }
  drawChart();
}

function renderStream() {
  const s = state.stream;
  const label = $("stream-state");
  label.dataset.subscribed = String(s.subscribed);
  label.dataset.seq = String(s.lastSeq);
  if (s.subscribed) {
    const seconds = Math.min(5, Math.max(1, (Date.now() - s.subscribedAt) / 1000));
    const rate = s.received.length / seconds;
    label.textContent = `Subscribed · last #${s.lastSeq} · ${rate.toFixed(1)} msg/s`;
  } else if (s.wanted && !state.loggedIn) {
    label.textContent = `Paused at #${s.lastSeq}: resumes after reconnecting`;
  } else if (s.wanted) {
    label.textContent = "Subscribing…";
  } else {
    label.textContent = "Not subscribed";
  }
  $("stream-subscribe").disabled = s.wanted;
  $("stream-unsubscribe").disabled = !s.wanted;
}

const PALETTE = ["#4f46e5", "#0891b2", "#16a34a", "#d97706", "#dc2626", "#9333ea", "#db2777", "#65a30d"];
function symbolColor(symbol) {
  const symbols = [...state.stream.rows.keys()].sort();
  const i = symbols.indexOf(symbol);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

let chartPending = false;
function scheduleChart() {
  if (chartPending) return;
  chartPending = true;
  requestAnimationFrame(() => { chartPending = false; drawChart(); });
}

// Price change in % since the first price seen, one line per symbol, last minute.
function drawChart() {
  const canvas = $("stream-chart");
  if (!canvas || canvas.offsetParent === null) return;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const style = getComputedStyle(document.documentElement);
  const grid = style.getPropertyValue("--border").trim();
  const muted = style.getPropertyValue("--muted").trim();
  const left = 48, right = 8, top = 8, bottom = 20;
  const now = Date.now();
  let first = now;
  for (const row of state.stream.rows.values()) if (row.points.length) first = Math.min(first, row.points[0][0]);
  // The time axis grows with the data, from 10 s up to CHART_WINDOW.
  const span = Math.min(CHART_WINDOW, Math.max(10000, now - first));
  const t0 = now - span;
  let lo = Infinity, hi = -Infinity;
  const lines = [];
  for (const [symbol, row] of [...state.stream.rows].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const pts = row.points.map(([t, p]) => [t, ((p - row.first) / row.first) * 100]);
    for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    lines.push([symbol, pts]);
  }
  if (!Number.isFinite(lo)) { lo = -1; hi = 1; }
  // Round gridlines: a nice step (1, 2, 2.5 or 5 times a power of ten) covering the range.
  const raw = Math.max(hi - lo, 0.2) / 4;
  const p10 = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p10).find((v) => v >= raw);
  lo = Math.floor(lo / step) * step;
  hi = Math.max(Math.ceil(hi / step) * step, lo + step);
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + (Number.isInteger(step / p10) ? 0 : 1));
  const x = (t) => left + ((t - t0) / span) * (w - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom);
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let v = lo; v <= hi + step / 2; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.strokeStyle = grid;
    ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(w - right, yy); ctx.stroke();
    ctx.fillStyle = muted;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    const label = Math.abs(v) < step / 1e6 ? "0" : `${v > 0 ? "+" : ""}${v.toFixed(digits)}`;
    ctx.fillText(`${label}%`, left - 6, yy);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "alphabetic";
  const every = span > 30000 ? 15 : span > 15000 ? 5 : 2;
  for (let s = 0; s * 1000 <= span + 10; s += every) {
    ctx.fillText(s ? `-${s}s` : "now", Math.max(left + 10, Math.min(x(now - s * 1000), w - right - 12)), h - 4);
  }
  if (!lines.length) {
    ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(state.stream.wanted ? "Waiting for the ticker…" : "Subscribe to draw the ticker", left + (w - left - right) / 2, top + (h - top - bottom) / 2);
  }
  ctx.lineWidth = 1.8;
  ctx.lineJoin = "round";
  // A price holds until its next tick: step lines, each carried on to "now".
  for (const [symbol, pts] of lines) {
    if (!pts.length) continue;
    ctx.strokeStyle = ctx.fillStyle = symbolColor(symbol);
    ctx.beginPath();
    pts.forEach(([t, v], i) => {
      if (i) { ctx.lineTo(x(t), y(pts[i - 1][1])); ctx.lineTo(x(t), y(v)); } else ctx.moveTo(x(t), y(v));
    });
    const [, lastV] = pts[pts.length - 1];
    ctx.lineTo(x(now), y(lastV));
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x(now), y(lastV), 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }
  $("stream-legend").replaceChildren(...lines.map(([symbol]) => {
    const s = el("span", { text: symbol });
    s.style.setProperty("--swatch", symbolColor(symbol));
    return s;
  }));
}

// ------------------------------------------------------------------ tabs

function markTab(tab) {
  $(`tab-${tab}`).dataset.unread = "true";
}

function showTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll(".tabs [data-tab]")) {
    const selected = button.dataset.tab === tab;
    button.setAttribute("aria-selected", String(selected));
    if (selected) delete button.dataset.unread;
    $(`panel-${button.dataset.tab}`).hidden = !selected;
  }
  refreshShown();
  if (tab === "streamed") drawChart();
}

// What the shown tab needs from the server: the user list or the members list.
function refreshShown() {
  if (!state.loggedIn || document.hidden) return;
  if (state.tab === "routed") requestWho();
  if (state.tab === "group") requestMembers(state.currentGroup);
}

// ------------------------------------------------------------------ wiring

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("login-name").value.trim();
  if (!name) return;
  $("login-error").hidden = true;
  clearError();
  if (state.client && state.client.state !== "closed") return;  // already on its way
  startSession(name);
});

$("logout").addEventListener("click", logout);
$("error-close").addEventListener("click", clearError);

for (const button of document.querySelectorAll(".tabs [data-tab]")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}
document.querySelector(".tabs").addEventListener("keydown", (ev) => {
  const tabs = ["echo", "routed", "group", "streamed"];
  const i = tabs.indexOf(state.tab);
  if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
    const next = tabs[(i + (ev.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    showTab(next);
    $(`tab-${next}`).focus();
  }
});

$("echo-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("echo-text");
  if (send({ type: "echo", text: input.value })) input.value = "";
});

$("routed-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const to = $("routed-to").value;
  const input = $("routed-text");
  if (!to) { showError("no_recipient", "Pick a connected user first."); return; }
  if (send({ type: "routed", to, text: input.value })) {
    addLog($("routed-log"), { cls: "out", from: `to ${to}`, text: input.value, data: { testid: "routed-sent", to } });
    input.value = "";
  }
});
$("routed-refresh").addEventListener("click", requestWho);

$("group-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const group = groupName();
  if (group) joinGroup(group);
});
$("group-leave").addEventListener("click", () => {
  const group = groupName();
  if (group) leaveGroup(group);
});
$("group-name").addEventListener("change", () => {
  const group = $("group-name").value.trim();
  if (group && group !== state.currentGroup) {
    state.currentGroup = group;
    renderMembers(state.groups.get(group)?.members || []);
    renderGroups();
    requestMembers(group);
  }
});
$("group-publish-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const group = groupName();
  const input = $("group-text");
  if (group && send({ type: "grouped", action: "publish", group, text: input.value })) input.value = "";
});

$("stream-subscribe").addEventListener("click", () => {
  if (!state.client) return;
  // A fresh subscription starts live; the client resumes it with `since` after a drop.
  state.stream.wanted = true;
  state.stream.lastSeq = 0;
  state.stream.sub = state.client.subscribe(STREAM, { onMessage: onStreamed });
  renderStream();
});
$("stream-unsubscribe").addEventListener("click", () => {
  state.stream.wanted = false;
  const sub = state.stream.sub;
  state.stream.sub = null;
  if (sub) sub.unsubscribe().catch(() => {});
  if (!state.loggedIn) state.stream.subscribed = false;
  renderStream();
});

setInterval(refreshShown, WHO_EVERY);
setInterval(() => { if (state.stream.subscribed) { renderStream(); if (state.tab === "streamed") drawChart(); } }, 1000);
window.addEventListener("resize", drawChart);
document.addEventListener("visibilitychange", refreshShown);

// Hooks for tests and curious users: the current state, read-only by convention.
window.trioWsDemo = { state, send };
