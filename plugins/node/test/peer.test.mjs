// The SDK's own side of the wire, seen from a scripted peer on a real Unix socket: the exact
// lines it writes (the -32800 answer to a cancelled request, a refused hello) and lines longer
// than any real hostd answer. Everything else is tested against a real hostd (sdk.test.mjs).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { LineSplitter, Plugin, RpcError } from "hostd-plugin";

let dir;
before(() => {
  dir = mkdtempSync("/tmp/hostd-node-peer-");
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A one-connection peer: `lines()` yields each JSON message the plugin sends. */
async function peer(name) {
  const path = join(dir, `${name}.sock`);
  const server = net.createServer();
  await new Promise((r) => server.listen(path, r));
  const accepted = new Promise((r) => server.once("connection", r));
  const queue = [];
  const waiters = [];
  let ended = false;
  const conn = (async () => {
    const socket = await accepted;
    const splitter = new LineSplitter((line) => {
      const msg = JSON.parse(line.toString());
      const w = waiters.shift();
      if (w) w(msg);
      else queue.push(msg);
    });
    socket.on("data", (c) => splitter.push(c));
    const end = () => {
      ended = true;
      for (const w of waiters.splice(0)) w(null);
    };
    socket.on("end", end);
    socket.on("error", end); // the plugin may reset the connection as it stops

    return socket;
  })();
  return {
    address: `unix:${path}`,
    next: () => (queue.length ? Promise.resolve(queue.shift()) : ended ? Promise.resolve(null) : new Promise((r) => waiters.push(r))),
    async send(msg) {
      (await conn).write(JSON.stringify(msg) + "\n");
    },
    async sendRaw(data) {
      const socket = await conn;
      if (!socket.write(data)) await new Promise((r) => socket.once("drain", r));
    },
    close: async () => {
      (await conn).destroy();
      server.close();
    },
  };
}

async function helloed(p) {
  const hello = await p.next();
  assert.equal(hello.method, "hostd.hello");
  await p.send({ jsonrpc: "2.0", id: hello.id, result: { server: "peer", schema_version: 3, session: "s" } });
  return hello;
}

test("hello comes first, with the plugin id and schema_version 3", async () => {
  const p = await peer("hello");
  const plugin = new Plugin("node-peer-hello", { address: p.address });
  const running = plugin.run();
  const hello = await helloed(p);
  assert.deepEqual(hello.params, { plugin_id: "node-peer-hello", schema_version: 3 });
  plugin.stop();
  await running;
  assert.equal(await p.next(), null); // the plugin closed its side
  await p.close();
});

test("a refused hello rejects run() and closes the connection", async () => {
  const p = await peer("refused");
  const running = new Plugin("node-peer-refused", { address: p.address }).run();
  const hello = await p.next();
  await p.send({ jsonrpc: "2.0", id: hello.id, error: { code: -32002, message: "plugin id node-peer-refused is already connected" } });
  await assert.rejects(running, (e) => e instanceof RpcError && e.code === -32002 && /already connected/.test(e.message));
  assert.equal(await p.next(), null);
  await p.close();
});

test("a cancelled request is answered -32800 even when its handler returns", async () => {
  const p = await peer("cancel");
  const plugin = new Plugin("node-peer-cancel", { address: p.address });
  let reason;
  plugin.handle("demo.slow", (params, { signal }) => {
    return new Promise((resolve) => {
      signal.addEventListener("abort", () => {
        reason = signal.reason;
        resolve({ late: true });
      });
    });
  });
  const running = plugin.run();
  await helloed(p);
  await p.send({ jsonrpc: "2.0", id: "hostd-7", method: "demo.slow", params: {} });
  await p.send({ jsonrpc: "2.0", method: "$/cancelRequest", params: { id: "hostd-7" } });
  const answer = await p.next();
  assert.deepEqual(answer, { jsonrpc: "2.0", id: "hostd-7", error: { code: -32800, message: "request cancelled" } });
  assert.equal(reason.name, "AbortError");
  // A cancel for a numeric id 7 does not touch a string id "7".
  plugin.handle("demo.quick", async () => ({ ok: true }));
  await p.send({ jsonrpc: "2.0", id: 8, method: "demo.quick" });
  assert.deepEqual(await p.next(), { jsonrpc: "2.0", id: 8, result: { ok: true } });
  plugin.stop();
  await running;
  await p.close();
});

test("notifications are served and never answered", async () => {
  const p = await peer("notify");
  const plugin = new Plugin("node-peer-notify", { address: p.address });
  const seen = [];
  plugin.handle("demo.note", async (params) => {
    seen.push(params.n);
  });
  plugin.handle("demo.sentinel", async () => ({ seen: [...seen] }));
  const running = plugin.run();
  await helloed(p);
  await p.send({ jsonrpc: "2.0", method: "demo.note", params: { n: 1 } });
  await p.send({ jsonrpc: "2.0", method: "demo.missing" });
  await p.send({ jsonrpc: "2.0", id: 1, method: "demo.sentinel" });
  assert.deepEqual(await p.next(), { jsonrpc: "2.0", id: 1, result: { seen: [1] } });
  plugin.stop();
  await running;
  await p.close();
});

test("an answer line of more than 128 MiB, in small pieces, is read whole", async () => {
  const p = await peer("long");
  const plugin = new Plugin("node-peer-long", { address: p.address });
  const running = plugin.run();
  await helloed(p);
  const call = plugin.call("host.big");
  const request = await p.next();
  const size = 129 * 1024 * 1024;
  const head = Buffer.from(`{"jsonrpc":"2.0","id":${request.id},"result":{"text":"`);
  const filler = Buffer.alloc(1024 * 1024, 0x62);
  await p.sendRaw(head);
  for (let sent = 0; sent < size; sent += filler.length) await p.sendRaw(filler);
  await p.sendRaw('"}}\r\n');
  const result = await call;
  assert.equal(result.text.length, size);
  assert.equal(result.text.slice(-3), "bbb");
  plugin.stop();
  await running;
  await p.close();
});

test("LineSplitter splits across chunks and drops an over-long line only", () => {
  const lines = [];
  const oversize = [];
  const s = new LineSplitter((l) => lines.push(l.toString()), { maxLineBytes: 8, onOversize: (n) => oversize.push(n) });
  s.push(Buffer.from("ab"));
  s.push(Buffer.from("c\nde\nf"));
  s.push(Buffer.from("0123456789"));
  s.push(Buffer.from("xx\nok\n"));
  s.push(Buffer.from("0123456789\nlast\n"));
  assert.deepEqual(lines, ["abc", "de", "ok", "last"]);
  assert.equal(oversize.length, 2);
});
