// trio_ws.js: a browser client for trio_ws servers that speak the demo wire protocol
// (docs/protocol.md). One ES module, no dependencies; every App serves it at /trio_ws.js.
//
// Theory of operation. A Client owns at most one WebSocket at a time and moves through
// these states:
//
//   idle --connect()--> connecting --open--> login --welcome--> connected
//   connecting/login/connected --unexpected close--> reconnecting --timer/online--> connecting
//   any --close()--, a close code in NO_RETRY_CODES, or a refused login --> closed
//   reconnecting --offline event--> offline --online event--> connecting
//
// What the user asked for (the name or token, every subscription) outlives the socket.
// Each subscription remembers the last seq it delivered and the epoch of the history that
// number belongs to; after every login the client subscribes again with `since` and
// `epoch`, so the server replays exactly what was missed, or announces a `gap` for what it
// no longer keeps (docs/protocol.md, "Grouped"). A seq that skips ahead without a gap is
// reported too (a `gap` event with `reported: false`), so nothing is ever lost silently.
//
// Replies to one client come in the order of its requests. request() waits for the next
// reply of the expected type; an `error` reply goes to the oldest request still waiting,
// unless a message sent without a reply (send()) came before that request and has not
// been answered: then the error is that message's, and surfaces as an `error` event.
"use strict";

/** Close codes after which the client does not reconnect (see docs/js-client.md).
 *
 * - 1000: the server ended the session on purpose.
 * - 1002, 1003, 1007, 1009, 1010: the client broke a rule; the same client would break it
 *   again.
 * - 1008: policy: the name was taken over by a newer login of the same identity, the
 *   login failed five times, or a token was refused. Reconnecting would take the name
 *   back from the newer session, which would take it back again, forever.
 *
 * Every other code (1001 going away, 1006 connection lost, 1011, 1012, 1013, 1014, ...) is
 * retried with backoff.
 * @type {ReadonlySet<number>}
 */
export const NO_RETRY_CODES = Object.freeze(new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]));

/** Human words for the close codes of RFC 6455 section 7.4.1.
 * @type {Readonly<Record<number, string>>}
 */
export const CLOSE_CODES = Object.freeze({
  1000: "normal closure", 1001: "going away", 1002: "protocol error",
  1003: "unsupported data", 1005: "no status code", 1006: "connection lost",
  1007: "invalid data", 1008: "policy violation", 1009: "message too big",
  1010: "extension required", 1011: "server error", 1012: "service restart",
  1013: "try again later", 1014: "bad gateway", 1015: "TLS failure",
});

/** The queue the demo's ticker publishes to; its messages have type `streamed`. */
export const STREAM = "stream";

/** The codes this client uses when it closes a connection itself (4000-4999 is private
 * use, RFC 6455 section 7.4.2). */
export const CLIENT_CLOSE = Object.freeze({
  heartbeat: 4000,      // no pong within heartbeatTimeout: the connection is dead
  openTimeout: 4001,    // no welcome within openTimeout of creating the socket
  nameTaken: 4002,      // the name is still held by our old connection: try again later
});

/**
 * @typedef {object} BackoffOptions
 * @property {number} [first=500] milliseconds before the first reconnect attempt
 * @property {number} [max=10000] the longest wait between attempts, in milliseconds
 * @property {number} [factor=2] growth per attempt
 * @property {number} [jitter=0.2] each wait is scaled by a random factor in [1-jitter, 1+jitter]
 */

/** @type {Required<BackoffOptions>} */
const DEFAULT_BACKOFF = Object.freeze({ first: 500, max: 10000, factor: 2, jitter: 0.2 });

/**
 * The wait before reconnect attempt `attempt` (1 for the first): `first * factor **
 * (attempt - 1)`, capped at `max`, then scaled by a random factor in `[1 - jitter, 1 +
 * jitter]` so that many clients dropped at once do not come back at the same instant.
 * @param {number} attempt 1, 2, 3, ...
 * @param {BackoffOptions} [options]
 * @param {() => number} [random] returns a number in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const { first, max, factor, jitter } = { ...DEFAULT_BACKOFF, ...options };
  if (!(attempt >= 1)) throw new RangeError(`attempt must be 1 or more, not ${attempt}`);
  if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`jitter must be in [0, 1], not ${jitter}`);
  if (!(first > 0 && max >= first && factor >= 1)) {
    throw new RangeError(`backoff needs first > 0, max >= first and factor >= 1, not ${JSON.stringify({ first, max, factor })}`);
  }
  const base = Math.min(max, first * factor ** (attempt - 1));
  return Math.round(base * (1 - jitter + 2 * jitter * random()));
}

/** Whether the client reconnects after a close with this code.
 * @param {number} code
 * @returns {boolean}
 */
export function retries(code) {
  return !NO_RETRY_CODES.has(code);
}

/** A short text for a close: `"1006 connection lost: reason"`.
 * @param {number} code
 * @param {string} [reason]
 * @returns {string}
 */
export function describeClose(code, reason = "") {
  const label = CLOSE_CODES[code] ? ` ${CLOSE_CODES[code]}` : "";
  return `${code}${label}${reason ? `: ${reason}` : ""}`;
}

/** An `error` message from the server (docs/protocol.md section 6), or a local failure
 * with one of the codes `not_connected`, `timeout`, `closed`. */
export class ServerError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   */
  constructor(code, message = "") {
    super(message ? `${code}: ${message}` : code);
    this.name = "ServerError";
    /** @type {string} */
    this.code = code;
  }
}

/**
 * @typedef {{type: string, [field: string]: any}} Message
 *
 * @typedef {object} SubscriptionHandlers
 * @property {(message: Message) => void} [onMessage] each message of the queue, in seq order
 * @property {(gap: GapDetail) => void} [onGap] messages of the queue that will not come
 * @property {(reset: ResetDetail) => void} [onReset] the queue's history started again
 * @property {(error: ServerError) => void} [onError] the subscribe was refused
 * @property {number} [since] resume after this seq (of `epoch`) instead of starting live
 * @property {string} [epoch] the epoch `since` belongs to
 *
 * @typedef {object} GapDetail
 * @property {string} group
 * @property {number} from first seq missed
 * @property {number} to last seq missed (inclusive)
 * @property {boolean} reported true for the server's `gap` notice; false for a hole the
 *   client found itself (a seq that skipped ahead), which a correct server never leaves
 *
 * @typedef {object} ResetDetail
 * @property {string} group
 * @property {string|undefined} epoch the new epoch
 * @property {number} seq the last seq of the new history
 * @property {number} lastSeq the last seq seen of the old one
 *
 * @typedef {object} CloseDetail
 * @property {number} code the close code (1006 for a connection lost without a close frame)
 * @property {string} reason
 * @property {boolean} willRetry whether the client reconnects
 * @property {boolean} wasLoggedIn
 *
 * @typedef {"idle"|"connecting"|"login"|"connected"|"reconnecting"|"offline"|"closed"} ClientState
 *
 * @typedef {object} ClientOptions
 * @property {string} [url] the WebSocket URL; default `ws(s)://<this page's host>/ws`
 * @property {string} [name] the name to log in with (optional when a token names the client)
 * @property {string|(() => string|Promise<string>)} [token] a login credential, or a
 *   function asked for a fresh one before every login
 * @property {BackoffOptions} [backoff]
 * @property {number} [maxRetries=Infinity] reconnect attempts after a drop before giving up
 * @property {number} [openTimeout=10000] ms from creating the socket to `welcome`
 * @property {number} [requestTimeout=10000] ms request() waits for its reply
 * @property {number|null} [heartbeatInterval=20000] ms between application pings while
 *   connected (null: none); a ping without a pong within heartbeatTimeout closes the
 *   connection (4000) and reconnects, so a silently dead network is noticed
 * @property {number} [heartbeatTimeout=10000]
 * @property {number} [nameRetries=3] after a reconnect, `name_taken` logins retried on
 *   the same connection (the fifth failed login on a connection closes it with 1008)
 * @property {number} [nameRetryDelay=400] ms, times the retry number
 * @property {number} [nameTakenTimeout=30000] ms after a drop during which `name_taken`
 *   means "our old connection still holds it" (the server notices a drop within about a
 *   second; a killed node's names expire with its lease, 10 s by default); after that the
 *   client gives up with a `loginerror`
 * @property {boolean} [followNetwork=true] pause while the browser is offline and
 *   reconnect at once when it comes back online
 * @property {typeof WebSocket} [WebSocket] the WebSocket class (for tests and other hosts)
 */

const REPLY_OF = Object.freeze({ echo: "echo", who: "who", ping: "pong" });
const MAX_UNANSWERED = 1000;  // fire-and-forget sends remembered for error attribution
// Refusals of a subscribe that mean "not now" (docs/protocol.md section 6): retried.
const TRANSIENT_ERRORS = new Set(["broker_unavailable", "rate_limited"]);

/** The reply type (and group) a request waits for, or null for messages without reply. */
function replyKey(message) {
  if (message.type in REPLY_OF) return REPLY_OF[message.type];
  if (message.type === "grouped" || message.type === "streamed") {
    const group = message.type === "streamed" ? STREAM : message.group;
    if (message.action === "subscribe") return `subscribed:${group}`;
    if (message.action === "unsubscribe") return `unsubscribed:${group}`;
    if (message.action === "members") return `members:${group}`;
  }
  return null;
}

function keyOfReply(m) {
  if (m.type === "subscribed" || m.type === "unsubscribed" || m.type === "members") {
    return `${m.type}:${m.group}`;
  }
  return m.type;
}

/** Call a user's handler; an exception is reported (as an uncaught error would be) but
 * never breaks the client's own bookkeeping. */
function callHandler(handler, arg) {
  if (!handler) return;
  try {
    handler(arg);
  } catch (err) {
    if (typeof globalThis.reportError === "function") globalThis.reportError(err);
    else setTimeout(() => { throw err; });
  }
}

function defaultURL() {
  const loc = globalThis.location;
  if (!loc) throw new TypeError("no page location: pass options.url");
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

/** One queue this client wants: what it delivered last, and to whom. */
export class Subscription {
  /**
   * @param {Client} client
   * @param {string} group
   * @param {SubscriptionHandlers} handlers
   */
  constructor(client, group, handlers) {
    /** @type {Client} */
    this.client = client;
    /** @type {string} */
    this.group = group;
    /** @type {SubscriptionHandlers} */
    this.handlers = handlers;
    /** The last seq delivered (or announced missing by a gap); 0 before any.
     * @type {number} */
    this.lastSeq = handlers.since ?? 0;
    /** The epoch `lastSeq` belongs to.
     * @type {string|undefined} */
    this.epoch = handlers.epoch;
    /** Whether `since` applies: true once the queue's position is known.
     * @type {boolean} */
    this.resumable = handlers.since != null;
    /** Subscribed on the current connection.
     * @type {boolean} */
    this.active = false;
    /** @type {boolean} */
    this.cancelled = false;
    /** Transient refusals (`broker_unavailable`, `rate_limited`) since the last success.
     * @type {number} */
    this.failures = 0;
  }

  /** The subscribe request for the current position.
   * @returns {Message} */
  request() {
    const m = this.group === STREAM
      ? { type: "streamed", action: "subscribe" }
      : { type: "grouped", action: "subscribe", group: this.group };
    if (this.resumable) {
      m.since = this.lastSeq;
      if (this.epoch !== undefined) m.epoch = this.epoch;
    }
    return m;
  }

  /** Stop receiving this queue; resolves when the server confirmed (at once when offline).
   * @returns {Promise<void>} */
  async unsubscribe() {
    if (this.cancelled) return;
    this.cancelled = true;
    this.active = false;
    this.client._subscriptions.delete(this.group);
    if (this.client.state !== "connected") return;
    const m = this.group === STREAM
      ? { type: "streamed", action: "unsubscribe" }
      : { type: "grouped", action: "unsubscribe", group: this.group };
    await this.client.request(m);
  }
}

/**
 * A client that logs in, keeps its subscriptions across reconnects and resumes them.
 *
 * Events (each a CustomEvent; `detail` as listed):
 * - `state` {state, previous}: the client's state changed
 * - `welcome` {name, resumed}: logged in (again, when `resumed`)
 * - `loginerror` {code, message}: a login was refused for good; the client is closed
 * - `message` Message: every message from the server, after the client has handled it
 * - `error` ServerError: an `error` reply no request() was waiting for
 * - `subscribed` {group, seq, epoch, resumed}
 * - `gap` GapDetail, `reset` ResetDetail (also passed to the subscription's handlers)
 * - `close` CloseDetail: the connection ended
 * - `reconnecting` {attempt, delay}: the next attempt is due in `delay` ms
 * - `offline`, `online`: the browser lost or found its network
 * - `pong` {rtt}: a heartbeat answered, round trip in ms
 */
export class Client extends EventTarget {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    super();
    /** @type {Required<Omit<ClientOptions, "name"|"token"|"url"|"WebSocket">> & ClientOptions} */
    this.options = {
      maxRetries: Infinity,
      openTimeout: 10000,
      requestTimeout: 10000,
      heartbeatInterval: 20000,
      heartbeatTimeout: 10000,
      nameRetries: 3,
      nameRetryDelay: 400,
      nameTakenTimeout: 30000,
      followNetwork: true,
      ...options,
      backoff: { ...DEFAULT_BACKOFF, ...(options.backoff || {}) },
    };
    backoffDelay(1, this.options.backoff);  // a bad backoff fails here, not at the first drop
    for (const key of ["openTimeout", "requestTimeout", "heartbeatTimeout", "nameRetryDelay", "nameTakenTimeout"]) {
      if (!(this.options[key] >= 0)) throw new RangeError(`${key} must be a number of ms, not ${this.options[key]}`);
    }
    /** @type {string} */
    this.url = options.url || defaultURL();
    /** The name to log in with; after `welcome`, the name as the server registered it.
     * @type {string|undefined} */
    this.name = options.name;
    /** @type {ClientState} */
    this.state = "idle";
    /** Reconnect attempts since the last successful login.
     * @type {number} */
    this.attempt = 0;
    /** @type {{connections: number, logins: number, retries: number, closes: Record<string, number>}} */
    this.stats = { connections: 0, logins: 0, retries: 0, closes: {} };
    /** @type {Map<string, Subscription>} */
    this._subscriptions = new Map();
    /** @type {WebSocket|null} */
    this._ws = null;
    this._everLoggedIn = false;
    this._loggedInOnThis = false;
    this._nameRetries = 0;
    this._droppedAt = 0;
    this._timers = new Set();
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    /** The socket a heartbeat ping is out on, if any. */
    this._pingOut = null;
    this._sent = 0;
    /** @type {{index: number, key: string, resolve: Function, reject: Function, timer: any}[]} */
    this._pending = [];
    /** @type {{index: number, type: string}[]} */
    this._unanswered = [];
    /** @type {{resolve: Function, reject: Function}[]} */
    this._connectWaiters = [];
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._onOffline = () => this._networkChanged(false);
    this._onOnline = () => this._networkChanged(true);
  }

  // ------------------------------------------------------------------ public verbs

  /** Connect and log in; resolves with the `welcome` message.
   *
   * Connection failures are retried with backoff. Rejects with a ServerError when the
   * login is refused (`name_taken`, `bad_name`, `unauthorized`, ...), when a close code
   * that is not retried ends the attempt, after `maxRetries`, or when close() is called.
   * @returns {Promise<Message>}
   */
  connect() {
    if (this.state === "connected") return Promise.resolve({ type: "welcome", name: this.name });
    const waiter = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (this.state === "idle" || this.state === "closed") {
      this.attempt = 0;
      this._everLoggedIn = false;
      this._listenNetwork(true);
      this._open();
    }
    return waiter;
  }

  /** Close the connection (1000) and stop reconnecting; subscriptions are kept, so a
   * later connect() resumes them.
   * @param {string} [reason] */
  close(reason = "") {
    this._listenNetwork(false);
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      this._detach(ws);
      try { ws.close(1000, reason); } catch { /* already closing */ }
    }
    this._failPending(new ServerError("closed", "the client was closed"));
    for (const sub of this._subscriptions.values()) sub.active = false;
    this._rejectConnect(new ServerError("closed", "the client was closed"));
    this._setState("closed");
  }

  /** Send a message that expects no reply (publish, routed). Returns false, sending
   * nothing, when not logged in.
   * @param {Message} message
   * @returns {boolean} */
  send(message) {
    if (this.state !== "connected" || !this._ws) return false;
    this._write(message);
    this._unanswered.push({ index: this._sent, type: String(message.type) });
    if (this._unanswered.length > MAX_UNANSWERED) this._unanswered.shift();
    return true;
  }

  /** Send a message and wait for its reply: `echo` -> `echo`, `who` -> `who`, `ping` ->
   * `pong`, and for `grouped`/`streamed` actions subscribe -> `subscribed`, unsubscribe ->
   * `unsubscribed`, members -> `members` (of the same group). Rejects with a ServerError
   * for an `error` reply, `timeout`, `not_connected`, or `closed` when the connection ends
   * first.
   * @param {Message} message
   * @param {{timeout?: number}} [options]
   * @returns {Promise<Message>} */
  request(message, { timeout = this.options.requestTimeout } = {}) {
    const key = replyKey(message);
    if (key === null) return Promise.reject(new TypeError(`no reply is defined for ${JSON.stringify(message.type)}`));
    if (!this._ws || this.state !== "connected") {
      return Promise.reject(new ServerError("not_connected", "not logged in"));
    }
    return this._request(message, key, timeout);
  }

  /** Subscribe to a queue (`"stream"` is the demo's ticker); kept across reconnects and
   * resumed with `since` and `epoch`. Subscribing again to the same group replaces the
   * handlers and keeps the position.
   * @param {string} group
   * @param {SubscriptionHandlers} [handlers]
   * @returns {Subscription} */
  subscribe(group, handlers = {}) {
    if (typeof group !== "string" || !group) throw new TypeError(`a group name is a non-empty string, not ${JSON.stringify(group)}`);
    const existing = this._subscriptions.get(group);
    if (existing) {
      existing.handlers = { ...handlers };
      return existing;
    }
    const sub = new Subscription(this, group, { ...handlers });
    this._subscriptions.set(group, sub);
    if (this.state === "connected") this._subscribe(sub);
    return sub;
  }

  /** The subscriptions, by group.
   * @returns {ReadonlyMap<string, Subscription>} */
  get subscriptions() {
    return this._subscriptions;
  }

  /** `client.on("gap", (detail) => ...)`: listen to an event's detail; returns a function
   * that stops listening.
   * @param {string} type
   * @param {(detail: any) => void} listener
   * @returns {() => void} */
  on(type, listener) {
    const wrapped = (ev) => listener(ev.detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  // ------------------------------------------------------------------ connection

  _setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _later(fn, ms) {
    const timer = setTimeout(() => { this._timers.delete(timer); fn(); }, ms);
    this._timers.add(timer);
    return timer;
  }

  _clearTimers() {
    for (const timer of this._timers) clearTimeout(timer);
    this._timers.clear();
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
  }

  _listenNetwork(on) {
    if (!this.options.followNetwork || typeof globalThis.addEventListener !== "function") return;
    globalThis.removeEventListener("offline", this._onOffline);
    globalThis.removeEventListener("online", this._onOnline);
    if (on) {
      globalThis.addEventListener("offline", this._onOffline);
      globalThis.addEventListener("online", this._onOnline);
    }
  }

  _online() {
    return !this.options.followNetwork || globalThis.navigator?.onLine !== false;
  }

  _open() {
    this._clearTimers();
    this._setState("connecting");
    this.stats.connections += 1;
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (err) {
      // A malformed URL: nothing to retry.
      this._giveUp(new ServerError("bad_url", String(err && err.message || err)));
      return;
    }
    this._ws = ws;
    this._loggedInOnThis = false;
    this._nameRetries = 0;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._setState("login");
      this._login();
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws || typeof ev.data !== "string") return;
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m === null || typeof m !== "object" || typeof m.type !== "string") return;
      this._handle(m);
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._closed(ev.code, ev.reason);
    };
    ws.onerror = () => { /* a close event follows */ };
    this._later(() => {
      if (ws === this._ws && !this._loggedInOnThis) this._abort(CLIENT_CLOSE.openTimeout, "no welcome in time");
    }, this.options.openTimeout);
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  /** Close the current socket from our side and handle it as a drop (retried). */
  _abort(code, reason) {
    const ws = this._ws;
    if (!ws) return;
    this._detach(ws);
    try { ws.close(code, reason); } catch { /* already closing */ }
    this._closed(code, reason);
  }

  async _login() {
    const ws = this._ws;
    const m = { type: "login" };
    if (this.name !== undefined) m.name = this.name;
    const token = this.options.token;
    if (token !== undefined) {
      try {
        m.token = typeof token === "function" ? await token() : token;
      } catch (err) {
        this._abort(CLIENT_CLOSE.openTimeout, "no token");
        return;
      }
    }
    if (ws !== this._ws || ws.readyState !== 1) return;
    this._write(m);
  }

  _write(message) {
    this._ws.send(JSON.stringify(message));
    this._sent += 1;
  }

  _closed(code, reason) {
    const ws = this._ws;
    if (ws) this._detach(ws);
    this._ws = null;
    const wasLoggedIn = this._loggedInOnThis;
    this._loggedInOnThis = false;
    this._clearTimers();
    this._failPending(new ServerError("closed", `connection closed (${describeClose(code, reason)})`));
    for (const sub of this._subscriptions.values()) sub.active = false;
    this.stats.closes[code] = (this.stats.closes[code] || 0) + 1;
    if (wasLoggedIn) this._droppedAt = Date.now();
    const willRetry = retries(code) && this.attempt < this.options.maxRetries;
    this._emit("close", { code, reason, willRetry, wasLoggedIn });
    if (!willRetry) {
      const why = retries(code) ? "too many reconnect attempts" : `closed ${describeClose(code, reason)}`;
      this._giveUp(new ServerError(retries(code) ? "gave_up" : `closed_${code}`, why));
      return;
    }
    this._scheduleReconnect();
  }

  _giveUp(error) {
    this._listenNetwork(false);
    this._clearTimers();
    this._rejectConnect(error);
    this._setState("closed");
  }

  _scheduleReconnect() {
    if (!this._online()) {
      this._setState("offline");
      return;
    }
    this.attempt += 1;
    this.stats.retries += 1;
    const delay = backoffDelay(this.attempt, this.options.backoff);
    this._setState("reconnecting");
    this._emit("reconnecting", { attempt: this.attempt, delay });
    this._reconnectTimer = this._later(() => this._open(), delay);
  }

  _networkChanged(online) {
    if (!online) {
      this._emit("offline", {});
      if (this.state === "reconnecting") {
        this._clearTimers();
        this._setState("offline");
      } else if (this.state === "connected") {
        this._heartbeat();  // find out at once whether the connection survived
      }
      return;
    }
    this._emit("online", {});
    if (this.state === "offline" || this.state === "reconnecting") {
      if (this.state === "offline") this.attempt += 1;
      this._open();
    }
  }

  _rejectConnect(error) {
    const waiters = this._connectWaiters.splice(0);
    for (const w of waiters) w.reject(error);
  }

  // ------------------------------------------------------------------ messages

  _handle(m) {
    if (!this._loggedInOnThis) {
      if (m.type === "welcome") this._welcome(m);
      else if (m.type === "error") this._loginError(m);
      this._emit("message", m);
      return;
    }
    switch (m.type) {
      case "error": this._error(m); break;
      case "subscribed": this._subscribed(m); this._answer(m); break;
      case "gap": this._gap(m); break;
      case "grouped": this._delivered(m.group, m); break;
      case "streamed": this._delivered(STREAM, m); break;
      default: this._answer(m);
    }
    this._emit("message", m);
  }

  _welcome(m) {
    const resumed = this._everLoggedIn;
    this._loggedInOnThis = true;
    this._everLoggedIn = true;
    this.attempt = 0;
    this.stats.logins += 1;
    this.name = m.name;
    this._pending = [];
    this._unanswered = [];
    this._clearTimers();
    this._setState("connected");
    for (const sub of this._subscriptions.values()) this._subscribe(sub);
    this._scheduleHeartbeat();
    this._emit("welcome", { name: m.name, resumed });
    const waiters = this._connectWaiters.splice(0);
    for (const w of waiters) w.resolve(m);
  }

  _loginError(m) {
    const resuming = this._everLoggedIn;
    const stillOurs = resuming && m.code === "name_taken"
      && Date.now() - this._droppedAt < this.options.nameTakenTimeout;
    if (stillOurs && this._nameRetries < this.options.nameRetries) {
      // Right after a drop the server may not have noticed the old connection's end.
      this._nameRetries += 1;
      const ws = this._ws;
      this._later(() => { if (ws === this._ws && !this._loggedInOnThis) this._login(); },
        this.options.nameRetryDelay * this._nameRetries);
      return;
    }
    if (stillOurs) {
      // Not free yet (a killed node's names live until its lease expires): a new
      // connection later, with backoff; the fifth failure on this one would close it.
      this._abort(CLIENT_CLOSE.nameTaken, "name still taken");
      return;
    }
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      this._detach(ws);
      try { ws.close(1000, "login refused"); } catch { /* already closing */ }
    }
    this._emit("loginerror", { code: m.code, message: m.message || "" });
    this._giveUp(new ServerError(m.code, m.message));
  }

  _subscribe(sub) {
    sub.active = false;
    const ws = this._ws;
    this._request(sub.request(), `subscribed:${sub.group}`, this.options.requestTimeout)
      .catch((err) => {
        if (err.code === "closed" || sub.cancelled) return;  // resubscribed after the reconnect
        if (err.code === "timeout") { this._abort(CLIENT_CLOSE.heartbeat, "subscribe timed out"); return; }
        if (TRANSIENT_ERRORS.has(err.code)) {
          // The server says "try again": again on this connection, with backoff; the
          // subscription keeps its position meanwhile.
          sub.failures += 1;
          this._emit("error", err);
          this._later(() => {
            if (ws === this._ws && this.state === "connected" && this._subscriptions.get(sub.group) === sub) {
              this._subscribe(sub);
            }
          }, backoffDelay(Math.min(sub.failures, 10), this.options.backoff));
          return;
        }
        this._subscriptions.delete(sub.group);
        sub.cancelled = true;
        callHandler(sub.handlers.onError, err);
        this._emit("error", err);
      });
  }

  _subscribed(m) {
    const sub = this._subscriptions.get(m.group);
    if (!sub || sub.cancelled) return;
    const resumed = sub.resumable;
    const restarted = resumed && (
      (sub.epoch !== undefined && m.epoch !== undefined && m.epoch !== sub.epoch)
      || (m.epoch === undefined && m.seq < sub.lastSeq));
    if (restarted) {
      const detail = { group: sub.group, epoch: m.epoch, seq: m.seq, lastSeq: sub.lastSeq };
      // Another history: with an epoch the server replays what it keeps of the new one
      // (with a gap for the rest); without one it replays nothing and goes on from seq.
      sub.lastSeq = m.epoch === undefined ? m.seq : 0;
      callHandler(sub.handlers.onReset, detail);
      this._emit("reset", detail);
    } else if (!resumed) {
      sub.lastSeq = m.seq;  // a fresh subscription starts live
    }
    sub.epoch = m.epoch;
    sub.resumable = true;
    sub.active = true;
    sub.failures = 0;
    this._emit("subscribed", { group: sub.group, seq: m.seq, epoch: m.epoch, resumed });
  }

  _gap(m) {
    const sub = this._subscriptions.get(m.group);
    if (!sub || sub.cancelled) return;
    if (m.to > sub.lastSeq) sub.lastSeq = m.to;
    this._reportGap({ group: m.group, from: m.from, to: m.to, reported: true }, sub);
  }

  _reportGap(detail, sub) {
    callHandler(sub.handlers.onGap, detail);
    this._emit("gap", detail);
  }

  _delivered(group, m) {
    const sub = this._subscriptions.get(group);
    if (!sub || sub.cancelled || typeof m.seq !== "number") return;
    if (m.seq <= sub.lastSeq) return;  // seen already (the server sends no duplicates)
    if (m.seq > sub.lastSeq + 1 && sub.resumable) {
      this._reportGap({ group, from: sub.lastSeq + 1, to: m.seq - 1, reported: false }, sub);
    }
    sub.lastSeq = m.seq;
    callHandler(sub.handlers.onMessage, m);
  }

  // ------------------------------------------------------------------ requests

  _request(message, key, timeout) {
    return new Promise((resolve, reject) => {
      this._write(message);
      const entry = { index: this._sent, key, resolve, reject, timer: null };
      entry.timer = this._later(() => {
        const i = this._pending.indexOf(entry);
        if (i >= 0) this._pending.splice(i, 1);
        reject(new ServerError("timeout", `no ${key} reply within ${timeout} ms`));
      }, timeout);
      this._pending.push(entry);
    });
  }

  /** A reply: the oldest request waiting for its type gets it. */
  _answer(m) {
    const key = keyOfReply(m);
    const i = this._pending.findIndex((p) => p.key === key);
    if (i < 0) return;
    const [entry] = this._pending.splice(i, 1);
    clearTimeout(entry.timer);
    this._timers.delete(entry.timer);
    // Replies come in request order: every message sent before this one was answered.
    this._unanswered = this._unanswered.filter((u) => u.index > entry.index);
    entry.resolve(m);
  }

  _error(m) {
    const error = new ServerError(m.code, m.message);
    const oldest = this._pending[0];
    const earlier = this._unanswered.length && (!oldest || this._unanswered[0].index < oldest.index);
    if (earlier || !oldest) {
      if (earlier) error.request = this._unanswered.shift().type;
      this._emit("error", error);
      return;
    }
    this._pending.shift();
    clearTimeout(oldest.timer);
    this._timers.delete(oldest.timer);
    oldest.reject(error);
  }

  _failPending(error) {
    const pending = this._pending.splice(0);
    this._unanswered = [];
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(error);
    }
  }

  // ------------------------------------------------------------------ heartbeat

  _scheduleHeartbeat() {
    this._cancelHeartbeat();
    const every = this.options.heartbeatInterval;
    if (every == null) return;
    this._heartbeatTimer = this._later(() => this._heartbeat(), every);
  }

  _cancelHeartbeat() {
    if (!this._heartbeatTimer) return;
    clearTimeout(this._heartbeatTimer);
    this._timers.delete(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  /** One ping at a time: a second call while one is out waits for the same pong. */
  _heartbeat() {
    if (this.state !== "connected" || this._pingOut === this._ws) return;
    this._cancelHeartbeat();
    const ws = this._ws;
    this._pingOut = ws;
    const sent = performance.now();
    this._request({ type: "ping" }, "pong", this.options.heartbeatTimeout).then(
      () => {
        if (this._pingOut === ws) this._pingOut = null;
        if (ws !== this._ws) return;
        this._emit("pong", { rtt: performance.now() - sent });
        this._scheduleHeartbeat();
      },
      (err) => {
        if (this._pingOut === ws) this._pingOut = null;
        if (ws === this._ws && err.code === "timeout") this._abort(CLIENT_CLOSE.heartbeat, "heartbeat timeout");
      },
    );
  }
}
