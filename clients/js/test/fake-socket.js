// The WebSocket the JS client's tests drive: the client calls `send` and
// `close`, the test plays the server (`accept`, `frame`, `drop`) and reads
// what was sent. Shared by client.test.js, subscribe.test.js and
// presence.test.js; each adds the welcome and message frames of its kind.
// (Not a test file itself: `node --test` imports it and finds no test.)

import assert from "node:assert/strict";

import { PROTOCOL } from "../groupcast.js";

export class FakeSocket {
  static all = [];

  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.readyState = 0; // CONNECTING
    this.protocol = "";
    this.sent = [];
    this.closedWith = null;
    this.constructor.all.push(this); // the subclass's list, once a test resets it
  }

  // ---- what the client calls
  send(data) {
    assert.equal(this.readyState, 1, "send on a socket that is not open");
    this.sent.push(data);
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // ---- what the test (the "server") does
  accept(protocol = PROTOCOL) {
    this.readyState = 1;
    this.protocol = protocol;
    this.onopen?.({});
  }

  /** A frame from the server: a string or bytes as they are, else JSON. */
  frame(value) {
    const data = typeof value === "string" || value instanceof ArrayBuffer ? value : JSON.stringify(value);
    this.onmessage?.({ data });
  }

  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }

  param(name) {
    return this.url.searchParams.get(name);
  }

  /** The JSON requests the client sent, in order. */
  requests() {
    return this.sent.map((text) => JSON.parse(text));
  }
}
