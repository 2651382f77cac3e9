// Who is here: the `presence` option and subscribe(group, {presence}),
// the member list a snapshot replaces and join/leave frames update, the
// events, a reconnect's new snapshot, and the refusals (a 400 before the
// upgrade, found out with fetch; an `error` frame in a subscribe;
// `presence_unavailable`). Same approach as client.test.js: a fake
// WebSocket the test plays the server on, no sleeps, no server.
// Run: node --test clients/js/test/

import { afterEach, test } from "node:test";
import assert from "node:assert/strict";

import { GroupcastClient, PROTOCOL } from "../groupcast.js";
import { FakeSocket as SharedFakeSocket } from "./fake-socket.js";

class FakeSocket extends SharedFakeSocket {
  welcome(group) {
    this.frame({ type: "welcome", session: "me", node: "n1", group, epoch: null, offset: null, history: false });
  }
}

async function until(what, condition, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

const NAMES = ["members", "join", "leave", "user_joined", "user_left", "error", "closed", "reconnecting"];

/** Every client a test started: closed after it (no timer left behind). */
const started = [];
afterEach(() => {
  for (const client of started.splice(0)) client.close();
});

/** A client on the fake for group "room", recording its events. */
async function start(options = {}) {
  FakeSocket.all = [];
  const events = [];
  const client = new GroupcastClient("ws://a.test", {
    group: "room",
    WebSocket: FakeSocket,
    random: () => 0,
    backoff: { min: 10, max: 100 },
    fetch: () => Promise.reject(new Error("no fetch in this test")),
    ...options,
  });
  started.push(client);
  for (const name of NAMES) client.on(name, (detail) => events.push({ name, detail }));
  await until("the first socket", () => FakeSocket.all.length === 1);
  return { client, events, socket: () => FakeSocket.all.at(-1) };
}

const alice = { session: "s-alice", node: "n1", sub: "alice", connected_at_ms: 1000, keys: { name: "Alice" } };
const anon = { session: "s-anon", node: "n2", connected_at_ms: 2000 };

function snapshot(ws, members, fields = {}) {
  const users = new Set(members.map((m) => m.sub).filter(Boolean)).size;
  ws.frame({ type: "presence", group: "room", seq: 10, members, count: members.length, users, truncated: false, ...fields });
}

const sessions = (client, group) => client.members(group).map((m) => m.session);

test("presence: true asks ?presence=1; the snapshot is the member list and a members event", async () => {
  const { client, events, socket } = await start({ presence: true });
  const ws = socket();
  assert.equal(ws.url.searchParams.get("presence"), "1");
  assert.equal(client.members(), null, "nothing known before the snapshot");
  ws.accept();
  ws.welcome("room");
  snapshot(ws, [alice, anon]);

  assert.deepEqual(client.members(), [
    { session: "s-alice", node: "n1", sub: "alice", connectedAt: 1000, keys: { name: "Alice" } },
    { session: "s-anon", node: "n2", sub: null, connectedAt: 2000, keys: {} },
  ]);
  assert.deepEqual(client.members("room"), client.members());
  assert.deepEqual(client.users(), [{ sub: "alice", connections: 1 }], "anonymous members are no user");
  const [shown] = events.filter((e) => e.name === "members");
  assert.equal(shown.detail.group, "room");
  assert.equal(shown.detail.count, 2);
  assert.equal(shown.detail.users, 1);
  assert.equal(shown.detail.truncated, false);
  assert.equal(shown.detail.seq, 10);
  assert.deepEqual(shown.detail.members, client.members());

  // What members() returns is a copy: changing it changes nothing.
  client.members()[0].keys.name = "Mallory";
  assert.equal(client.members()[0].keys.name, "Alice");
});

test("without the option nothing is asked and members() is null, but join/leave frames are still events", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  assert.equal(ws.url.searchParams.get("presence"), null);
  ws.accept();
  ws.welcome("room");
  ws.frame({ type: "join", group: "room", session: "s-bob", sub: "bob", node: "n2", seq: 11 });
  assert.equal(client.members(), null);
  assert.equal(client.users(), null);
  assert.equal(client.presenceOf(), null);
  assert.deepEqual(
    events.filter((e) => e.name === "join").map((e) => e.detail),
    [{ group: "room", session: "s-bob", sub: "bob", node: "n2", seq: 11 }],
  );
});

test("join and leave frames update the list and the counts, and come as events with the frame's fields", async () => {
  const { client, events, socket } = await start({ presence: true });
  const ws = socket();
  ws.accept();
  ws.welcome("room");
  snapshot(ws, [alice]);

  ws.frame({ type: "user_joined", group: "room", sub: "bob", node: "n2", seq: 11 });
  ws.frame({ type: "join", group: "room", session: "s-bob", sub: "bob", node: "n2", seq: 11 });
  ws.frame({ type: "join", group: "room", session: "s-bob2", sub: "bob", node: "n1", seq: 12 });
  assert.deepEqual(sessions(client), ["s-alice", "s-bob", "s-bob2"]);
  const bob = client.members().find((m) => m.session === "s-bob");
  assert.equal(bob.sub, "bob");
  assert.equal(bob.node, "n2");
  assert.equal(typeof bob.connectedAt, "number", "when this client saw the join");
  assert.deepEqual(client.users(), [
    { sub: "alice", connections: 1 },
    { sub: "bob", connections: 2 },
  ]);
  assert.deepEqual(
    { count: client.presenceOf().count, users: client.presenceOf().users, seq: client.presenceOf().seq },
    { count: 3, users: 2, seq: 12 },
  );

  // Frames of another node may come out of position order: same list.
  ws.frame({ type: "leave", group: "room", session: "s-bob2", sub: "bob", node: "n1", seq: 14 });
  ws.frame({ type: "leave", group: "room", session: "s-bob", sub: "bob", node: "n2", seq: 13 });
  ws.frame({ type: "user_left", group: "room", sub: "bob", node: "n2", seq: 15 });
  assert.deepEqual(sessions(client), ["s-alice"]);
  assert.deepEqual(client.users(), [{ sub: "alice", connections: 1 }]);
  assert.equal(client.presenceOf().count, 1);
  assert.equal(client.presenceOf().users, 1);
  assert.deepEqual(
    events.filter((e) => e.name !== "members").map((e) => `${e.name}:${e.detail.session ?? e.detail.sub}`),
    ["user_joined:bob", "join:s-bob", "join:s-bob2", "leave:s-bob2", "leave:s-bob", "user_left:bob"],
  );
  assert.deepEqual(events.find((e) => e.name === "leave").detail, {
    group: "room",
    session: "s-bob2",
    sub: "bob",
    node: "n1",
    seq: 14,
  });
});

test("a frame at or below the snapshot's position is in the snapshot already: not applied twice", async () => {
  const { client, events, socket } = await start({ presence: true });
  const ws = socket();
  ws.accept();
  ws.welcome("room");
  snapshot(ws, [alice]);
  ws.frame({ type: "leave", group: "room", session: "s-alice", sub: "alice", node: "n1", seq: 9 });
  ws.frame({ type: "join", group: "room", session: "s-old", node: "n1", seq: 10 });
  assert.deepEqual(sessions(client), ["s-alice"]);
  assert.equal(events.filter((e) => e.name === "join" || e.name === "leave").length, 0);
});

test("after a reconnect the new snapshot replaces the list: nobody is counted twice", async () => {
  const { client, events, socket } = await start({ presence: true });
  let ws = socket();
  ws.accept();
  ws.welcome("room");
  snapshot(ws, [alice]);
  ws.frame({ type: "join", group: "room", session: "s-bob", sub: "bob", node: "n2", seq: 11 });
  ws.drop(1006);
  // While disconnected, the last list known.
  assert.deepEqual(sessions(client), ["s-alice", "s-bob"]);

  await until("the reconnect", () => FakeSocket.all.length === 2);
  ws = socket();
  assert.equal(ws.url.searchParams.get("presence"), "1", "asked again on every reconnect");
  ws.accept();
  ws.welcome("room");
  // Bob left while we were away; alice is here again, and so are we.
  snapshot(ws, [alice, { session: "me", node: "n1", connected_at_ms: 3000 }], { seq: 20 });
  assert.deepEqual(sessions(client), ["s-alice", "me"]);
  assert.equal(client.presenceOf().count, 2);
  assert.equal(events.filter((e) => e.name === "members").length, 2);
});

test("truncated: exposed, and the counts stay the server's whole-group figures", async () => {
  const { client, events, socket } = await start({ presence: true });
  const ws = socket();
  ws.accept();
  ws.welcome("room");
  snapshot(ws, [alice], { count: 1500, users: 900, truncated: true });
  assert.equal(events.find((e) => e.name === "members").detail.truncated, true);
  assert.equal(client.presenceOf().truncated, true);
  // A leave of someone the list did not show still counts.
  ws.frame({ type: "leave", group: "room", session: "s-unlisted", node: "n2", seq: 11 });
  ws.frame({ type: "join", group: "room", session: "s-new", node: "n2", seq: 12 });
  ws.frame({ type: "join", group: "room", session: "s-new2", node: "n2", seq: 13 });
  assert.equal(client.presenceOf().count, 1501);
  assert.deepEqual(sessions(client), ["s-alice", "s-new", "s-new2"]);
});

test("a group that keeps no presence: the refusal is fetched, an error emitted, and the client connects at once without", async () => {
  const asked = [];
  const fetch = async (url) => {
    asked.push(url);
    return {
      status: 400,
      json: async () => ({ error: "bad_query", message: "room keeps no presence (the server's --presence names the groups that do)" }),
    };
  };
  const { client, events, socket } = await start({ presence: true, fetch });
  socket().drop(1006); // refused before the upgrade: a browser says only 1006
  await until("the second socket", () => FakeSocket.all.length === 2);
  assert.equal(asked.length, 1);
  const probe = new URL(asked[0]);
  assert.equal(probe.protocol, "http:");
  assert.equal(probe.pathname, "/ws/room");
  assert.equal(probe.searchParams.get("presence"), "1");

  const [error] = events.filter((e) => e.name === "error").map((e) => e.detail);
  assert.equal(error.code, "no_presence");
  assert.equal(error.group, "room");
  assert.match(error.reason, /keeps no presence/);
  assert.equal(events.find((e) => e.name === "reconnecting").detail.delay, 0);

  const ws = socket();
  assert.equal(ws.url.searchParams.get("presence"), null, "asked without presence now");
  ws.accept();
  ws.welcome("room");
  assert.equal(client.members(), null);
  assert.equal(client.state, "open");
  // And it stays without: a later reconnect does not ask again.
  ws.drop(1006);
  await until("the third socket", () => FakeSocket.all.length === 3);
  assert.equal(socket().url.searchParams.get("presence"), null);
  assert.equal(asked.length, 1, "no probe for a connection without presence");
});

test("a 403 presence_not_allowed is reported the same way", async () => {
  const fetch = async () => ({
    status: 403,
    json: async () => ({ error: "presence_not_allowed", message: "this token does not allow seeing presence" }),
  });
  const { events, socket } = await start({ presence: true, fetch });
  socket().drop(1006);
  await until("the second socket", () => FakeSocket.all.length === 2);
  assert.equal(events.find((e) => e.name === "error").detail.code, "presence_not_allowed");
  assert.equal(socket().url.searchParams.get("presence"), null);
});

test("a failure that is not about presence (the server down, or it would let us in) keeps presence and backs off", async () => {
  for (const fetch of [
    () => Promise.reject(new TypeError("fetch failed")),
    async () => ({ status: 426, json: async () => ({ error: "not_a_websocket_request", message: "" }) }),
  ]) {
    const { events, socket } = await start({ presence: true, fetch });
    socket().drop(1006);
    await until("the second socket", () => FakeSocket.all.length === 2);
    assert.equal(events.filter((e) => e.name === "error").length, 0);
    assert.equal(socket().url.searchParams.get("presence"), "1");
  }
});

test("subscribe with presence: the request asks, the snapshot (with the request's id) fills the group's list", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome("room");
  const answer = client.subscribe("chat", { presence: true });
  const [request] = ws.requests();
  assert.deepEqual(request, { type: "subscribe", group: "chat", presence: true, id: 1 });
  ws.frame({ type: "subscribed", id: 1, group: "chat", epoch: null, offset: null, history: false });
  ws.frame({ type: "presence", id: 1, group: "chat", seq: 5, members: [alice], count: 1, users: 1, truncated: false });
  await answer;
  assert.deepEqual(sessions(client, "chat"), ["s-alice"]);
  assert.equal(client.members("room"), null, "the other group asked for none");
  ws.frame({ type: "join", group: "chat", session: "s-bob", sub: "bob", node: "n1", seq: 6 });
  assert.deepEqual(sessions(client, "chat"), ["s-alice", "s-bob"]);
  assert.equal(events.find((e) => e.name === "members").detail.group, "chat");

  // Every reconnect asks again.
  ws.drop(1006);
  await until("the reconnect", () => FakeSocket.all.length === 2);
  socket().accept();
  assert.deepEqual(socket().requests(), [{ type: "subscribe", group: "chat", presence: true, id: 2 }]);
});

test("a subscribe refused presence (no_presence) is sent again without it: the group is joined, members() null", async () => {
  const { client, events, socket } = await start();
  const ws = socket();
  ws.accept();
  ws.welcome("room");
  const answer = client.subscribe("chat", { presence: true });
  ws.frame({ type: "error", id: 1, group: "chat", code: "no_presence", reason: "chat keeps no presence" });
  assert.deepEqual(ws.requests()[1], { type: "subscribe", group: "chat", id: 2 });
  ws.frame({ type: "subscribed", id: 2, group: "chat", epoch: null, offset: null, history: false });
  const subscribed = await answer;
  assert.equal(subscribed.group, "chat");
  assert.deepEqual(client.groups, ["room", "chat"]);
  assert.equal(client.members("chat"), null);
  assert.deepEqual(
    events.filter((e) => e.name === "error").map((e) => e.detail),
    [{ code: "no_presence", reason: "chat keeps no presence", group: "chat", id: 1 }],
  );
});

test("presence_unavailable: an error, the group stays, its list unknown until the next snapshot", async () => {
  const { client, events, socket } = await start({ presence: true });
  const ws = socket();
  ws.accept();
  ws.welcome("room");
  ws.frame({ type: "error", id: null, group: "room", code: "presence_unavailable", reason: "the members cannot be read now" });
  assert.equal(events.find((e) => e.name === "error").detail.code, "presence_unavailable");
  assert.equal(client.members(), null);
  assert.deepEqual(client.groups, ["room"]);
  assert.equal(client.state, "open");
  // Frames still come (unfiltered): events, but no list to apply them to.
  ws.frame({ type: "join", group: "room", session: "s-bob", node: "n1", seq: 3 });
  assert.equal(events.filter((e) => e.name === "join").length, 1);
  assert.equal(client.members(), null);
});
