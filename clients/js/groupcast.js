// groupcast.js: a client for groupcast's `groupcast.v1` WebSocket protocol.
// One ES module, no build step, no dependencies. Runs wherever there is a
// WHATWG `WebSocket` (browsers, Deno, Node 22+), or any class passed as
// the `WebSocket` option.
//
//   import { connect } from "/clients/groupcast.js";
//
//   const client = connect("wss://push.example.com", {
//     group: "task/42",
//     history: 100,                  // first connect: the last 100 messages
//     getToken: () => fetchToken(),  // before each reconnect, and on 4001
//   });
//   client.on("message", ({ data, offset, epoch, binary }) => show(data));
//   client.on("reset", ({ reason }) => refetchEverything());
//   client.on("reconnecting", ({ delay }) => showStatus(`retry in ${delay} ms`));
//   client.send("hello");            // false while not connected
//   client.close();                  // for good: no more events
//
// `connect(url, options)` is `new GroupcastClient(url, options)`; either
// way the client starts connecting on the next microtask, so listeners
// added right after construction see every event, `connecting` included.
//
// url: the server (`wss://host`, `https://host/prefix`, or relative to the
//   page, `/`), to which `/ws/<group>` is appended; or, without the `group`
//   option, the full endpoint (`wss://host/ws/task/42`). An array of URLs
//   is a failover list: each reconnect tries the next one, round robin.
//
// options (all optional but `group` when url is a server):
//   group      the group to join, e.g. "task/42"
//   token      a client token (JWT), sent as `?token=`
//   getToken   () => token | Promise<token>: called before every reconnect
//              (and before the first connect when `token` is not given);
//              return the current token. Without it a 4001 (token expired)
//              close is final, since the old token cannot get back in.
//   history    N: on the first connect, replay the last N retained
//              messages before the live ones (`?history=N`)
//   position   {epoch, offset}: resume from there on the first connect
//              (e.g. saved in sessionStorage before a page reload)
//   backoff    {min: 500, max: 30000} ms: reconnect delays, exponential
//              with full jitter (below)
//   maxRetries consecutive failed attempts before giving up (Infinity)
//   connectTimeout  ms to wait for the socket to open (10000)
//   WebSocket  the WebSocket class (globalThis.WebSocket); tests inject a fake
//   random     () => [0, 1) (Math.random); tests make jitter deterministic
//
// Events, `client.on(name, fn)` (returns a function that removes fn):
//   connecting   {url, attempt}       a socket is being opened
//   open         {url, protocol}      the socket is open (protocol "" means
//                                     the server did not accept groupcast.v1:
//                                     frames are then plain payloads)
//   welcome      the server's welcome frame: {session, node, group, epoch,
//                offset, history, recovered?}
//   message      {data, offset, epoch, binary}: data is a string, or a
//                Uint8Array when binary; offset and epoch are null for
//                groups without history (and plain `PUBLISH` messages)
//   reset        {reason, epoch, offset}: continuity was lost, messages may
//                be missing; the application should refetch its state.
//                Emitted when a resume was not recovered, for the server's
//                `reset` frame, and after every reconnect to a group that
//                keeps no history (nothing to resume from)
//   refreshed    {exp}: the server accepted refresh(token)
//   closed       {code, reason, reconnect}: the socket closed; reconnect
//                false means final (close(), 1008, 4003, 4001 without
//                getToken, maxRetries reached)
//   reconnecting {delay, attempt, url, code}: next attempt in delay ms
//
// Properties: state ("connecting" | "open" | "reconnecting" | "closed"),
//   position ({epoch, offset} of the last message seen, or null), welcome
//   (the last welcome frame), stats ({duplicates, gaps, resets,
//   reconnects}).
//
// Close codes (docs/protocol.md says what each means):
//   final, no reconnect: 1008 (policy: not allowed), 4003 (token refresh
//     rejected), 4001 (token expired) unless `getToken` is given, and the
//     1000 this client sends from close()
//   1013 (slow consumer, try again later): reconnect after a long delay,
//     between max/2 and max
//   4001 with `getToken`: reconnect at once with the new token
//   everything else (1000/1001 from the server, 1006 network loss or a
//     refused upgrade, 1009, 1011, ...): reconnect with backoff
//
// Resume: the client remembers the (epoch, offset) of the last message it
// delivered and reconnects with `?since=<offset>&epoch=<epoch>`. The
// server answers `recovered: true` and sends exactly the missed messages,
// or `recovered: false` (this client emits `reset`) and continues live.
// Whatever the server does, a message at or below the last offset of the
// same epoch is dropped and counted in stats.duplicates, so `message`
// never delivers one twice.

/** The WebSocket subprotocol this client speaks. */
export const PROTOCOL = "groupcast.v1";

/** The WebSocket readyState of an open socket (fakes may lack the constant). */
const OPEN = 1;

/**
 * Close codes after which reconnecting cannot help: the server refused us
 * for a reason a new connection would meet again.
 */
const FINAL_CODES = new Map([
  [1008, "policy violation: this client may not join or send"],
  [4003, "token refresh rejected"],
]);

/**
 * The delay before reconnect attempt number `attempt` (0 for the first):
 * "full jitter", a uniform draw in [0, min(max, min * 2^attempt)). Spread
 * over the whole window, a crowd of clients cut off at the same moment
 * (a node restart) comes back spread out instead of in waves.
 */
export function backoffDelay(attempt, { min = 500, max = 30000 } = {}, random = Math.random) {
  const window = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * window);
}

/**
 * The WebSocket URL for `base` (see the header), `group` (or none), and
 * query `params` (entries with null values are left out).
 */
export function endpoint(base, group, params = {}) {
  const page = globalThis.location?.href;
  const url = page ? new URL(base, page) : new URL(base);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  if (group != null) {
    // Each segment of `task/42` is encoded; the `/` between them stays.
    const path = String(group).split("/").map(encodeURIComponent).join("/");
    url.pathname = url.pathname.replace(/\/+$/, "") + "/ws/" + path;
  }
  for (const [key, value] of Object.entries(params)) {
    if (value != null) url.searchParams.set(key, String(value));
  }
  return url.toString();
}

/** Standard padded base64 (the server's encoding of binary data) to bytes. */
function decodeBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

export class GroupcastClient {
  constructor(url, options = {}) {
    this.urls = (Array.isArray(url) ? url : [url]).map(String);
    if (this.urls.length === 0) throw new TypeError("groupcast: at least one URL is needed");
    this.group = options.group ?? null;
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.history = options.history ?? 0;
    this.backoff = { min: 500, max: 30000, ...options.backoff };
    this.maxRetries = options.maxRetries ?? Infinity;
    this.connectTimeout = options.connectTimeout ?? 10000;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.random = options.random ?? Math.random;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError("groupcast: no WebSocket class (pass one as the WebSocket option)");
    }

    this.state = "connecting";
    this.position = options.position ? { ...options.position } : null;
    this.welcome = null;
    this.stats = { duplicates: 0, gaps: 0, resets: 0, reconnects: 0 };

    this._listeners = new Map();
    this._ws = null;
    this._timer = null; // the pending reconnect or connect timeout
    this._stopped = false;
    this._attempt = 0; // consecutive attempts without a welcome: the backoff exponent
    this._urlIndex = 0;
    this._joinedOnce = false; // a later welcome is a re-join: continuity matters
    this._resumeAsked = false; // this connection asked since/epoch
    this._raw = false; // this connection has no groupcast.v1 (plain frames)

    // On a microtask: listeners added right after `new` see `connecting`.
    queueMicrotask(() => this._connect());
  }

  /** Adds `fn` for event `name`; returns a function that removes it. */
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
  }

  /**
   * Sends a message to the group (a string, or bytes: Uint8Array,
   * ArrayBuffer, Blob). Returns false, sending nothing, while not
   * connected: messages are not queued across reconnects, because a
   * message sent much later than the user meant it is rarely what they
   * want. Whether the server forwards it depends on its settings.
   */
  send(data) {
    const ws = this._ws;
    if (this._stopped || !ws || ws.readyState !== OPEN) return false;
    ws.send(data);
    return true;
  }

  /**
   * Replaces the token: sent at once on the open connection (the server
   * answers `refreshed`, or closes with 4003), and used for reconnects.
   * Returns whether it could be sent now.
   */
  refresh(token) {
    this.token = token;
    const ws = this._ws;
    if (this._stopped || !ws || ws.readyState !== OPEN) return false;
    ws.send(JSON.stringify({ type: "refresh", token }));
    return true;
  }

  /** Closes for good: no reconnect, and `closed` is the last event. */
  close() {
    if (this._stopped) return;
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, "closed by the client");
      } catch {
        // Already closing: nothing to do.
      }
    }
    this.state = "closed";
    this._emit("closed", { code: 1000, reason: "closed by the client", reconnect: false });
  }

  // ---- connecting -------------------------------------------------------

  async _connect() {
    if (this._stopped) return;
    this._timer = null;
    this.state = "connecting";
    if (this.getToken && (this._joinedOnce || this._attempt > 0 || this.token == null)) {
      try {
        this.token = await this.getToken();
      } catch (error) {
        // No token, no point connecting: count it as a failed attempt.
        if (this._stopped) return;
        this._afterClose({ code: 1006, reason: `getToken failed: ${error?.message ?? error}` });
        return;
      }
      if (this._stopped) return;
    }

    const params = { token: this.token };
    this._resumeAsked = false;
    if (this.position) {
      // Resume after the last message we delivered.
      params.since = this.position.offset;
      params.epoch = this.position.epoch;
      this._resumeAsked = true;
    } else if (this.history > 0) {
      // Nothing seen yet (first connect, or a history group that sent
      // nothing before we lost it): ask for the backlog again.
      params.history = this.history;
    }
    const base = this.urls[this._urlIndex];
    let url;
    try {
      url = endpoint(base, this.group, params);
    } catch (error) {
      // A malformed URL: no retry will fix it.
      this._stop({ code: 1006, reason: `bad URL ${base}: ${error?.message ?? error}` });
      return;
    }
    this._emit("connecting", { url, attempt: this._attempt });
    if (this._stopped) return; // a listener may close()

    let ws;
    try {
      ws = new this.WebSocket(url, [PROTOCOL]);
    } catch (error) {
      this._stop({ code: 1006, reason: `cannot open ${url}: ${error?.message ?? error}` });
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._raw = false;
    ws.onopen = () => this._onOpen(ws, url);
    ws.onmessage = (event) => this._onFrame(ws, event);
    ws.onclose = (event) => this._onClose(ws, event);
    // A failed socket also fires `close`, which is where we act.
    ws.onerror = () => {};
    this._timer = setTimeout(() => {
      if (ws !== this._ws) return;
      detach(ws);
      try {
        ws.close();
      } catch {
        // Never opened: nothing to close.
      }
      this._ws = null;
      this._afterClose({ code: 1006, reason: "connect timeout" });
    }, this.connectTimeout);
  }

  _onOpen(ws, url) {
    if (ws !== this._ws) return;
    clearTimeout(this._timer);
    this._timer = null;
    this.state = "open";
    // A server (or proxy) that does not speak groupcast.v1 answers without
    // the subprotocol (some browsers refuse such an answer outright; others
    // open with protocol ""). Its frames are then the payloads themselves.
    this._raw = ws.protocol !== PROTOCOL;
    this._emit("open", { url, protocol: ws.protocol ?? "" });
    if (this._raw) {
      this._attempt = 0;
      if (this._joinedOnce) {
        this._reset({ reason: "reconnected without groupcast.v1: messages may have been missed" });
      }
      this._joinedOnce = true;
    }
  }

  _onFrame(ws, event) {
    if (ws !== this._ws) return;
    const data = event.data;
    if (typeof data !== "string") {
      // Binary frames are payloads (groupcast.v1 itself sends only text).
      this._deliver({ data: new Uint8Array(data), offset: null, epoch: null, binary: true });
      return;
    }
    if (this._raw) {
      this._deliver({ data, offset: null, epoch: null, binary: false });
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      frame = null;
    }
    if (frame === null || typeof frame !== "object") {
      // Not a groupcast.v1 frame: deliver it as it came rather than lose it.
      this._deliver({ data, offset: null, epoch: null, binary: false });
      return;
    }
    switch (frame.type) {
      case "welcome":
        return this._onWelcome(frame);
      case "message":
        return this._onMessage(frame);
      case "reset":
        return this._onServerReset(frame);
      case "refreshed":
        return this._emit("refreshed", { exp: frame.exp });
      default:
        // A frame type from a later protocol revision: ignore it.
        return;
    }
  }

  _onWelcome(welcome) {
    this.welcome = welcome;
    this._attempt = 0;
    const rejoin = this._joinedOnce;
    this._joinedOnce = true;
    this._emit("welcome", welcome);
    if (!welcome.history) {
      // No positions in this group: a re-join may have missed anything.
      this.position = null;
      if (rejoin || this._resumeAsked) {
        this._reset({
          reason: "group keeps no history: messages published while disconnected are lost",
          epoch: null,
          offset: null,
        });
      }
      return;
    }
    if (this._resumeAsked) {
      if (welcome.recovered === true) return; // the missed messages follow
      // Other epoch, trimmed or expired: the server continues from its top.
      this.position = { epoch: welcome.epoch, offset: welcome.offset };
      this._reset({
        reason: "not recovered: messages since the last one seen are no longer available",
        epoch: welcome.epoch,
        offset: welcome.offset,
      });
      return;
    }
    if (this.history > 0 && welcome.offset > 0) {
      // The backlog follows; the position comes from its messages (should
      // we lose the socket before the first, we ask for the backlog again).
      return;
    }
    // Live from the top on: that is where a resume would start.
    this.position = { epoch: welcome.epoch, offset: welcome.offset };
  }

  _onMessage(frame) {
    const binary = frame.binary === true;
    const data = binary ? decodeBase64(frame.data) : frame.data;
    if (frame.offset == null || frame.epoch == null) {
      // Plain PUBLISH, or a group without history: no position.
      this._deliver({ data, offset: null, epoch: null, binary });
      return;
    }
    const offset = Number(frame.offset);
    const epoch = String(frame.epoch);
    const last = this.position;
    if (last && last.epoch === epoch) {
      if (offset <= last.offset) {
        // Seen already (e.g. a resume overlapping the live stream).
        this.stats.duplicates++;
        return;
      }
      // Offsets are consecutive; the server signals real loss with a reset
      // frame, so a jump is counted for diagnosis rather than acted on.
      if (offset !== last.offset + 1) this.stats.gaps++;
    } else if (last && last.epoch != null) {
      // A new epoch without a reset or a welcome saying so: whatever came
      // in between is unknown. (A null epoch is a history group with no
      // message yet: its first epoch is no change.)
      this._reset({ reason: `epoch changed from ${last.epoch} to ${epoch}`, epoch, offset: offset - 1 });
    }
    this.position = { epoch, offset };
    this._deliver({ data, offset, epoch, binary });
  }

  _onServerReset(frame) {
    if (frame.epoch != null && frame.offset != null) {
      this.position = { epoch: String(frame.epoch), offset: Number(frame.offset) };
    }
    this._reset({ reason: frame.reason ?? "reset by the server", epoch: frame.epoch ?? null, offset: frame.offset ?? null });
  }

  _deliver(message) {
    this._emit("message", message);
  }

  _reset(detail) {
    this.stats.resets++;
    this._emit("reset", detail);
  }

  // ---- closing and reconnecting -----------------------------------------

  _onClose(ws, event) {
    if (ws !== this._ws) return;
    detach(ws);
    this._ws = null;
    clearTimeout(this._timer);
    this._timer = null;
    this._afterClose({ code: event.code, reason: event.reason ?? "" });
  }

  /** After a connection (or an attempt) ended: reconnect, or stop. */
  _afterClose({ code, reason }) {
    if (this._stopped) return;
    let final = FINAL_CODES.get(code);
    if (code === 4001 && !this.getToken) final = "token expired, and no getToken option to get another";
    if (!final && this._attempt + 1 > this.maxRetries) final = `gave up after ${this.maxRetries} attempts`;
    if (final) {
      this._stop({ code, reason: reason || final });
      return;
    }
    this._emit("closed", { code, reason, reconnect: true });
    if (this._stopped) return; // a listener may close()

    let delay;
    if (code === 4001) {
      delay = 0; // getToken runs first; the old token is simply stale
    } else if (code === 4010) {
      delay = 0; // the node lost messages; resuming from history fills the gap
    } else if (code === 1013) {
      // "Try again later": this client was too slow; give the node room.
      const { max } = this.backoff;
      delay = Math.floor(max / 2 + this.random() * (max / 2));
    } else {
      delay = backoffDelay(this._attempt, this.backoff, this.random);
    }
    this._attempt++;
    this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    this.stats.reconnects++;
    this.state = "reconnecting";
    this._emit("reconnecting", { delay, attempt: this._attempt, url: this.urls[this._urlIndex], code });
    if (this._stopped) return;
    this._timer = setTimeout(() => this._connect(), delay);
  }

  _stop({ code, reason }) {
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
    this.state = "closed";
    this._emit("closed", { code, reason, reconnect: false });
  }

  _emit(name, detail) {
    for (const fn of [...(this._listeners.get(name) ?? [])]) {
      try {
        fn(detail);
      } catch (error) {
        // A failing listener must not break the connection logic: report
        // it where uncaught errors go (the console, window.onerror) and
        // carry on with the other listeners.
        reportListenerError(error);
      }
    }
  }
}

/** The platform's `reportError` where there is one (browsers), else a throw on a timer. */
function reportListenerError(error) {
  if (typeof globalThis.reportError === "function") {
    globalThis.reportError(error);
  } else {
    setTimeout(() => {
      throw error;
    });
  }
}

/** The socket's handlers removed: nothing it does later reaches us. */
function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}

/** `new GroupcastClient(url, options)`. */
export function connect(url, options) {
  return new GroupcastClient(url, options);
}
