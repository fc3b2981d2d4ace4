// trio_ws demo page: one WebSocket to /ws speaking the demo protocol (docs/protocol.md).
// Plain JavaScript, no dependencies. The connection logic keeps what the user asked for
// (the name, the groups, the stream subscription) and restores it after every reconnect.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const CLOSE_CODES = {
    1000: "normal closure", 1001: "going away", 1002: "protocol error",
    1003: "unsupported data", 1005: "no status code", 1006: "connection lost",
    1007: "invalid data", 1008: "policy violation", 1009: "message too big",
    1010: "extension required", 1011: "server error", 1012: "service restart",
    1013: "try again later", 1015: "TLS failure",
  };
  const BACKOFF_FIRST = 500;      // ms before the first reconnect attempt
  const BACKOFF_MAX = 10000;      // ms, the longest wait between attempts
  const NAME_RETRIES = 3;         // name_taken retries on one connection after a reconnect
                                  // (the 5th failed login on a connection closes it)
  const NAME_RETRY_DELAY = 400;   // ms; the server frees a name within a second
  const WHO_EVERY = 3000;         // ms, refresh of the user list / members while shown
  const PING_EVERY = 15000;       // ms, application ping (latency display)
  const STREAM_GROUP = "stream";
  const CHART_WINDOW = 60000;     // ms of ticker history drawn

  const token = new URLSearchParams(location.search).get("token");

  const state = {
    ws: null,
    name: "",              // the name asked for; kept for reconnects
    loggedIn: false,
    resume: false,         // true once logged in: reconnect and log in again after a drop
    attempt: 0,            // reconnect attempts since the last successful login
    reconnectTimer: null,
    countdownTimer: null,
    nameRetries: 0,
    tab: "echo",
    groups: new Map(),     // group -> {lastSeq, members: []}
    currentGroup: "",
    stream: { wanted: false, subscribed: false, since: 0, lastSeq: 0, rows: new Map(), received: [] },
    skipped: 0,            // seqs never received and never reported by a `gap` (should stay 0)
    pingSent: 0,
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
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(message));
      return true;
    }
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

  // ------------------------------------------------------------------ connection

  function wsURL() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    state.reconnectTimer = null;
    const ws = new WebSocket(wsURL());
    state.ws = ws;
    state.loggedIn = false;
    state.nameRetries = 0;
    setStatus("connecting", state.attempt ? `Reconnecting (attempt ${state.attempt})…` : "Connecting…");
    event(`connecting to ${wsURL()}`);
    ws.onopen = () => {
      if (ws !== state.ws) return;
      setStatus("open", "Open · logging in…");
      event("open");
      sendLogin();
    };
    ws.onmessage = (ev) => {
      if (ws !== state.ws) return;
      if (typeof ev.data !== "string") return;  // binary echo: not used by this page
      let message;
      try { message = JSON.parse(ev.data); } catch { return; }
      handle(message);
    };
    ws.onclose = (ev) => {
      if (ws !== state.ws) return;
      state.ws = null;
      const wasLoggedIn = state.loggedIn;
      state.loggedIn = false;
      state.stream.subscribed = false;
      renderStream();
      const text = closeText(ev.code, ev.reason);
      event(text.toLowerCase(), "error");
      if (state.resume) {
        scheduleReconnect(text);
      } else {
        setStatus("closed", text);
        setLoginEnabled(true);
        if (!wasLoggedIn && ev.code !== 1000) showLoginError(`closed ${ev.code}`, ev.reason || CLOSE_CODES[ev.code] || "connection closed");
      }
    };
  }

  function sendLogin() {
    const message = { type: "login", name: state.name };
    if (token) message.token = token;
    send(message);
  }

  function scheduleReconnect(why) {
    state.attempt += 1;
    const base = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (state.attempt - 1));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    const due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, (due - Date.now()) / 1000).toFixed(1);
      setStatus("reconnecting", `${why} · retrying in ${left} s`,
        `Connection lost. Reconnecting automatically (attempt ${state.attempt}); your groups and stream resume where they left off.`);
    };
    tick();
    clearInterval(state.countdownTimer);
    state.countdownTimer = setInterval(tick, 100);
    state.reconnectTimer = setTimeout(connect, delay);
    event(`reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${state.attempt})`);
  }

  function onWelcome(message) {
    const resumed = state.resume;
    state.loggedIn = true;
    state.resume = true;
    state.attempt = 0;
    state.nameRetries = 0;
    state.name = message.name;
    clearInterval(state.countdownTimer);
    setStatus("open", `Open · ${message.name}`);
    event(resumed ? `logged in again as ${message.name}` : `logged in as ${message.name}`);
    $("login-error").hidden = true;
    if (["not_connected"].includes($("error").dataset.code)) clearError();
    $("me").textContent = message.name;
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    // Resume: every group and the stream, from the last sequence number seen.
    for (const [group, g] of state.groups) {
      send({ type: "grouped", action: "subscribe", group, since: g.lastSeq, epoch: g.epoch });
    }
    if (state.stream.wanted) {
      send({ type: "streamed", action: "subscribe", since: state.stream.lastSeq, epoch: state.stream.epoch });
    }
    renderGroups();
    refreshShown();
    ping();
    if (!resumed) $(`tab-${state.tab}`).focus();
  }

  function onLoginError(message) {
    if (state.resume && message.code === "name_taken" && state.nameRetries < NAME_RETRIES) {
      // After a drop the server may still hold our old connection for a moment.
      state.nameRetries += 1;
      event(`name ${state.name} still taken, retrying (${state.nameRetries}/${NAME_RETRIES})`);
      setTimeout(() => { if (state.ws && !state.loggedIn) sendLogin(); }, NAME_RETRY_DELAY * state.nameRetries);
      return;
    }
    if (state.resume) {
      // Could not get our name back: give up and let the user choose.
      state.resume = false;
      resetSession();
      $("login-view").hidden = false;
      $("app-view").hidden = true;
      $("login-name").value = state.name;
    }
    showLoginError(message.code, message.message);
    setLoginEnabled(true);
    setStatus("open", "Open");
  }

  function setLoginEnabled(enabled) {
    $("login-button").disabled = !enabled;
    $("login-name").disabled = !enabled;
  }

  function resetSession() {
    state.groups.clear();
    state.currentGroup = "";
    state.stream.wanted = false;
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
  }

  function logout() {
    state.resume = false;
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "logout");
    state.loggedIn = false;
    resetSession();
    clearError();
    setStatus("idle", "Not connected");
    event("logged out");
    $("app-view").hidden = true;
    $("login-view").hidden = false;
    setLoginEnabled(true);
    $("login-name").focus();
  }

  // ------------------------------------------------------------------ incoming messages

  function handle(m) {
    switch (m.type) {
      case "welcome": return onWelcome(m);
      case "error": return onError(m);
      case "echo": return addLog($("echo-log"), { tag: "echo", text: m.text, data: { testid: "echo-item" } });
      case "routed": return onRouted(m);
      case "who": return onWho(m);
      case "subscribed": return onSubscribed(m);
      case "unsubscribed": return onUnsubscribed(m);
      case "gap": return onGap(m);
      case "grouped": return onGrouped(m);
      case "members": return onMembers(m);
      case "streamed": return onStreamed(m);
      case "pong": return onPong();
      default: event(`unknown message type ${JSON.stringify(m.type)}`);
    }
  }

  function onError(m) {
    if (!state.loggedIn) return onLoginError(m);
    if (m.code === "unknown_recipient") {
      addLog($("routed-log"), { cls: "error", tag: "error", text: m.message || "No such user is connected." });
      requestWho();
    }
    showError(m.code, m.message);
    event(`error ${m.code}: ${m.message || ""}`, "error");
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
    const others = m.names.filter((n) => n !== state.name);
    const options = others.map((n) => el("option", { value: n, text: n }));
    if (!options.length) options.push(el("option", { value: "", text: "Nobody else is online" }));
    select.replaceChildren(...options);
    if (others.includes(current)) select.value = current;
    $("routed-online").textContent = m.names.length ? m.names.join(", ") : "—";
  }

  // ------------------------------------------------------------------ groups

  function onSubscribed(m) {
    if (m.group === STREAM_GROUP && state.stream.wanted) {
      state.stream.subscribed = true;
      state.stream.since = Date.now();
      // Another epoch, or a lower seq than we saw, means the history started again (the
      // server or its broker restarted): the numbers we kept mean nothing now.
      const restarted = (state.stream.epoch && m.epoch !== state.stream.epoch) || m.seq < state.stream.lastSeq;
      state.stream.epoch = m.epoch;
      if (restarted) {
        notice($("stream-notices"), `The stream started again at #${m.seq} (the server restarted).`);
        state.stream.lastSeq = 0;  // the server replays what it keeps of the new history
      } else if (!state.stream.lastSeq) {
        state.stream.lastSeq = m.seq;
      }
      renderStream();
      return;
    }
    const g = state.groups.get(m.group);
    if (!g) return;
    g.subscribed = true;
    const restarted = (g.epoch && m.epoch !== g.epoch) || m.seq < g.lastSeq;
    g.epoch = m.epoch;
    if (restarted) {
      addLog($("group-log"), { cls: "notice", tag: m.group, text: `Group restarted at #${m.seq} (the server restarted).` });
      g.lastSeq = 0;  // the server replays what it keeps of the new history
    } else if (!g.lastSeq) {
      g.lastSeq = m.seq;
    }
    renderGroups();
    requestMembers(m.group);
  }

  function onUnsubscribed(m) {
    if (m.group === STREAM_GROUP && !state.groups.has(STREAM_GROUP)) {
      state.stream.subscribed = false;
      renderStream();
      return;
    }
    event(`left group ${m.group}`);
  }

  function onGap(m) {
    const text = `Missed #${m.from}–#${m.to}: the server no longer keeps those messages.`;
    // The kept messages follow from m.to + 1: the reported range is not counted as skipped.
    const queue = m.group === STREAM_GROUP && state.stream.wanted ? state.stream : state.groups.get(m.group);
    if (queue && m.to > queue.lastSeq) queue.lastSeq = m.to;
    if (m.group === STREAM_GROUP && state.stream.wanted) {
      notice($("stream-notices"), text, { testid: "gap", from: m.from, to: m.to });
    } else {
      addLog($("group-log"), { cls: "notice", tag: m.group, text, data: { testid: "gap", from: m.from, to: m.to } });
    }
    event(`gap in ${m.group}: #${m.from}–#${m.to}`);
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
    if (m.seq <= g.lastSeq) return;  // already seen (defensive: the server sends no duplicates)
    if (g.lastSeq && m.seq > g.lastSeq + 1) state.skipped += m.seq - g.lastSeq - 1;
    g.lastSeq = m.seq;
    addLog($("group-log"), {
      cls: m.from === state.name ? "own" : "in",
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
    list.replaceChildren(...names.map((n) => el("li",
      { class: n === state.name ? "me" : "", "data-testid": "member", "data-name": n },
      el("span", { class: "dot" }), el("span", { text: n === state.name ? `${n} (you)` : n }))));
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
    if (!state.groups.has(group)) state.groups.set(group, { lastSeq: 0, members: [], subscribed: false });
    send({ type: "grouped", action: "subscribe", group });
    selectGroup(group);
  }

  function leaveGroup(group) {
    state.groups.delete(group);
    send({ type: "grouped", action: "unsubscribe", group });
    if (state.currentGroup === group) {
      state.currentGroup = state.groups.size ? [...state.groups.keys()][0] : "";
      $("group-name").value = state.currentGroup;
    }
    const g = state.groups.get(state.currentGroup);
    renderMembers(g ? g.members : []);
    renderGroups();
    requestMembers(state.currentGroup);
  }

  // ------------------------------------------------------------------ streamed

  function onStreamed(m) {
    const s = state.stream;
    if (!s.wanted) return;
    if (m.seq <= s.lastSeq) return;
    if (s.lastSeq && m.seq > s.lastSeq + 1) state.skipped += m.seq - s.lastSeq - 1;
    s.lastSeq = m.seq;
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
      const seconds = Math.min(5, Math.max(1, (Date.now() - s.since) / 1000));
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

  // ------------------------------------------------------------------ ping

  function ping() {
    if (!state.loggedIn) return;
    state.pingSent = performance.now();
    send({ type: "ping" });
  }

  function onPong() {
    if (!state.pingSent) return;
    const ms = performance.now() - state.pingSent;
    state.pingSent = 0;
    $("latency").textContent = `· round trip ${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
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
    state.name = name;
    $("login-error").hidden = true;
    clearError();
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      sendLogin();  // the connection stays open after a failed login: try again on it
    } else if (!state.ws) {
      setLoginEnabled(false);
      connect();
    }
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
    // A fresh subscription starts live; only a resume after a reconnect asks for `since`.
    state.stream.wanted = true;
    state.stream.lastSeq = 0;
    send({ type: "streamed", action: "subscribe" });
    renderStream();
  });
  $("stream-unsubscribe").addEventListener("click", () => {
    state.stream.wanted = false;
    send({ type: "streamed", action: "unsubscribe" });
    renderStream();
  });

  setInterval(refreshShown, WHO_EVERY);
  setInterval(ping, PING_EVERY);
  setInterval(() => { if (state.stream.subscribed) { renderStream(); if (state.tab === "streamed") drawChart(); } }, 1000);
  window.addEventListener("resize", drawChart);
  document.addEventListener("visibilitychange", refreshShown);

  // Hooks for tests and curious users: the current state, read-only by convention.
  window.trioWsDemo = { state, send };
})();
