// The client's own logic (reconnect, resume, dedup, close codes) driven
// without a server: a fake WebSocket class, injected with the `WebSocket`
// option, records every socket the client opens, and the test plays the
// server's side on it frame by frame. Run: node --test clients/js/test/
//
// Nothing here sleeps for a fixed time: `until` polls a condition and fails
// after a timeout, and the backoff's randomness is injected (random: () =>
// 0) so reconnect timers fire at once.

import { test } from "node:test";
import assert from "node:assert/strict";

import { GroupcastClient, PROTOCOL, backoffDelay, connect, endpoint } from "../groupcast.js";
import { FakeSocket as SharedFakeSocket } from "./fake-socket.js";

/** A WebSocket the test drives: the client's calls are recorded. */
class FakeSocket extends SharedFakeSocket {
  welcome(fields) {
    this.frame({ type: "welcome", session: "s1", node: "n1", group: "g", ...fields });
  }

  message(offset, data, epoch = "E1") {
    this.frame({ type: "message", offset, epoch, data });
  }
}

/** Polls `condition` until true; fails after `ms`. */
async function until(what, condition, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** A client on the fake, recording its events; waits for its first socket. */
async function start(options = {}, url = "ws://a.test") {
  FakeSocket.all = [];
  const events = [];
  const client = new GroupcastClient(url, {
    group: "g",
    WebSocket: FakeSocket,
    random: () => 0,
    backoff: { min: 10, max: 100 },
    ...options,
  });
  for (const name of ["connecting", "open", "welcome", "message", "reset", "closed", "reconnecting", "refreshed"]) {
    client.on(name, (detail) => events.push({ name, detail }));
  }
  await until("the first socket", () => FakeSocket.all.length === 1);
  return { client, events, names: () => events.map((e) => e.name), socket: () => FakeSocket.all.at(-1) };
}

const messagesOf = (events) => events.filter((e) => e.name === "message").map((e) => e.detail.data);
const resetsOf = (events) => events.filter((e) => e.name === "reset").map((e) => e.detail);

test("the first connect offers groupcast.v1 and asks for the backlog", async () => {
  const { client, events, socket } = await start({ history: 20, token: "t0" });
  const ws = socket();
  assert.deepEqual(ws.protocols, [PROTOCOL]);
  assert.equal(ws.url.pathname, "/ws/g");
  assert.equal(ws.param("history"), "20");
  assert.equal(ws.param("token"), "t0");
  assert.equal(ws.param("since"), null);
  assert.equal(ws.param("session"), null, "no session to carry on yet");

  ws.accept();
  ws.welcome({ epoch: "E1", offset: 50, history: true });
  for (let n = 31; n <= 50; n++) ws.message(n, `m${n}`);
  ws.message(51, "m51");
  assert.deepEqual(messagesOf(events), Array.from({ length: 21 }, (_, i) => `m${31 + i}`));
  assert.deepEqual(client.position, { epoch: "E1", offset: 51 });
  assert.deepEqual(
    events.slice(0, 3).map((e) => e.name),
    ["connecting", "open", "welcome"],
  );
  assert.equal(client.state, "open");
  client.close();
});

test("binary messages are decoded from base64; messages without offsets have none", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 0, history: true });
  ws.frame({ type: "message", offset: 1, epoch: "E1", data: "AAEC/w==", binary: true });
  ws.frame({ type: "message", data: "plain publish" });
  const [bin, plain] = events.filter((e) => e.name === "message").map((e) => e.detail);
  assert.equal(bin.binary, true);
  assert.deepEqual([...bin.data], [0, 1, 2, 255]);
  assert.deepEqual({ ...plain }, { data: "plain publish", offset: null, epoch: null, binary: false });
  // A plain message does not move the position.
  assert.deepEqual(client.position, { epoch: "E1", offset: 1 });
  client.close();
});

test("a lost connection resumes from the last message seen, dropping duplicates", async () => {
  const { client, events, socket } = await start({ history: 5 });
  let ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 3, history: true });
  ws.message(1, "m1");
  ws.message(2, "m2");
  ws.message(3, "m3");
  ws.message(4, "m4");
  ws.drop(1006);

  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  assert.equal(ws.param("since"), "4");
  assert.equal(ws.param("epoch"), "E1");
  assert.equal(ws.param("session"), "s1", "the same member carries on");
  assert.equal(ws.param("history"), null, "history is for the first connect only");
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 9, history: true, recovered: true });
  // A server replaying one message too many, and a repeat in the live tail.
  for (const n of [4, 5, 6, 7, 7, 8, 9, 10]) ws.message(n, `m${n}`);
  assert.deepEqual(messagesOf(events), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10"]);
  assert.equal(client.stats.duplicates, 2);
  assert.equal(client.stats.reconnects, 1);
  assert.deepEqual(resetsOf(events), [], "recovered: no reset");
  const closed = events.find((e) => e.name === "closed").detail;
  assert.equal(closed.code, 1006);
  assert.equal(closed.reconnect, true);
  const reconnecting = events.find((e) => e.name === "reconnecting").detail;
  assert.equal(reconnecting.delay, 0);
  client.close();
});

test("the position starts at the welcome's top when no backlog was asked", async () => {
  const { client, socket } = await start();
  let ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 41, history: true });
  ws.drop(1001, "server shutting down");
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  // Nothing was delivered, yet whatever came after the top must come.
  assert.equal(ws.param("since"), "41");
  assert.equal(ws.param("epoch"), "E1");
  client.close();
});

test("a backlog lost before its first message is asked for again", async () => {
  const { client, socket } = await start({ history: 10 });
  let ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 41, history: true });
  ws.drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  assert.equal(ws.param("history"), "10");
  assert.equal(ws.param("since"), null);
  client.close();
});

test("not recovered: reset, then live from the server's top", async () => {
  const { client, events, socket } = await start();
  let ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 0, history: true });
  ws.message(1, "m1");
  ws.drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E2", offset: 7, history: true, recovered: false });
  const [reset] = resetsOf(events);
  assert.match(reset.reason, /not recovered/);
  assert.equal(reset.epoch, "E2");
  assert.equal(reset.offset, 7);
  assert.deepEqual(client.position, { epoch: "E2", offset: 7 });
  ws.message(8, "m8", "E2");
  assert.deepEqual(messagesOf(events), ["m1", "m8"]);
  assert.equal(client.stats.resets, 1);
  client.close();
});

test("the server's reset frame is a reset, and moves the position", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 0, history: true });
  ws.message(1, "m1");
  ws.frame({ type: "reset", epoch: "E1", offset: 40, reason: "gap the server could not repair" });
  ws.message(41, "m41");
  assert.deepEqual(resetsOf(events), [{ reason: "gap the server could not repair", epoch: "E1", offset: 40 }]);
  assert.deepEqual(messagesOf(events), ["m1", "m41"]);
  assert.equal(client.stats.gaps, 0);
  client.close();
});

test("an epoch change without notice is a reset; an offset jump is counted", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 0, history: true });
  ws.message(1, "m1");
  ws.message(3, "m3");
  ws.message(1, "new-epoch-1", "E2");
  assert.deepEqual(messagesOf(events), ["m1", "m3", "new-epoch-1"]);
  assert.equal(client.stats.gaps, 1);
  assert.equal(resetsOf(events).length, 1);
  assert.match(resetsOf(events)[0].reason, /epoch changed/);
  client.close();
});

test("a group without history: every reconnect is a reset, no resume parameters", async () => {
  const { client, events, socket } = await start({ history: 10 });
  let ws = socket();
  ws.accept();
  ws.welcome({ epoch: null, offset: null, history: false });
  ws.frame({ type: "message", data: "hello" });
  assert.deepEqual(resetsOf(events), [], "the first join is not a reset");
  ws.drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  assert.equal(ws.param("since"), null);
  ws.accept();
  ws.welcome({ epoch: null, offset: null, history: false });
  const [reset] = resetsOf(events);
  assert.match(reset.reason, /no history/);
  assert.equal(client.position, null);
  client.close();
});

test("a server without groupcast.v1: frames are the payloads; a reconnect is a reset", async () => {
  const { client, events, socket } = await start();
  let ws = socket();
  ws.accept("");
  ws.frame('{"type":"message","offset":1,"epoch":"E1","data":"x"}');
  ws.frame(new Uint8Array([7, 8]).buffer);
  const [text, bin] = events.filter((e) => e.name === "message").map((e) => e.detail);
  assert.equal(text.data, '{"type":"message","offset":1,"epoch":"E1","data":"x"}');
  assert.equal(text.offset, null);
  assert.deepEqual([...bin.data], [7, 8]);
  ws.drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  socket().accept("");
  assert.equal(resetsOf(events).length, 1);
  client.close();
});

for (const code of [1008, 4003]) {
  test(`close ${code} is final`, async () => {
    const { client, events, socket } = await start();
    const ws = socket();
    ws.accept();
    ws.welcome({ epoch: "E1", offset: 0, history: true });
    ws.drop(code, "no");
    const closed = events.find((e) => e.name === "closed").detail;
    assert.deepEqual(closed, { code, reason: "no", reconnect: false });
    assert.equal(client.state, "closed");
    assert.ok(!events.some((e) => e.name === "reconnecting"));
    assert.equal(FakeSocket.all.length, 1);
  });
}

for (const code of [4509, 4500, 4999]) {
  test(`close ${code} (do not reconnect) stops the client and says why`, async () => {
    const { client, events, socket } = await start();
    const ws = socket();
    ws.accept();
    ws.welcome({ epoch: "E1", offset: 0, history: true });
    ws.drop(code, code === 4509 ? "banned" : "");
    const closed = events.find((e) => e.name === "closed").detail;
    const reason = code === 4509 ? "banned" : "the server said not to reconnect";
    assert.deepEqual(closed, { code, reason, reconnect: false });
    assert.equal(client.state, "closed");
    assert.ok(!events.some((e) => e.name === "reconnecting"));
    assert.equal(FakeSocket.all.length, 1);
  });
}

test("close 4009 (disconnected, may come back) reconnects and resumes", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 3, history: true });
  ws.drop(4009, "disconnected");
  assert.deepEqual(events.find((e) => e.name === "closed").detail, {
    code: 4009,
    reason: "disconnected",
    reconnect: true,
  });
  await until("a second socket", () => FakeSocket.all.length === 2);
  assert.equal(socket().param("since"), "3");
  client.close();
});

test("4001 without getToken is final", async () => {
  const { client, events, socket } = await start({ token: "old" });
  const ws = socket();
  ws.accept();
  ws.drop(4001, "token expired");
  assert.equal(events.find((e) => e.name === "closed").detail.reconnect, false);
  assert.equal(client.state, "closed");
});

test("4001 with getToken: a new token, then at once a reconnect that resumes", async () => {
  let calls = 0;
  const { client, events, socket } = await start({
    token: "old",
    getToken: async () => `new-${++calls}`,
  });
  let ws = socket();
  assert.equal(ws.param("token"), "old", "a given token is used first, getToken not called");
  assert.equal(calls, 0);
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 5, history: true });
  ws.drop(4001, "token expired");
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  assert.equal(ws.param("token"), "new-1");
  assert.equal(ws.param("since"), "5");
  assert.equal(events.find((e) => e.name === "reconnecting").detail.delay, 0);
  client.close();
});

test("4010 (the node lost messages): at once a reconnect that resumes", async () => {
  const { client, events, socket } = await start({});
  let ws = socket();
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 9, history: true });
  ws.drop(4010, "messages were lost: resume with since");
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  assert.equal(ws.param("since"), "9");
  assert.equal(ws.param("epoch"), "E1");
  assert.equal(events.find((e) => e.name === "reconnecting").detail.delay, 0);
  client.close();
});

test("getToken is asked for the first token when none is given", async () => {
  const { client, socket } = await start({ getToken: () => "fresh" });
  assert.equal(socket().param("token"), "fresh");
  client.close();
});

test("backoff: exponential, capped, full jitter", () => {
  const backoff = { min: 100, max: 1000 };
  assert.equal(backoffDelay(0, backoff, () => 0.999999), 99);
  assert.equal(backoffDelay(1, backoff, () => 0.5), 100);
  assert.equal(backoffDelay(3, backoff, () => 0.5), 400);
  assert.equal(backoffDelay(10, backoff, () => 0.5), 500, "capped at max");
  assert.equal(backoffDelay(1000, backoff, () => 0.5), 500, "no overflow");
  assert.equal(backoffDelay(5, backoff, () => 0), 0, "full jitter reaches 0");
});

test("failed attempts back off further each time; a welcome starts over", async () => {
  const { client, events, socket } = await start({ random: () => 0.5, backoff: { min: 4, max: 1000 } });
  for (let n = 1; n <= 3; n++) {
    socket().drop(1006);
    await until(`attempt ${n + 1}`, () => FakeSocket.all.length === n + 1);
  }
  const delays = events.filter((e) => e.name === "reconnecting").map((e) => e.detail.delay);
  assert.deepEqual(delays, [2, 4, 8]);
  socket().accept();
  socket().welcome({ epoch: "E1", offset: 0, history: true });
  socket().drop(1006);
  await until("attempt 5", () => FakeSocket.all.length === 5);
  assert.equal(events.filter((e) => e.name === "reconnecting").at(-1).detail.delay, 2);
  client.close();
});

test("1013 waits long: between max/2 and max", async () => {
  const { client, events, socket } = await start({ random: () => 0, backoff: { min: 1, max: 40 } });
  socket().accept();
  socket().drop(1013, "too slow");
  assert.equal(events.find((e) => e.name === "reconnecting").detail.delay, 20);
  client.close();
});

test("maxRetries: gives up after that many failed attempts", async () => {
  const { client, events, socket } = await start({ maxRetries: 2 });
  socket().drop(1006);
  await until("attempt 2", () => FakeSocket.all.length === 2);
  socket().drop(1006);
  await until("attempt 3", () => FakeSocket.all.length === 3);
  socket().drop(1006);
  const last = events.filter((e) => e.name === "closed").at(-1).detail;
  assert.equal(last.reconnect, false);
  assert.match(last.reason, /gave up after 2/);
  assert.equal(client.state, "closed");
});

test("several URLs are tried in turn, each with the resume position", async () => {
  const { client, socket } = await start({}, ["ws://a.test", "ws://b.test/prefix/"]);
  assert.equal(socket().url.host, "a.test");
  socket().accept();
  socket().welcome({ epoch: "E1", offset: 0, history: true });
  socket().message(1, "m1");
  socket().drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  assert.equal(socket().url.host, "b.test");
  assert.equal(socket().url.pathname, "/prefix/ws/g");
  assert.equal(socket().param("since"), "1");
  socket().drop(1006);
  await until("a third socket", () => FakeSocket.all.length === 3);
  assert.equal(socket().url.host, "a.test");
  client.close();
});

test("a socket that never opens is abandoned after connectTimeout", async () => {
  const { client, events } = await start({ connectTimeout: 5 });
  await until("a second socket", () => FakeSocket.all.length === 2);
  assert.deepEqual(FakeSocket.all[0].closedWith, { code: undefined, reason: undefined });
  assert.equal(events.find((e) => e.name === "closed").detail.reason, "connect timeout");
  client.close();
});

test("send, refresh and close", async () => {
  const { client, events, socket } = await start({ token: "t1" });
  assert.equal(client.send("too early"), false, "nothing is queued while connecting");
  const ws = socket();
  ws.accept();
  assert.equal(client.send("hi"), true);
  const bytes = new Uint8Array([1, 2]);
  assert.equal(client.send(bytes), true);
  assert.equal(client.refresh("t2"), true);
  assert.deepEqual(ws.sent, ["hi", bytes, JSON.stringify({ type: "refresh", token: "t2" })]);
  ws.frame({ type: "refreshed", exp: 1767225600 });
  assert.deepEqual(events.find((e) => e.name === "refreshed").detail, { exp: 1767225600 });

  client.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "closed by the client" });
  assert.equal(client.state, "closed");
  assert.equal(client.send("late"), false);
  const count = events.length;
  ws.drop(1000); // the socket's own close event comes later: ignored
  ws.message(1, "after close");
  assert.equal(events.length, count, "no event after closed");
  assert.deepEqual(events.at(-1), { name: "closed", detail: { code: 1000, reason: "closed by the client", reconnect: false } });
  assert.equal(FakeSocket.all.length, 1, "no reconnect after close()");
});

test("close() while a reconnect is pending cancels it", async () => {
  const { client, socket } = await start({ random: () => 0.99, backoff: { min: 50, max: 50 } });
  socket().drop(1006);
  assert.equal(client.state, "reconnecting");
  client.close();
  // Showing that something does not happen takes a quiet window: longer
  // than the pending delay (at most 50 ms), no new socket may appear.
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(FakeSocket.all.length, 1);
});

test("a position given by the application is resumed from on the first connect", async () => {
  const { client, socket } = await start({ history: 10, position: { epoch: "E9", offset: 12 } });
  assert.equal(socket().param("since"), "12");
  assert.equal(socket().param("epoch"), "E9");
  assert.equal(socket().param("history"), null);
  client.close();
});

test("endpoint: http becomes ws, groups are encoded per segment", () => {
  assert.equal(endpoint("https://x.test", "task/42", { token: "a b" }), "wss://x.test/ws/task/42?token=a+b");
  assert.equal(endpoint("ws://x.test/ws/raw", null, { history: 3 }), "ws://x.test/ws/raw?history=3");
  assert.throws(() => endpoint("/relative", "g"), "relative URLs need a page");
});

test("connect() is new GroupcastClient(); a throwing listener does not break the client", async () => {
  FakeSocket.all = [];
  const client = connect("ws://a.test", { group: "g", WebSocket: FakeSocket, random: () => 0 });
  const seen = [];
  // The error goes to the platform's reportError (a browser's console).
  let reported = null;
  globalThis.reportError = (error) => {
    reported = error;
  };
  client.on("welcome", () => {
    throw new Error("listener bug");
  });
  client.on("message", (m) => seen.push(m.data));
  await until("a socket", () => FakeSocket.all.length === 1);
  const ws = FakeSocket.all[0];
  ws.accept();
  ws.welcome({ epoch: "E1", offset: 0, history: true });
  ws.message(1, "still works");
  assert.deepEqual(seen, ["still works"]);
  await until("the listener's error is reported", () => reported !== null);
  assert.equal(reported.message, "listener bug");
  delete globalThis.reportError;
  client.close();
});
