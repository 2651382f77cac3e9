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
//   // Who is here (groups with presence on the server: --presence):
//   //   connect(url, { group: "chat/lobby", presence: true })
//   client.on("members", ({ members }) => render(members));   // each snapshot
//   client.on("join", ({ sub, session }) => render(client.members()));
//   client.on("leave", ({ sub, session }) => render(client.members()));
//   await client.subscribe("task/43", { history: 10 });  // same socket
//   client.unsubscribe("task/43");
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
//   presence   true: ask for the group's members (`?presence=1`) on every
//              (re)connect; see "Who is here" below. For the `group`
//              option's group; other groups ask in subscribe(group,
//              {presence: true})
//   backoff    {min: 500, max: 30000} ms: reconnect delays, exponential
//              with full jitter (below)
//   maxRetries consecutive failed attempts before giving up (Infinity)
//   connectTimeout  ms to wait for the socket to open (10000)
//   WebSocket  the WebSocket class (globalThis.WebSocket); tests inject a fake
//   random     () => [0, 1) (Math.random); tests make jitter deterministic
//   fetch      the fetch function (globalThis.fetch): only used to ask why
//              a connection with `presence` was refused (see below)
//
// Events, `client.on(name, fn)` (returns a function that removes fn):
//   connecting   {url, attempt}       a socket is being opened
//   open         {url, protocol}      the socket is open (protocol "" means
//                                     the server did not accept groupcast.v1:
//                                     frames are then plain payloads)
//   welcome      the server's welcome frame: {session, node, group, epoch,
//                offset, history, recovered?}
//   message      {data, offset, epoch, binary, group}: data is a string,
//                or a Uint8Array when binary; offset and epoch are null for
//                groups without history (and plain `PUBLISH` messages);
//                group is the group the server named (every server with
//                subscriptions names it; older ones do not)
//   subscribed   the server's answer to a subscribe: {group, id, epoch,
//                offset, history, recovered?}, on every (re)connect
//   unsubscribed {group}: the server confirmed an unsubscribe
//   error        {code, reason, group, id}: a request was refused (the
//                group is then dropped; see subscribe()); or presence was
//                (`no_presence`, `presence_not_allowed`: the group stays,
//                without presence) or could not be read
//                (`presence_unavailable`)
//   members      {group, members, count, users, truncated, seq}: a presence
//                snapshot replaced the group's member list (on every
//                (re)connect with presence); see "Who is here"
//   join, leave  {group, session, sub?, node, seq}: a connection joined or
//                left the group (groups the server names in --join-leave);
//                applied to members() first
//   user_joined, user_left  {group, sub, node, seq}: a user's first
//                connection came / last one went (after the server's grace)
//   reset        {reason, epoch, offset, group}: continuity was lost, messages may
//                be missing; the application should refetch its state.
//                Emitted when a resume was not recovered, for the server's
//                `reset` frame, and after every reconnect to a group that
//                keeps no history (nothing to resume from)
//   refreshed    {exp}: the server accepted refresh(token)
//   closed       {code, reason, reconnect}: the socket closed; reconnect
//                false means final (close(), 1008, 4003, 4500-4999,
//                4001 without getToken, maxRetries reached); reason says
//                why (the server's, e.g. "banned", or this client's)
//   reconnecting {delay, attempt, url, code}: next attempt in delay ms
//
// Properties: state ("connecting" | "open" | "reconnecting" | "idle",
//   when every group was left and the socket went, | "closed"),
//   position ({epoch, offset} of the last message seen in the first
//   group, or null; positionOf(group) for any), groups (names), welcome
//   (the last welcome frame), stats ({duplicates, gaps, resets,
//   reconnects}).
//
// Close codes (docs/protocol.md says what each means):
//   final, no reconnect: 1008 (policy: not allowed), 4003 (token refresh
//     rejected), every code of 4500-4999 ("do not reconnect": 4509 is the
//     server's disconnect for good, POST /api/users/{sub}/disconnect with
//     reconnect: false), 4001 (token expired) unless `getToken` is given,
//     and the 1000 this client sends from close()
//   4009 (disconnected by the server, may come back): reconnect with backoff
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
// never delivers one twice. It also sends `?session=<the last welcome's
// session>`: within the server's presence grace it is the same member
// again, and the others see no leave and no join.
//
// Who is here: with `presence: true` (the client's option for its group,
// or subscribe(group, {presence: true})) every (re)connect asks the server
// for the group's members; the snapshot replaces the list (a `members`
// event: after a reconnect too, so nothing is ever counted twice) and the
// `join`/`leave` frames after it are applied to it. Read it with
// `members(group)`: [{session, node, sub, connectedAt, keys}] (sub null
// for anonymous connections; connectedAt in ms, for a member learnt from a
// `join` frame the time this client saw it; keys only from snapshots),
// `users(group)`: [{sub, connections}], derived from that list (anonymous
// members left out), and `presenceOf(group)`: {members, count, users,
// truncated, seq}, where count and users are the server's whole-group
// figures (users counts a user until its `user_left`, after the server's
// grace). All null for a group without presence. `truncated`: the server
// lists at most 1,000 members; the counts stay whole, the list is then
// partial (page through GET /api/groups/{group}/members for the rest).
// Frames of different nodes may interleave: the list does not depend on
// their order, `seq` (the group's position after the change) gives it.
// While disconnected the list is the last one known; the next snapshot
// replaces it. Without `--join-leave` for the group there are no frames:
// the list is as of the last (re)connect.
//
// A group without presence on the server refuses `?presence=1` with an
// HTTP 400 before the upgrade, which a browser reports as a bare 1006; so
// when a connection asking presence fails before opening, the client asks
// the same URL with fetch (a plain GET, answered with the refusal) and on
// "keeps no presence" (`no_presence`) or 403 `presence_not_allowed`
// emits `error` and reconnects at once without presence. A subscribe is
// refused with an `error` frame instead; the client then subscribes again
// without presence. Either way the group is joined and members() is null.
//
// Many groups, one connection: `subscribe(group, {history, position})`
// joins another group on the same socket (the `subscribe` request of
// docs/protocol.md) and resolves with the server's answer;
// `unsubscribe(group)` leaves one. Positions, duplicates and resets are
// per group. A reconnect resumes all of them in one round trip: the first
// group in the URL with its since/epoch, every other one in a `subscribe`
// request with its own since/epoch, all sent the moment the socket opens,
// none waiting for another's answer.

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
 * Why a close with `code` is final, or undefined when reconnecting may
 * help: the codes above, and every code of 4500-4999, which the server
 * (4509: disconnected for good) and applications use to say "do not
 * reconnect".
 */
function finalReason(code) {
  if (FINAL_CODES.has(code)) return FINAL_CODES.get(code);
  if (code >= 4500 && code <= 4999) return "the server said not to reconnect";
  return undefined;
}

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

/**
 * An error the server (or this client) gave a subscribe or unsubscribe:
 * `code` is the machine code (`group_not_allowed`, `too_many_groups`, ...,
 * see docs/protocol.md), `group` the group it was about.
 */
export class GroupcastError extends Error {
  constructor(code, reason, group = null) {
    super(reason || code);
    this.name = "GroupcastError";
    this.code = code;
    this.group = group;
  }
}

/**
 * One group this client is in, and everything it knows about it. The
 * client keeps these in the order they were asked for; the first is the
 * one the URL names on each (re)connect, the others are `subscribe`d.
 */
class Subscription {
  constructor(name, { history = 0, position = null, presence = false } = {}) {
    this.name = name; // null until the welcome for a full-endpoint URL
    this.inUrl = false; // the URL itself names this group (no `group` option)
    this.history = history;
    this.position = position ? { ...position } : null;
    this.presence = presence === true; // ask for the members on each join
    // The members as of the last snapshot plus the frames since: null
    // until a snapshot came (and for groups without presence).
    this.members = null; // Map session -> member
    this.count = 0; // the server's figures, whole even when truncated
    this.users = 0;
    this.truncated = false;
    this.snapshotSeq = 0; // frames at or below it are in the snapshot
    this.seq = 0; // the highest position applied
    this.joinedOnce = false; // a later answer is a re-join: continuity matters
    // Per connection: reset by every _connect.
    this.answered = false; // its welcome / `subscribed` came on this socket
    this.resumeAsked = false; // this connection asked since/epoch for it
    this.id = null; // the id of this connection's subscribe request
    // subscribe() promises waiting for the first answer.
    this.waiters = [];
  }

  settle(error, answer) {
    for (const { resolve, reject } of this.waiters.splice(0)) {
      if (error) reject(error);
      else resolve(answer);
    }
  }
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
    this.fetch = options.fetch ?? (typeof globalThis.fetch === "function" ? globalThis.fetch.bind(globalThis) : null);
    if (typeof this.WebSocket !== "function") {
      throw new TypeError("groupcast: no WebSocket class (pass one as the WebSocket option)");
    }

    this.state = "connecting";
    this.welcome = null;
    this.stats = { duplicates: 0, gaps: 0, resets: 0, reconnects: 0 };

    // The connection's own group: the `group` option, or (without it) the
    // one the URL names, learnt from the first welcome.
    this._first = new Subscription(this.group, {
      history: this.history,
      position: options.position,
      presence: options.presence,
    });
    this._first.inUrl = this.group == null;
    this._subs = [this._first]; // every group, in the order asked for
    this._conn = null; // the subscription the current socket's URL names
    this._nextId = 0; // request ids, unique for the client's lifetime
    this._leaving = new Map(); // unsubscribe id -> resolve

    this._listeners = new Map();
    this._ws = null;
    this._timer = null; // the pending reconnect or connect timeout
    this._stopped = false;
    this._attempt = 0; // consecutive attempts without a welcome: the backoff exponent
    this._urlIndex = 0;
    this._joinedOnce = false; // a welcome (or a raw open) came once
    this._raw = false; // this connection has no groupcast.v1 (plain frames)
    this._opened = false; // this connection's socket opened
    this._url = null; // the URL this connection's socket was opened with

    // On a microtask: listeners added right after `new` see `connecting`.
    queueMicrotask(() => this._connect());
  }

  /**
   * The (epoch, offset) of the last message seen in the first group (the
   * `group` option), or null. `positionOf(group)` for any group.
   */
  get position() {
    return this._first.position;
  }

  /** The (epoch, offset) of the last message seen in `group`, or null. */
  positionOf(group) {
    return this._find(group)?.position ?? null;
  }

  /** The groups this client is in (or joining), in the order asked for. */
  get groups() {
    return this._subs.map((sub) => sub.name ?? this.group).filter((name) => name != null);
  }

  /**
   * The members of `group` (the first group when not given), as the last
   * presence snapshot and the join/leave frames since say: an array of
   * {session, node, sub, connectedAt, keys}, or null when the group has no
   * presence here (not asked, refused, unavailable, or no snapshot yet).
   */
  members(group) {
    const sub = this._presenceSub(group);
    return sub ? [...sub.members.values()].map((member) => ({ ...member, keys: { ...member.keys } })) : null;
  }

  /**
   * The distinct users among members(group): [{sub, connections}], in the
   * order first seen; anonymous members are left out. Null like members().
   */
  users(group) {
    const sub = this._presenceSub(group);
    if (!sub) return null;
    const counts = new Map();
    for (const member of sub.members.values()) {
      if (member.sub != null) counts.set(member.sub, (counts.get(member.sub) ?? 0) + 1);
    }
    return [...counts].map(([name, connections]) => ({ sub: name, connections }));
  }

  /**
   * Everything known of `group`'s presence: {group, members, count, users,
   * truncated, seq} (the `members` event's fields, kept up to date), or
   * null. count and users are the server's whole-group figures.
   */
  presenceOf(group) {
    const sub = this._presenceSub(group);
    return sub ? this._presenceDetail(sub) : null;
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

  /**
   * Joins one more group on this same connection: a `subscribe` request
   * now if the socket is open, else with the next connection's. Options:
   * `history` (the last N messages first, like the connect option) or
   * `position` ({epoch, offset} to resume from), `presence` (true: its
   * members, see members(); on every reconnect too). Its messages come as
   * `message` events naming the group; every reconnect resumes it.
   *
   * Resolves with the server's `subscribed` answer (epoch, offset,
   * history, recovered?); rejects with a GroupcastError (`code` from the
   * server, e.g. group_not_allowed; or already_subscribed, closed), and
   * the group is then dropped. Ignoring the promise is fine: a refusal is
   * also an `error` event.
   */
  subscribe(group, options = {}) {
    const name = String(group);
    if (this._stopped) return settled(new GroupcastError("closed", "the client is closed", name));
    if (this._find(name)) {
      return settled(new GroupcastError("already_subscribed", `already subscribed to ${name}`, name));
    }
    const sub = new Subscription(name, options);
    const answer = new Promise((resolve, reject) => sub.waiters.push({ resolve, reject }));
    // Handled here so that an ignored refusal is no unhandled rejection;
    // whoever awaits `answer` still gets it.
    answer.catch(() => {});
    this._subs.push(sub);
    if (this.state === "idle") {
      // Every group was left and the socket went: this one reconnects.
      this._timer = setTimeout(() => this._connect(), 0);
      this.state = "connecting";
    } else if (this._ws && this._ws.readyState === OPEN && !this._raw) {
      this._sendSubscribe(sub);
    }
    // Otherwise the socket is on its way: _onOpen sends it.
    return answer;
  }

  /**
   * Leaves `group`: from now on none of its messages is delivered, and no
   * reconnect joins it again. Resolves once the server confirmed (at once
   * when not connected). The group a full-endpoint URL names cannot be
   * left (every reconnect joins it): that is a GroupcastError.
   */
  unsubscribe(group) {
    const name = String(group);
    const sub = this._find(name);
    if (!sub) return Promise.resolve();
    if (sub.inUrl) {
      return settled(new GroupcastError("bad_request", `the URL names ${name}: it cannot be left`, name));
    }
    this._subs.splice(this._subs.indexOf(sub), 1);
    sub.settle(new GroupcastError("unsubscribed", `unsubscribed from ${name} before an answer`, name));
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN || this._raw) return Promise.resolve();
    // Sent even when the subscribe is still unanswered: the server takes
    // requests in order, so it joins, then leaves, and what comes of the
    // join in between is dropped here (the group is no longer ours).
    const id = ++this._nextId;
    ws.send(JSON.stringify({ type: "unsubscribe", group: name, id }));
    return new Promise((resolve) => this._leaving.set(id, resolve));
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
    this._settleAll();
    this._emit("closed", { code: 1000, reason: "closed by the client", reconnect: false });
  }

  // ---- connecting -------------------------------------------------------

  async _connect() {
    if (this._stopped) return;
    this._timer = null;
    const conn = this._subs[0];
    if (!conn) {
      // Every group was left: nothing to connect for until a subscribe().
      this.state = "idle";
      return;
    }
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

    // Resuming every group takes one round trip: the first in the URL
    // (since/epoch in the query), the others in `subscribe` requests sent
    // together the moment the socket opens, none waiting for another's
    // answer. Each answer (the welcome, or `subscribed`) says for its
    // group whether the resume was complete.
    for (const sub of this._subs) {
      sub.answered = false;
      sub.resumeAsked = false;
      sub.id = null;
    }
    this._conn = conn;
    this._leaving.clear(); // answers of a gone socket never come
    // The session the last welcome gave: within the server's presence
    // grace the reconnect carries on as the same member (no leave, no
    // join for the others); null on the first connect.
    const session = this.welcome?.session != null ? String(this.welcome.session) : null;
    const params = {
      token: this.token,
      ...this._replay(conn),
      presence: conn.presence ? 1 : null,
      session,
    };
    const base = this.urls[this._urlIndex];
    let url;
    try {
      url = endpoint(base, conn.inUrl ? null : conn.name, params);
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
    this._opened = false;
    this._url = url;
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

  /**
   * What to ask for `sub` on this connection: `since`/`epoch` after the
   * last message delivered, else the backlog (first join, or a history
   * group that sent nothing before we lost it), else nothing (live).
   */
  _replay(sub) {
    if (sub.position) {
      sub.resumeAsked = true;
      return { since: sub.position.offset, epoch: sub.position.epoch };
    }
    if (sub.history > 0) return { history: sub.history };
    return {};
  }

  _sendSubscribe(sub) {
    sub.id = ++this._nextId;
    const request = { type: "subscribe", group: sub.name, ...this._replay(sub), id: sub.id };
    if (sub.presence) request.presence = true;
    this._ws.send(JSON.stringify(request));
  }

  _onOpen(ws, url) {
    if (ws !== this._ws) return;
    clearTimeout(this._timer);
    this._timer = null;
    this.state = "open";
    this._opened = true;
    // A server (or proxy) that does not speak groupcast.v1 answers without
    // the subprotocol (some browsers refuse such an answer outright; others
    // open with protocol ""). Its frames are then the payloads themselves.
    this._raw = ws.protocol !== PROTOCOL;
    this._emit("open", { url, protocol: ws.protocol ?? "" });
    if (ws !== this._ws) return; // a listener may close()
    if (this._raw) {
      this._attempt = 0;
      if (this._joinedOnce) {
        this._reset({ reason: "reconnected without groupcast.v1: messages may have been missed" });
      }
      this._joinedOnce = true;
      // Without groupcast.v1 there are no requests: only the URL's group.
      for (const sub of this._subs.slice(1)) {
        this._refuse(sub, { code: "unsupported", reason: "the server does not speak groupcast.v1" });
      }
      return;
    }
    // The other groups' requests, all at once (see _connect).
    for (const sub of this._subs) {
      if (sub !== this._conn) this._sendSubscribe(sub);
    }
    if (!this._subs.includes(this._conn)) {
      // The URL's group was left while the socket was opening: the server
      // joined it all the same, so leave it on the server too.
      const id = ++this._nextId;
      ws.send(JSON.stringify({ type: "unsubscribe", group: this._conn.name, id }));
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
      case "subscribed":
        return this._onSubscribed(frame);
      case "unsubscribed":
        return this._onUnsubscribed(frame);
      case "error":
        return this._onError(frame);
      case "message":
        return this._onMessage(frame);
      case "reset":
        return this._onServerReset(frame);
      case "refreshed":
        return this._emit("refreshed", { exp: frame.exp });
      case "presence":
        return this._onPresence(frame);
      case "join":
      case "leave":
      case "user_joined":
      case "user_left":
        return this._onPresenceChange(frame);
      default:
        // A frame type from a later protocol revision: ignore it.
        return;
    }
  }

  _onWelcome(welcome) {
    const conn = this._conn;
    this.welcome = welcome;
    this._attempt = 0;
    this._joinedOnce = true;
    if (conn.name == null && welcome.group != null) conn.name = String(welcome.group);
    this._emit("welcome", welcome);
    // The URL's group may have been left (unsubscribe) meanwhile.
    if (this._subs.includes(conn)) this._joined(conn, welcome);
  }

  _onSubscribed(answer) {
    // By id: after an unsubscribe and a new subscribe of the same group,
    // only the latest request's answer is ours.
    const sub = this._subs.find((s) => s.id != null && s.id === answer.id);
    if (!sub) return;
    this._emit("subscribed", { ...answer, group: sub.name });
    this._joined(sub, answer);
    sub.settle(null, answer);
  }

  _onUnsubscribed(answer) {
    const resolve = this._leaving.get(answer.id);
    this._leaving.delete(answer.id);
    resolve?.();
    this._emit("unsubscribed", { group: answer.group ?? null });
  }

  _onError(frame) {
    const detail = { code: frame.code ?? "error", reason: frame.reason ?? "", group: frame.group ?? null, id: frame.id ?? null };
    const leaving = this._leaving.get(frame.id);
    if (leaving) {
      // Not subscribed (its subscribe was refused): left all the same.
      this._leaving.delete(frame.id);
      leaving();
      return;
    }
    const sub = this._subs.find((s) => s.id != null && s.id === frame.id);
    if (PRESENCE_REFUSALS.has(detail.code) && sub && sub.presence) {
      // Nothing was subscribed: the same again, without presence.
      this._presenceRefused(sub, detail);
      if (this._ws && this._ws.readyState === OPEN && !this._raw) this._sendSubscribe(sub);
      return;
    }
    if (detail.code === "presence_unavailable") {
      // The group is joined; only its members could not be read. The
      // next (re)connect asks again.
      const about = sub ?? (detail.group != null ? this._find(detail.group) : null);
      if (about) about.members = null;
      this._emit("error", { ...detail, group: detail.group ?? about?.name ?? null });
      return;
    }
    if (sub) {
      this._refuse(sub, detail);
      return;
    }
    this._emit("error", detail);
  }

  /** Presence was refused for `sub`: it goes on without, and says why. */
  _presenceRefused(sub, { code, reason, id = null }) {
    sub.presence = false;
    sub.members = null;
    this._emit("error", { code, reason, group: sub.name, id });
  }

  _presenceSub(group) {
    const sub = group == null ? this._subs[0] : this._find(group);
    return sub && sub.members ? sub : null;
  }

  _presenceDetail(sub) {
    return {
      group: sub.name,
      members: this.members(sub.name),
      count: sub.count,
      users: sub.users,
      truncated: sub.truncated,
      seq: sub.seq,
    };
  }

  /** A `presence` frame: the group's members at one position, replacing the list. */
  _onPresence(frame) {
    const sub = this._subOf(frame);
    if (!sub) return;
    const members = new Map();
    for (const m of Array.isArray(frame.members) ? frame.members : []) {
      if (m == null || m.session == null) continue;
      members.set(String(m.session), member(m, Number(m.connected_at_ms)));
    }
    sub.members = members;
    sub.snapshotSeq = Number(frame.seq ?? 0);
    sub.seq = sub.snapshotSeq;
    sub.truncated = frame.truncated === true;
    sub.count = Number(frame.count ?? members.size);
    sub.users = Number(frame.users ?? new Set([...members.values()].map((m) => m.sub).filter((s) => s != null)).size);
    this._emit("members", this._presenceDetail(sub));
  }

  /** A join, leave, user_joined or user_left frame: applied, then emitted. */
  _onPresenceChange(frame) {
    const sub = this._subOf(frame);
    if (!sub) return;
    const seq = Number(frame.seq ?? 0);
    const { type, ...fields } = frame;
    const detail = { ...fields, group: sub.name };
    if (sub.members) {
      // The server sends none at or below the snapshot's position; one
      // that came anyway is in the snapshot already.
      if (frame.seq != null && seq <= sub.snapshotSeq) return;
      const session = frame.session == null ? null : String(frame.session);
      if (type === "join" && session != null && !sub.members.has(session)) {
        sub.members.set(session, member(frame, Date.now()));
        sub.count++;
      } else if (type === "leave" && session != null) {
        // Truncated, the leaver may be one the list did not show.
        if (sub.members.delete(session) || sub.truncated) sub.count = Math.max(0, sub.count - 1);
      } else if (type === "user_joined") {
        sub.users++;
      } else if (type === "user_left") {
        sub.users = Math.max(0, sub.users - 1);
      }
      if (!sub.truncated) sub.count = sub.members.size;
      sub.seq = Math.max(sub.seq, seq);
    }
    this._emit(type, detail);
  }

  /** `sub` was refused by the server: dropped, its promise rejected, `error` emitted. */
  _refuse(sub, { code, reason }) {
    const index = this._subs.indexOf(sub);
    if (index >= 0) this._subs.splice(index, 1);
    sub.settle(new GroupcastError(code, reason, sub.name));
    this._emit("error", { code, reason, group: sub.name, id: sub.id });
  }

  /**
   * The join answer for `sub` (the welcome for the URL's group, a
   * `subscribed` for the others, with the same fields): where its
   * position stands now, and whether continuity was lost.
   */
  _joined(sub, welcome) {
    sub.answered = true;
    const rejoin = sub.joinedOnce;
    sub.joinedOnce = true;
    const group = sub.name;
    if (!welcome.history) {
      // No positions in this group: a re-join may have missed anything.
      sub.position = null;
      if (rejoin || sub.resumeAsked) {
        this._reset({
          reason: "group keeps no history: messages published while disconnected are lost",
          epoch: null,
          offset: null,
          group,
        });
      }
      return;
    }
    if (sub.resumeAsked) {
      if (welcome.recovered === true) return; // the missed messages follow
      // Other epoch, trimmed or expired: the server continues from its top.
      sub.position = { epoch: welcome.epoch, offset: welcome.offset };
      this._reset({
        reason: "not recovered: messages since the last one seen are no longer available",
        epoch: welcome.epoch,
        offset: welcome.offset,
        group,
      });
      return;
    }
    if (sub.history > 0 && welcome.offset > 0) {
      // The backlog follows; the position comes from its messages (should
      // we lose the socket before the first, we ask for the backlog again).
      return;
    }
    // Live from the top on: that is where a resume would start.
    sub.position = { epoch: welcome.epoch, offset: welcome.offset };
  }

  /**
   * The subscription a frame is about: the group it names (every frame of
   * a server with subscriptions does), else the URL's group. Null for a
   * group left, or not answered yet on this socket: what arrives for it
   * belongs to a request we no longer care about.
   */
  _subOf(frame) {
    const sub = frame.group == null ? this._conn : this._find(frame.group);
    return sub && sub.answered && this._subs.includes(sub) ? sub : null;
  }

  _onMessage(frame) {
    const sub = this._subOf(frame);
    if (!sub) return;
    const binary = frame.binary === true;
    const data = binary ? decodeBase64(frame.data) : frame.data;
    // `group` as the server named it (a server without subscriptions
    // does not): the field is there whenever the frame has it.
    const named = frame.group == null ? {} : { group: String(frame.group) };
    if (frame.offset == null || frame.epoch == null) {
      // Plain PUBLISH, or a group without history: no position.
      this._deliver({ data, offset: null, epoch: null, binary, ...named });
      return;
    }
    const offset = Number(frame.offset);
    const epoch = String(frame.epoch);
    // Positions (and so duplicates) are per group: offsets of two groups
    // have nothing to do with each other.
    const last = sub.position;
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
      this._reset({ reason: `epoch changed from ${last.epoch} to ${epoch}`, epoch, offset: offset - 1, group: sub.name });
    }
    sub.position = { epoch, offset };
    this._deliver({ data, offset, epoch, binary, ...named });
  }

  _onServerReset(frame) {
    const sub = this._subOf(frame);
    if (!sub) return;
    if (frame.epoch != null && frame.offset != null) {
      sub.position = { epoch: String(frame.epoch), offset: Number(frame.offset) };
    }
    const named = frame.group == null ? {} : { group: String(frame.group) };
    this._reset({ reason: frame.reason ?? "reset by the server", epoch: frame.epoch ?? null, offset: frame.offset ?? null, ...named });
  }

  _find(group) {
    const name = String(group);
    return this._subs.find((sub) => (sub.name ?? this.group) === name) ?? null;
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
    const closed = { code: event.code, reason: event.reason ?? "" };
    const conn = this._conn;
    if (!this._opened && conn?.presence && this.fetch) {
      // Refused before the upgrade? A browser hides why; see the header.
      this._whyRefused(this._url).then((refusal) => {
        if (this._stopped || this._ws || this._timer) return; // moved on meanwhile
        if (refusal && conn.presence) {
          this._presenceRefused(conn, refusal);
          this._afterClose({ ...closed, reason: refusal.reason, now: true });
          return;
        }
        this._afterClose(closed);
      });
      return;
    }
    this._afterClose(closed);
  }

  /**
   * The refusal of a presence connection to `url`, asked again as a plain
   * GET (the server checks presence before the upgrade, so it answers with
   * the refusal itself): {code, reason} for `no_presence` and
   * `presence_not_allowed`, else null (it would have been let in, or
   * cannot be asked: offline, another origin without CORS, ...).
   */
  async _whyRefused(url) {
    const target = new URL(url);
    target.protocol = target.protocol === "wss:" ? "https:" : "http:";
    const abort = typeof AbortController === "function" ? new AbortController() : null;
    const timer = setTimeout(() => abort?.abort(), this.connectTimeout);
    try {
      const response = await this.fetch(target.toString(), { signal: abort?.signal, cache: "no-store" });
      const body = await response.json().catch(() => ({}));
      const reason = String(body?.message ?? "");
      if (response.status === 403 && body?.error === "presence_not_allowed") {
        return { code: "presence_not_allowed", reason };
      }
      if (response.status === 400 && (body?.error === "no_presence" || /keeps no presence/.test(reason))) {
        return { code: "no_presence", reason };
      }
      return null;
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  /** After a connection (or an attempt) ended: reconnect, or stop. */
  _afterClose({ code, reason, now = false }) {
    if (this._stopped) return;
    let final = finalReason(code);
    if (code === 4001 && !this.getToken) final = "token expired, and no getToken option to get another";
    if (!final && this._attempt + 1 > this.maxRetries) final = `gave up after ${this.maxRetries} attempts`;
    if (final) {
      this._stop({ code, reason: reason || final });
      return;
    }
    if (this._subs.length === 0) {
      // Every group was left: no reason to come back until subscribe().
      this.state = "idle";
      this._emit("closed", { code, reason, reconnect: false });
      return;
    }
    this._emit("closed", { code, reason, reconnect: true });
    if (this._stopped) return; // a listener may close()

    let delay;
    if (now) {
      delay = 0; // the same again, without what was refused
    } else if (code === 4001) {
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
    this._settleAll();
    this._emit("closed", { code, reason, reconnect: false });
  }

  /** Rejects every subscribe() still waiting: no answer will come. */
  _settleAll() {
    for (const sub of this._subs) sub.settle(new GroupcastError("closed", "the client is closed", sub.name));
    for (const resolve of this._leaving.values()) resolve();
    this._leaving.clear();
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

/** A promise already rejected with `error`, handled (see subscribe). */
function settled(error) {
  const promise = Promise.reject(error);
  promise.catch(() => {});
  return promise;
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

/** The `error` codes that refuse presence, not the group. */
const PRESENCE_REFUSALS = new Set(["no_presence", "presence_not_allowed"]);

/** A member as members() lists it, from a snapshot entry or a join frame. */
function member(fields, connectedAt) {
  return {
    session: String(fields.session),
    node: fields.node == null ? null : String(fields.node),
    sub: fields.sub == null ? null : String(fields.sub),
    connectedAt: Number.isFinite(connectedAt) ? connectedAt : null,
    keys: fields.keys != null && typeof fields.keys === "object" ? { ...fields.keys } : {},
  };
}

/** The socket's handlers removed: nothing it does later reaches us. */
function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}

/** `new GroupcastClient(url, options)`. */
export function connect(url, options) {
  return new GroupcastClient(url, options);
}
