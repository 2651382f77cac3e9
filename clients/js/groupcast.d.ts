// TypeScript declarations for groupcast.js, shipped beside it: import the
// module as usual (`import { connect } from "./groupcast.js"`) and the
// compiler finds these. They describe the same API as the comments at the
// top of groupcast.js; docs/protocol.md describes the frames.
//
// Checked by `clients/js/check-types.sh` (a step of scripts/test.sh):
// `tsc --noEmit --strict` over clients/js/test/usage.ts, which uses every
// part of this file, and shows with `@ts-expect-error` what it refuses.

/** The WebSocket subprotocol the client speaks: "groupcast.v1". */
export const PROTOCOL: "groupcast.v1";

/** A message's place in its group: `offset` counts within one `epoch`. */
export interface Position {
  epoch: string;
  offset: number;
}

/** Reconnect delays in ms: exponential from `min`, capped at `max`. */
export interface Backoff {
  min?: number;
  max?: number;
}

/** What the client needs of a WebSocket (the WHATWG one, or a fake). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket class: `new (url, ["groupcast.v1"])`. */
export type WebSocketClass = new (url: string, protocols: string[]) => WebSocketLike;

export interface ClientOptions {
  /** The group to join, e.g. "task/42"; without it the URL is the full endpoint (`wss://host/ws/task/42`). */
  group?: string;
  /** A client token (JWT), sent as `?token=`. */
  token?: string;
  /** Called before every reconnect (and before the first connect without `token`); returns the current token. */
  getToken?: () => string | Promise<string>;
  /** On the first connect, replay the last N retained messages first. */
  history?: number;
  /** Resume from here on the first connect (e.g. saved before a page reload). */
  position?: Position;
  /** Ask for the group's members (`?presence=1`) on every (re)connect: see members(). */
  presence?: boolean;
  backoff?: Backoff;
  /** Consecutive failed attempts before giving up (Infinity). */
  maxRetries?: number;
  /** ms to wait for the socket to open (10000). */
  connectTimeout?: number;
  /** The WebSocket class (globalThis.WebSocket). */
  WebSocket?: WebSocketClass;
  /** () => [0, 1), Math.random by default. */
  random?: () => number;
  /** The fetch function (globalThis.fetch), used only to learn why a presence connection was refused. */
  fetch?: (url: string, init?: { signal?: AbortSignal; cache?: string }) => Promise<{
    status: number;
    json(): Promise<any>;
  }>;
}

/** What `subscribe` may ask for the group: a backlog, or a resume. */
export interface SubscribeOptions {
  /** Replay the last N retained messages of the group first. */
  history?: number;
  /** Resume after this position (wins over `history`). */
  position?: Position;
  /** Ask for the group's members with each (re)subscribe: see members(). */
  presence?: boolean;
}

/** The server's first frame on a connection. */
export interface Welcome {
  type: "welcome";
  session: string;
  node: string;
  group: string;
  /** null when the group keeps no history (`history: false`). */
  epoch: string | null;
  /** The group's top offset when joined; null without history. */
  offset: number | null;
  history: boolean;
  /** Only when a resume was asked: whether every missed message follows. */
  recovered?: boolean;
}

/** The server's answer to a `subscribe`: a welcome for one more group. */
export interface Subscribed {
  type: "subscribed";
  id: number;
  group: string;
  epoch: string | null;
  offset: number | null;
  history: boolean;
  recovered?: boolean;
}

interface MessageFields {
  /** null for groups without history and plain `PUBLISH` messages. */
  offset: number | null;
  epoch: string | null;
  /** The group the server named (every server with subscriptions does). */
  group?: string;
}

/** A delivered message: text, or bytes when `binary`. */
export type GroupcastMessage =
  | (MessageFields & { binary: false; data: string })
  | (MessageFields & { binary: true; data: Uint8Array });

/** Continuity was lost in a group: refetch what you show of it. */
export interface Reset {
  reason: string;
  epoch?: string | null;
  offset?: number | null;
  group?: string | null;
}

/** The codes of the server's `error` answers, and of this client's own refusals. */
export type RequestErrorCode =
  | "no_presence"
  | "presence_not_allowed"
  | "presence_unavailable"
  | "bad_request"
  | "bad_group_name"
  | "bad_query"
  | "already_subscribed"
  | "too_many_groups"
  | "group_not_allowed"
  | "node_full"
  | "not_subscribed"
  | "unsupported"
  | "unsubscribed"
  | "closed"
  | (string & {});

/** A refused request, as the `error` event reports it. */
export interface RequestError {
  code: RequestErrorCode;
  reason: string;
  group: string | null;
  id: number | null;
}

/** One connection in a group, as members() lists it. */
export interface Member {
  session: string;
  /** The node the connection is on. */
  node: string | null;
  /** The token's subject; null for anonymous connections. */
  sub: string | null;
  /** ms since the epoch: from the snapshot, or when this client saw the `join`. */
  connectedAt: number | null;
  /** The keys the server shows (`--presence-keys`); only snapshots carry them. */
  keys: Record<string, unknown>;
}

/** A distinct user among the members, with its connection count. */
export interface User {
  sub: string;
  connections: number;
}

/** A group's presence: the `members` event, and presenceOf(). */
export interface Presence {
  group: string;
  members: Member[];
  /** The whole group's connections and distinct users (the server's figures, whole even when truncated). */
  count: number;
  users: number;
  /** The server listed only its first 1,000 members: the list is partial. */
  truncated: boolean;
  /** The group's position the list stands at. */
  seq: number;
}

/** A `join` or `leave` frame's fields. */
export interface MemberChange {
  group: string;
  session: string;
  /** Absent for anonymous connections. */
  sub?: string;
  node: string;
  seq: number;
}

/** A `user_joined` or `user_left` frame's fields. */
export interface UserChange {
  group: string;
  sub: string;
  /** The node that reported it. */
  node: string;
  seq: number;
}

export interface Closed {
  code: number;
  reason: string;
  /** false: final (close(), 1008, 4003, 4500-4999 such as 4509 "disconnected: do not reconnect", 4001 without getToken, maxRetries, no group left). */
  reconnect: boolean;
}

/** Every event and its detail: `client.on(name, (detail) => ...)`. */
export interface GroupcastEvents {
  connecting: { url: string; attempt: number };
  open: { url: string; protocol: string };
  welcome: Welcome;
  subscribed: Subscribed;
  unsubscribed: { group: string | null };
  error: RequestError;
  message: GroupcastMessage;
  reset: Reset;
  refreshed: { exp: number };
  closed: Closed;
  reconnecting: { delay: number; attempt: number; url: string; code: number };
  members: Presence;
  join: MemberChange;
  leave: MemberChange;
  user_joined: UserChange;
  user_left: UserChange;
}

export type ClientState = "connecting" | "open" | "reconnecting" | "idle" | "closed";

export interface Stats {
  duplicates: number;
  gaps: number;
  resets: number;
  reconnects: number;
}

/** A refused subscribe or unsubscribe (a rejected promise). */
export class GroupcastError extends Error {
  constructor(code: RequestErrorCode, reason: string, group?: string | null);
  readonly name: "GroupcastError";
  code: RequestErrorCode;
  group: string | null;
}

export class GroupcastClient {
  /** `url`: a server (`wss://host`, `/`), or a failover list of them. */
  constructor(url: string | URL | ReadonlyArray<string | URL>, options?: ClientOptions);

  readonly urls: string[];
  readonly group: string | null;
  token: string | null;
  state: ClientState;
  /** The last welcome frame. */
  welcome: Welcome | null;
  stats: Stats;
  /** The last position seen in the first group, or null. */
  readonly position: Position | null;
  /** The groups this client is in (or joining), in the order asked for. */
  readonly groups: string[];

  /** The last position seen in `group`, or null. */
  positionOf(group: string): Position | null;

  /** The members of `group` (the first group by default); null without presence. */
  members(group?: string): Member[] | null;
  /** The distinct users among members(group), anonymous ones left out; null without presence. */
  users(group?: string): User[] | null;
  /** The group's presence as the last `members` event said, kept up to date; null without presence. */
  presenceOf(group?: string): Presence | null;

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof GroupcastEvents>(name: K, fn: (detail: GroupcastEvents[K]) => void): () => void;
  off<K extends keyof GroupcastEvents>(name: K, fn: (detail: GroupcastEvents[K]) => void): void;

  /** Sends to the group; false (nothing sent, nothing queued) while not connected. */
  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): boolean;
  /** Replaces the token; whether it could be sent now. */
  refresh(token: string): boolean;
  /** Joins one more group on this connection; resolves with the server's answer. */
  subscribe(group: string, options?: SubscribeOptions): Promise<Subscribed>;
  /** Leaves a group; resolves once the server confirmed (at once when not connected). */
  unsubscribe(group: string): Promise<void>;
  /** Closes for good. */
  close(): void;
}

/** `new GroupcastClient(url, options)`. */
export function connect(
  url: string | URL | ReadonlyArray<string | URL>,
  options?: ClientOptions,
): GroupcastClient;

/** The delay before reconnect attempt `attempt` (0 first): full jitter. */
export function backoffDelay(attempt: number, backoff?: Backoff, random?: () => number): number;

/** The WebSocket URL for a server `base`, a `group` (or none) and query `params` (null values left out). */
export function endpoint(
  base: string | URL,
  group?: string | null,
  params?: Record<string, string | number | null | undefined>,
): string;
