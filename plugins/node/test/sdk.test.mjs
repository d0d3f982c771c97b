// The SDK against a real hostd (python -m hostd) over its Unix sockets, with a loopback upstream.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { once } from "node:events";

import { AbortError, Disconnected, ErrorCodes, Plugin, RpcError, StreamError } from "hostd-plugin";
import { rawClient, readAll, startHostd, startUpstream, waitUntil } from "./support.mjs";

let hostd;
let ctl;
let upstream;
const releases = new Set(); // held upstream answers, released at the end

before(async () => {
  hostd = await startHostd();
  ctl = await rawClient(hostd.control);
  upstream = await startUpstream({
    "/hello": (req, res) => res.end("hello from 127!"),
    "/echo": (req, res, record) => res.writeHead(200, { "Content-Type": "application/octet-stream", "X-Seen": req.headers["x-multi"] ?? "" }).end(record.body),
    "/hold": (req, res) => {
      res.writeHead(200);
      res.write("first piece");
      releases.add(() => res.end());
    },
    "/never": (req, res) => {
      releases.add(() => res.end());
    },
    "/big": (req, res) => {
      const size = Number(new URL(req.url, "http://x").searchParams.get("size"));
      res.writeHead(200, { "Content-Length": String(size) });
      res.end(Buffer.alloc(size, 0x61));
    },
  });
});

after(async () => {
  for (const release of releases) release();
  ctl?.close();
  await upstream?.stop();
  await hostd?.stop();
});

/** Start a plugin on hostd's socket; resolves once it said hello. */
async function start(id, setup = () => {}) {
  const plugin = new Plugin(id, { address: hostd.address });
  setup(plugin);
  let ready;
  const isReady = new Promise((r) => {
    ready = r;
  });
  const running = plugin.run({ onReady: ready });
  await Promise.race([isReady, running]);
  return { plugin, running };
}

const invoke = (plugin_id, method, params = {}, stream = false) =>
  ctl.call("hostd.invoke", { plugin_id, method, params, stream });

const requestTo = (path) => upstream.requests.find((r) => r.url.startsWith(path));
const until = (predicate, what) => waitUntil(predicate, (fn) => upstream.subscribe(fn), 10000, what);

describe("session", () => {
  test("run says hostd.hello with the plugin id and schema_version 3", async () => {
    const { plugin, running } = await start("node-sdk-hello");
    assert.equal(plugin.hello.server, "hostd");
    assert.equal(plugin.hello.schema_version, 3);
    const status = await ctl.call("hostd.status");
    const mine = status.sessions.find((s) => s.session === plugin.hello.session);
    assert.equal(mine.plugin_id, "node-sdk-hello");
    plugin.stop();
    await running;
    assert.equal(plugin.connected, false);
    await assert.rejects(plugin.call("host.log", { message: "x" }), Disconnected);
  });

  test("an unsupported address is a clear error", async () => {
    await assert.rejects(new Plugin("x").run({ address: "tcp:1" }), /expected stdio or unix:PATH/);
  });
});

describe("host calls", () => {
  test("http.do takes and gives Buffers, headers as lists", async () => {
    const { plugin, running } = await start("node-sdk-http");
    const bytes = Buffer.from([0, 1, 2, 250, 255, 10, 13]);
    const r = await plugin.http.do({ method: "POST", url: `${upstream.url}/echo`, headers: { "X-Multi": ["a"] }, body: bytes });
    assert.equal(r.statusCode, 200);
    assert.ok(Buffer.isBuffer(r.body));
    assert.deepEqual(r.body, bytes);
    assert.deepEqual(r.headers["X-Seen"], ["a"]);
    assert.deepEqual(requestTo("/echo").body, bytes);
    plugin.stop();
    await running;
  });

  test("many concurrent calls are answered by id", async () => {
    const { plugin, running } = await start("node-sdk-concurrent");
    const results = await Promise.all(
      Array.from({ length: 64 }, (_, i) => plugin.http.do({ method: "POST", url: `${upstream.url}/echo`, body: `call ${i}` })),
    );
    assert.deepEqual(
      results.map((r) => r.body.toString()),
      Array.from({ length: 64 }, (_, i) => `call ${i}`),
    );
    plugin.stop();
    await running;
  });

  test("a failed call rejects with RpcError carrying code and data", async () => {
    const { plugin, running } = await start("node-sdk-errors");
    await assert.rejects(plugin.http.streamRead({ stream_id: "nope" }), (e) => {
      assert.ok(e instanceof RpcError);
      assert.equal(e.code, -32000);
      assert.match(e.message, /http stream nope is not open/);
      assert.equal(e.data.code, "host_call_failed");
      return true;
    });
    await assert.rejects(plugin.call("host.nope"), (e) => e.code === -32601 && e.message === "unsupported host callback host.nope");
    plugin.stop();
    await running;
  });

  test("aborting a call sends $/cancelRequest: hostd drops the upstream request", async () => {
    const { plugin, running } = await start("node-sdk-abort");
    const controller = new AbortController();
    const call = plugin.http.do({ url: `${upstream.url}/never` }, { signal: controller.signal });
    await until(() => requestTo("/never"), "the upstream request");
    const reason = new Error("user gave up");
    controller.abort(reason);
    await assert.rejects(call, (e) => e instanceof AbortError && e.name === "AbortError" && e.cause === reason);
    await until(() => requestTo("/never").closed, "hostd to drop the upstream request");
    assert.equal(requestTo("/never").finished, false);
    // The session goes on.
    assert.equal((await plugin.http.do({ url: `${upstream.url}/hello` })).body.toString(), "hello from 127!");
    plugin.stop();
    await running;
  });

  test("an already aborted signal rejects without sending", async () => {
    const { plugin, running } = await start("node-sdk-preabort");
    await assert.rejects(plugin.log({ message: "never" }, { signal: AbortSignal.abort() }), AbortError);
    plugin.stop();
    await running;
  });

  test("breaking out of a stream closes it", async () => {
    const { plugin, running } = await start("node-sdk-break");
    const stream = await plugin.http.doStream({ url: `${upstream.url}/hold` });
    assert.equal(stream.statusCode, 200);
    const seen = [];
    for await (const piece of stream) {
      seen.push(piece.toString());
      break;
    }
    assert.deepEqual(seen, ["first piece"]);
    assert.equal(stream.finished, true);
    await until(() => requestTo("/hold").closed, "hostd to close the upstream");
    await assert.rejects(plugin.http.streamRead({ stream_id: stream.streamId }), /is not open/);
    plugin.stop();
    await running;
  });

  test("an error inside the loop closes the stream and propagates", async () => {
    const { plugin, running } = await start("node-sdk-throw");
    const stream = await plugin.http.doStream({ url: `${upstream.url}/hold?throw` });
    await assert.rejects(
      (async () => {
        for await (const _ of stream) throw new Error("consumer failed");
      })(),
      /consumer failed/,
    );
    await assert.rejects(plugin.http.streamRead({ stream_id: stream.streamId }), /is not open/);
    plugin.stop();
    await running;
  });

  test("aborting a stream read cancels it and closes the stream", async () => {
    const { plugin, running } = await start("node-sdk-stream-abort");
    const controller = new AbortController();
    const stream = await plugin.http.doStream({ url: `${upstream.url}/hold?abort` }, { signal: controller.signal });
    const consumed = (async () => {
      const seen = [];
      for await (const piece of stream) {
        seen.push(piece.toString());
        if (seen.length === 1) setImmediate(() => controller.abort()); // while the next read waits
      }
      return seen;
    })();
    await assert.rejects(consumed, AbortError);
    await until(() => requestTo("/hold?abort").closed, "hostd to close the upstream");
    assert.equal(stream.finished, true);
    plugin.stop();
    await running;
  });

  test("answers far longer than hostd's request limit are read whole", async () => {
    const { plugin, running } = await start("node-sdk-long");
    const size = 24 * 1024 * 1024; // a 32 MiB answer line
    const r = await plugin.http.do({ url: `${upstream.url}/big?size=${size}` });
    assert.equal(r.body.length, size);
    assert.ok(r.body.every((b) => b === 0x61));
    plugin.stop();
    await running;
  });
});

describe("host → plugin calls", () => {
  test("handlers answer; unknown methods are -32601; errors -32000 or the RpcError's", async () => {
    const { plugin, running } = await start("node-sdk-handlers", (p) => {
      p.handle("demo.echo", async (params) => ({ echo: params.text }));
      p.handle("demo.fail", async () => {
        throw new Error("it broke");
      });
      p.handle("demo.typed", async () => {
        throw new RpcError(-32001, "too many", { code: "limit_exceeded" });
      });
      p.handle("demo.undefined", async () => undefined);
    });
    assert.deepEqual((await invoke("node-sdk-handlers", "demo.echo", { text: "hi" })).result, { echo: "hi" });
    assert.deepEqual((await invoke("node-sdk-handlers", "demo.undefined")).result, {});
    await assert.rejects(invoke("node-sdk-handlers", "demo.missing"), (e) => e.code === -32601 && e.message === "method not found: demo.missing");
    await assert.rejects(invoke("node-sdk-handlers", "demo.fail"), (e) => e.code === -32000 && e.message === "it broke");
    await assert.rejects(invoke("node-sdk-handlers", "demo.typed"), (e) => e.code === -32001 && e.message === "too many" && e.data.code === "limit_exceeded");
    plugin.stop();
    await running;
  });

  test("hostd's $/cancelRequest aborts the handler's signal", async () => {
    let aborted;
    const sawAbort = new Promise((r) => {
      aborted = r;
    });
    let started;
    const isStarted = new Promise((r) => {
      started = r;
    });
    const { plugin, running } = await start("node-sdk-cancelled", (p) => {
      p.handle("demo.slow", async (params, { signal }) => {
        started();
        await once(signal, "abort");
        aborted(signal.reason);
        return { late: true };
      });
    });
    const { id, answer } = ctl.request("hostd.invoke", { plugin_id: "node-sdk-cancelled", method: "demo.slow", params: {} });
    await isStarted;
    ctl.notify("$/cancelRequest", { id });
    const reason = await sawAbort;
    assert.ok(reason instanceof AbortError);
    assert.equal((await answer).error.code, -32800);
    plugin.stop();
    await running;
  });

  test("the session ending aborts handlers' signals and background tasks", async () => {
    let started;
    const isStarted = new Promise((r) => {
      started = r;
    });
    let handlerSignal;
    const { plugin, running } = await start("node-sdk-ending", (p) => {
      p.handle("demo.slow", async (params, { signal }) => {
        handlerSignal = signal;
        started();
        await once(signal, "abort");
        return {};
      });
    });
    const background = plugin.spawn(async (signal) => {
      await once(signal, "abort");
      throw signal.reason;
    });
    const pending = invoke("node-sdk-ending", "demo.slow").catch((e) => e);
    await isStarted;
    plugin.stop();
    await running;
    assert.equal(handlerSignal.aborted, true);
    assert.ok(handlerSignal.reason instanceof Disconnected);
    assert.equal(plugin.signal.aborted, true);
    await background; // resolves: a Disconnected after the session ended is not a failure
    const err = await pending;
    assert.equal(err.code, -32000);
    assert.match(err.message, /plugin disconnected/);
  });

  test("an executor streams what its producer emits, then closes", async () => {
    const { plugin, running } = await start("node-sdk-executor", (p) => {
      p.executor("executor.execute_stream", async (params, emitter) => {
        for (let i = 0; i < 20; i++) await emitter.emit(`chunk ${i}`);
      });
    });
    const answer = await invoke("node-sdk-executor", "executor.execute_stream", {}, true);
    assert.deepEqual(answer.result, {});
    const reads = await readAll(ctl, answer.stream_id);
    assert.deepEqual(
      reads.filter((r) => r.payload).map((r) => Buffer.from(r.payload, "base64").toString()),
      Array.from({ length: 20 }, (_, i) => `chunk ${i}`),
    );
    assert.deepEqual(reads.at(-1), { payload: null, error: "", done: true });
    plugin.stop();
    await running;
  });

  test("a failing producer closes its stream with the error's text", async () => {
    const { plugin, running } = await start("node-sdk-failing", (p) => {
      p.executor("executor.execute_stream", async (params, emitter) => {
        await emitter.emit("before the failure");
        throw new Error("producer exploded");
      });
    });
    const answer = await invoke("node-sdk-failing", "executor.execute_stream", {}, true);
    const reads = await readAll(ctl, answer.stream_id);
    assert.equal(Buffer.from(reads[0].payload, "base64").toString(), "before the failure");
    assert.equal(reads.at(-1).error, "producer exploded");
    assert.equal(reads.at(-1).done, true);
    plugin.stop();
    await running;
  });

  test("an executor invoked without a stream is an invalid-params error", async () => {
    const { plugin, running } = await start("node-sdk-nostream", (p) => p.executor("executor.execute_stream", async () => {}));
    await assert.rejects(invoke("node-sdk-nostream", "executor.execute_stream", {}, false), (e) => e.code === -32602);
    plugin.stop();
    await running;
  });
});

describe("stream errors", () => {
  test("a model stream error surfaces as StreamError", () => {
    const e = new StreamError("upstream failed", "s1");
    assert.equal(e.name, "StreamError");
    assert.equal(e.streamId, "s1");
  });
});
