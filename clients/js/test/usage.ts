// A typed usage example of groupcast.js: what an application in
// TypeScript writes, checked against groupcast.d.ts by
// `tsc --noEmit --strict` (clients/js/check-types.sh). Each
// `@ts-expect-error` line is a mistake the declarations must refuse: in
// strict mode an expect-error that no longer errors fails the check, so a
// declaration loosened to `any` is caught too.
//
// Nothing here runs at import: everything is inside functions, so a test
// runner that picks up this file finds nothing to do.

import {
  GroupcastClient,
  GroupcastError,
  PROTOCOL,
  backoffDelay,
  connect,
  endpoint,
  type GroupcastMessage,
  type Member,
  type Position,
  type Presence,
  type Subscribed,
} from "../groupcast.js";

/** One dashboard: a build's log plus four related groups on one socket. */
export async function follow(build: number, fetchToken: () => Promise<string>): Promise<GroupcastClient> {
  const saved = sessionStorage.getItem(`position/${build}`);
  const client = connect(["wss://push-a.example.com", "wss://push-b.example.com"], {
    group: `build/${build}`,
    history: 100,
    getToken: fetchToken,
    backoff: { min: 250, max: 10_000 },
    position: saved ? (JSON.parse(saved) as Position) : undefined,
  });

  client.on("message", (message) => {
    show(message);
    if (client.position) {
      sessionStorage.setItem(`position/${build}`, JSON.stringify(client.position));
    }
  });
  client.on("reset", ({ reason, group }) => refetch(group ?? `build/${build}`, reason));
  client.on("welcome", (welcome) => console.log(`on ${welcome.node}, top ${welcome.offset ?? "none"}`));
  client.on("reconnecting", ({ delay, code }) => console.log(`closed ${code}, retry in ${delay} ms`));
  client.on("error", ({ code, group }) => console.warn(`refused ${group}: ${code}`));
  const stop = client.on("closed", ({ reconnect }) => {
    if (!reconnect) console.log("for good");
  });
  stop();

  // Four more groups on the same connection, resumed with it.
  const answers: Promise<Subscribed>[] = ["tests", "lint", "deploy", "chat"].map((part) =>
    client.subscribe(`build/${build}/${part}`, { history: 20 }),
  );
  try {
    const all = await Promise.all(answers);
    for (const answer of all) console.log(answer.group, answer.epoch, answer.recovered === true);
  } catch (error) {
    if (error instanceof GroupcastError && error.code === "group_not_allowed") {
      console.warn(`no access to ${error.group}`);
    } else {
      throw error;
    }
  }
  await client.unsubscribe(`build/${build}/chat`);
  const where: Position | null = client.positionOf(`build/${build}/tests`);
  console.log(client.groups.join(", "), where?.offset, client.state, client.stats.duplicates);

  const sent: boolean = client.send("hello") || client.send(new Uint8Array([1, 2]));
  client.refresh(await fetchToken());
  console.log(sent, PROTOCOL, backoffDelay(3, { min: 100 }), endpoint("https://x.test", "g", { history: 5 }));
  return client;
}

/** Text or bytes: `binary` tells which, and narrows `data`. */
function show(message: GroupcastMessage): void {
  if (message.binary) {
    const bytes: Uint8Array = message.data;
    console.log(message.group, bytes.length);
  } else {
    const text: string = message.data;
    console.log(message.group, message.offset, text);
  }
}

/** A lobby's "who is here": the list from each snapshot, then each join and leave. */
export function lobby(url: string, token: string): GroupcastClient {
  const client = connect(url, { group: "chat/lobby", token, presence: true });
  const render = (members: Member[] | null) => {
    for (const { sub, node, connectedAt, keys } of members ?? []) {
      console.log(sub ?? "anonymous", node, connectedAt === null ? "?" : new Date(connectedAt), keys["name"]);
    }
  };
  client.on("members", ({ members, count, users, truncated }: Presence) => {
    render(members);
    console.log(`${count} connections, ${users} users${truncated ? " (list cut)" : ""}`);
  });
  client.on("join", ({ session, sub, seq }) => {
    console.log(`${sub ?? "someone"} joined (${session} at ${seq})`);
    render(client.members());
  });
  client.on("leave", () => render(client.members("chat/lobby")));
  client.on("user_joined", ({ sub, node }) => console.log(`${sub} is here (${node})`));
  client.on("user_left", ({ sub }) => console.log(`${sub} left`));
  client.on("error", ({ code, group }) => {
    if (code === "no_presence" || code === "presence_not_allowed") console.log(`${group}: no list`);
  });
  for (const { sub, connections } of client.users() ?? []) console.log(sub, connections);
  console.log(client.presenceOf()?.count);
  void client.subscribe("chat/room-2", { presence: true });
  return client;
}

function refetch(group: string, reason: string): void {
  console.log(`refetch ${group}: ${reason}`);
}

/** What the declarations refuse. */
export function mistakes(client: GroupcastClient): void {
  // @ts-expect-error: no such event
  client.on("mesage", () => {});
  // @ts-expect-error: a message's data may be bytes
  client.on("message", (message) => message.data.toUpperCase());
  // @ts-expect-error: history is a count
  client.subscribe("g", { history: "all" });
  // @ts-expect-error: a position needs its epoch
  client.subscribe("g", { position: { offset: 3 } });
  // @ts-expect-error: state is one of five words
  const state: "open" | "closed" = client.state;
  // @ts-expect-error: the position may be null
  console.log(client.position.offset, state);
  // @ts-expect-error: unsubscribe takes the group
  client.unsubscribe();
  // @ts-expect-error: the group option is a name
  new GroupcastClient("/", { group: 42 });
  // @ts-expect-error: members() may be null (no presence)
  console.log(client.members().length);
  // @ts-expect-error: an anonymous member has no sub
  const who: string = client.members()![0].sub;
  // @ts-expect-error: presence is asked with true, not a count
  client.subscribe("g", { presence: 1 });
  console.log(who);
}
