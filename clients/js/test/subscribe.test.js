// Many groups on one connection: subscribe / unsubscribe, messages
// dispatched and deduplicated per group, and every group resumed after a
// reconnect in one round trip. Same approach as client.test.js: a fake
// WebSocket the test plays the server on, no sleeps, no server.
// Run: node --test clients/js/test/

import { test } from "node:test";
import assert from "node:assert/strict";

import { GroupcastClient, GroupcastError, PROTOCOL } from "../groupcast.js";
import { FakeSocket as SharedFakeSocket } from "./fake-socket.js";

/** A WebSocket the test drives (as in client.test.js, plus `requests`). */
class FakeSocket extends SharedFakeSocket {
  welcome(group, fields) {
    this.frame({ type: "welcome", session: "s1", node: "n1", group, ...fields });
  }

  /** The `subscribed` answer to the request for `group` on this socket. */
  subscribed(group, fields) {
    const { id } = this.request("subscribe", group);
    this.frame({ type: "subscribed", id, group, ...fields });
  }

  message(group, offset, data, epoch = `E-${group}`) {
    this.frame({ type: "message", group, offset, epoch, data });
  }

  /** The last `type` request for `group`. */
  request(type, group) {
    const found = this.requests().filter((r) => r.type === type && r.group === group).at(-1);
    assert.ok(found, `no ${type} request for ${group} in ${JSON.stringify(this.sent)}`);
    return found;
  }
}

async function until(what, condition, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** A client on the fake for group "a", recording its events. */
async function start(options = {}) {
  FakeSocket.all = [];
  const events = [];
  const client = new GroupcastClient("ws://a.test", {
    group: "a",
    WebSocket: FakeSocket,
    random: () => 0,
    backoff: { min: 10, max: 100 },
    ...options,
  });
  for (const name of ["welcome", "subscribed", "unsubscribed", "message", "reset", "error", "closed"]) {
    client.on(name, (detail) => events.push({ name, detail }));
  }
  await until("the first socket", () => FakeSocket.all.length === 1);
  return { client, events, socket: () => FakeSocket.all.at(-1) };
}

/** "group:data" for every message delivered, in order. */
const delivered = (events) =>
  events.filter((e) => e.name === "message").map((e) => `${e.detail.group}:${e.detail.data}`);

test("subscribe on an open connection: a request, an answer, then the group's messages", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome("a", { epoch: "E-a", offset: 0, history: true });

  const answer = client.subscribe("b", { history: 5 });
  assert.deepEqual(ws.requests(), [{ type: "subscribe", group: "b", history: 5, id: 1 }]);
  assert.deepEqual(client.groups, ["a", "b"]);
  ws.subscribed("b", { epoch: "E-b", offset: 2, history: true });
  const subscribed = await answer;
  assert.equal(subscribed.offset, 2);
  assert.equal(events.find((e) => e.name === "subscribed").detail.group, "b");

  // The backlog, then live; the same offsets in two groups are two
  // messages, a repeat within one group is one.
  ws.message("b", 1, "b1");
  ws.message("b", 2, "b2");
  ws.message("a", 1, "a1");
  ws.message("b", 2, "b2 again");
  ws.message("a", 2, "a2");
  ws.message("b", 3, "b3");
  assert.deepEqual(delivered(events), ["b:b1", "b:b2", "a:a1", "a:a2", "b:b3"]);
  assert.equal(client.stats.duplicates, 1);
  assert.deepEqual(client.positionOf("b"), { epoch: "E-b", offset: 3 });
  assert.deepEqual(client.position, { epoch: "E-a", offset: 2 }, "position: the first group's");
  client.close();
});

test("subscribes made before the socket opens go out together as it opens", async () => {
  const { client, events, socket } = await start();
  const answers = [client.subscribe("b"), client.subscribe("c", { position: { epoch: "E-c", offset: 7 } })];
  const ws = socket();
  assert.equal(ws.url.pathname, "/ws/a");
  ws.accept();
  assert.deepEqual(ws.requests(), [
    { type: "subscribe", group: "b", id: 1 },
    { type: "subscribe", group: "c", since: 7, epoch: "E-c", id: 2 },
  ]);
  // The server may answer in any order, the welcome included.
  ws.subscribed("c", { epoch: "E-c", offset: 9, history: true, recovered: true });
  ws.message("c", 8, "c8");
  ws.welcome("a", { epoch: "E-a", offset: 0, history: true });
  ws.subscribed("b", { epoch: "E-b", offset: 0, history: true });
  ws.message("c", 9, "c9");
  ws.message("b", 1, "b1");
  await Promise.all(answers);
  assert.deepEqual(delivered(events), ["c:c8", "c:c9", "b:b1"]);
  assert.equal(events.filter((e) => e.name === "reset").length, 0);
  client.close();
});

test("a reconnect resumes every group in one round trip", async () => {
  const groups = ["a", "b", "c", "d", "e"];
  const { client, events, socket } = await start();
  let ws = socket();
  ws.accept();
  for (const g of groups.slice(1)) client.subscribe(g);
  ws.welcome("a", { epoch: "E-a", offset: 0, history: true });
  for (const g of groups.slice(1)) ws.subscribed(g, { epoch: `E-${g}`, offset: 0, history: true });
  for (const g of groups) for (let n = 1; n <= 3; n++) ws.message(g, n, `${g}${n}`);
  ws.drop(1006);

  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  // The first group in the URL, with its own position...
  assert.equal(ws.url.pathname, "/ws/a");
  assert.equal(ws.param("since"), "3");
  assert.equal(ws.param("epoch"), "E-a");
  ws.accept();
  // ...and every other group's resume sent at once, before any answer.
  assert.deepEqual(
    ws.requests().map(({ group, since, epoch }) => ({ group, since, epoch })),
    groups.slice(1).map((g) => ({ group: g, since: 3, epoch: `E-${g}` })),
  );

  ws.welcome("a", { epoch: "E-a", offset: 4, history: true, recovered: true });
  ws.message("a", 3, "a3 again"); // an overlapping replay: dropped
  ws.message("a", 4, "a4");
  for (const g of ["b", "c", "d"]) {
    ws.subscribed(g, { epoch: `E-${g}`, offset: 4, history: true, recovered: true });
    ws.message(g, 4, `${g}4`);
  }
  // e's history was lost meanwhile: a reset for e alone, then live.
  ws.subscribed("e", { epoch: "E-e2", offset: 1, history: true, recovered: false });
  ws.message("e", 2, "e2'", "E-e2");

  const after = delivered(events).slice(15);
  assert.deepEqual(after, ["a:a4", "b:b4", "c:c4", "d:d4", "e:e2'"]);
  const resets = events.filter((e) => e.name === "reset").map((e) => e.detail);
  assert.equal(resets.length, 1);
  assert.equal(resets[0].group, "e");
  assert.match(resets[0].reason, /not recovered/);
  assert.equal(client.stats.duplicates, 1);
  client.close();
});

test("unsubscribe: no more of its messages, and no reconnect joins it again", async () => {
  const { client, events, socket } = await start();
  let ws = socket();
  ws.accept();
  ws.welcome("a", { epoch: "E-a", offset: 0, history: true });
  client.subscribe("b");
  ws.subscribed("b", { epoch: "E-b", offset: 0, history: true });
  ws.message("b", 1, "b1");

  const left = client.unsubscribe("b");
  const request = ws.request("unsubscribe", "b");
  assert.deepEqual(client.groups, ["a"]);
  ws.message("b", 2, "b2: already on its way"); // dropped: b was left
  ws.frame({ type: "unsubscribed", id: request.id, group: "b" });
  await left;
  assert.deepEqual(delivered(events), ["b:b1"]);

  ws.drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  ws.accept();
  assert.deepEqual(ws.requests(), [], "only a, in the URL");
  client.close();
});

test("leaving the first group: the next reconnect's URL names the next one", async () => {
  const { client, socket } = await start();
  let ws = socket();
  ws.accept();
  ws.welcome("a", { epoch: "E-a", offset: 0, history: true });
  client.subscribe("b");
  ws.subscribed("b", { epoch: "E-b", offset: 5, history: true });
  client.unsubscribe("a");
  ws.drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  assert.equal(ws.url.pathname, "/ws/b");
  assert.equal(ws.param("since"), "5");
  ws.accept();
  assert.deepEqual(ws.requests(), []);
  client.close();
});

test("a refused subscribe rejects with the server's code and is not retried", async () => {
  const { client, events, socket } = await start();
  let ws = socket();
  ws.accept();
  ws.welcome("a", { epoch: "E-a", offset: 0, history: true });
  const answer = client.subscribe("secret");
  const { id } = ws.request("subscribe", "secret");
  ws.frame({ type: "error", id, group: "secret", code: "group_not_allowed", reason: "not in the token" });
  await assert.rejects(answer, (error) => error instanceof GroupcastError && error.code === "group_not_allowed");
  assert.deepEqual(events.find((e) => e.name === "error").detail, {
    code: "group_not_allowed",
    reason: "not in the token",
    group: "secret",
    id,
  });
  assert.deepEqual(client.groups, ["a"]);
  await assert.rejects(client.subscribe("a"), (error) => error.code === "already_subscribed");

  ws.drop(1006);
  await until("a second socket", () => FakeSocket.all.length === 2);
  ws = socket();
  ws.accept();
  assert.deepEqual(ws.requests(), []);
  client.close();
});

test("subscribe, unsubscribe, subscribe again: only the latest request's answer counts", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome("a", { epoch: "E-a", offset: 0, history: true });
  client.subscribe("b", { history: 10 });
  client.unsubscribe("b");
  const again = client.subscribe("b");
  const [first, leave, second] = ws.requests();
  assert.deepEqual([first.type, leave.type, second.type], ["subscribe", "unsubscribe", "subscribe"]);
  // The server takes them in order: the first join and its backlog...
  ws.frame({ type: "subscribed", id: first.id, group: "b", epoch: "E-b", offset: 3, history: true });
  ws.message("b", 3, "old backlog");
  ws.frame({ type: "unsubscribed", id: leave.id, group: "b" });
  // ...then the second join, live from the top.
  ws.frame({ type: "subscribed", id: second.id, group: "b", epoch: "E-b", offset: 3, history: true });
  ws.message("b", 4, "b4");
  await again;
  assert.deepEqual(delivered(events), ["b:b4"]);
  client.close();
});

test("close() rejects subscribes still waiting for an answer", async () => {
  const { client } = await start();
  const answer = client.subscribe("b");
  client.close();
  await assert.rejects(answer, (error) => error.code === "closed");
  await assert.rejects(client.subscribe("c"), (error) => error.code === "closed");
});
