// hostd-plugin: the Node SDK for hostd plugins. ES module, no dependencies, Node 20+.
//
// A plugin is one JSON-RPC 2.0 session with hostd (newline-delimited JSON): it calls hostd's
// host.* methods and serves the methods the host side invokes through hostd.invoke. The SDK
// owns the framing (one line reader that accepts lines of hundreds of MiB), answers by id,
// cancellation in both directions (AbortSignal <-> $/cancelRequest), base64 at the edge
// (Buffers in and out) and hostd.hello. Types are in index.d.ts; the reference is README.md.

import net from "node:net";
import { Buffer } from "node:buffer";

/** The hostd.hello schema version this SDK speaks (PROTOCOL §4). */
export const SCHEMA_VERSION = 3;

/** The longest line the reader accepts by default. hostd's answers can be ~86 MiB for a 64 MiB body. */
export const MAX_LINE_BYTES = 256 * 1024 * 1024;

/** JSON-RPC error codes hostd uses (PROTOCOL §2). */
export const ErrorCodes = Object.freeze({
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  HOST_CALL_FAILED: -32000,
  LIMIT_EXCEEDED: -32001,
  FORBIDDEN: -32002,
  REQUEST_CANCELLED: -32800,
});

// Errors -----------------------------------------------------------------------------------

/** A JSON-RPC error: what a failed call rejects with, or what a handler throws to choose its error. */
export class RpcError extends Error {
  constructor(code, message, data = undefined) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    this.data = data;
  }

  static fromError(error) {
    const e = error && typeof error === "object" ? error : {};
    const code = Number.isInteger(e.code) ? e.code : ErrorCodes.HOST_CALL_FAILED;
    return new RpcError(code, typeof e.message === "string" ? e.message : String(e.message ?? ""), e.data);
  }

  toError() {
    const error = { code: this.code, message: this.message };
    if (this.data !== undefined) error.data = this.data;
    return error;
  }
}

/** A call or read given up because its AbortSignal fired; `cause` is the signal's reason. */
export class AbortError extends Error {
  constructor(message = "The operation was aborted", options = undefined) {
    super(message, options);
    this.name = "AbortError";
    this.code = "ABORT_ERR";
  }
}

/** The session with hostd is over (hostd closed the connection, or the plugin stopped). */
export class Disconnected extends Error {
  constructor(message = "not connected to hostd") {
    super(message);
    this.name = "Disconnected";
  }
}

/** A stream ended with an error (`{"error": "...", "done": true}`); the stream is gone. */
export class StreamError extends Error {
  constructor(message, streamId) {
    super(message);
    this.name = "StreamError";
    this.streamId = streamId;
  }
}

// Line framing -----------------------------------------------------------------------------

/**
 * Splits a byte stream into lines on "\n", scanning only newly arrived bytes. A line longer
 * than `maxLineBytes` is dropped up to its newline and reported through `onOversize`.
 */
export class LineSplitter {
  #parts = [];
  #size = 0;
  #discarding = false;

  constructor(onLine, { maxLineBytes = MAX_LINE_BYTES, onOversize = () => {} } = {}) {
    this.onLine = onLine;
    this.maxLineBytes = maxLineBytes;
    this.onOversize = onOversize;
  }

  push(chunk) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      start = nl + 1;
      if (this.#discarding) {
        this.#discarding = false;
        continue;
      }
      if (this.#size + piece.length > this.maxLineBytes) {
        this.#reset();
        this.onOversize(this.#size + piece.length);
        continue;
      }
      let line = piece;
      if (this.#parts.length > 0) {
        this.#parts.push(piece);
        line = Buffer.concat(this.#parts, this.#size + piece.length);
        this.#reset();
      }
      this.onLine(line);
    }
    if (start >= chunk.length || this.#discarding) return;
    const rest = chunk.subarray(start);
    if (this.#size + rest.length > this.maxLineBytes) {
      this.#reset();
      this.#discarding = true;
      this.onOversize(this.#size + rest.length);
      return;
    }
    this.#parts.push(rest);
    this.#size += rest.length;
  }

  #reset() {
    this.#parts = [];
    this.#size = 0;
  }
}

// Encodings (PROTOCOL §3) ----------------------------------------------------------------

function toBase64(value, field) {
  if (value === undefined || value === null) return undefined;
  if (Buffer.isBuffer(value)) return value.toString("base64");
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64");
  if (typeof value === "string") return Buffer.from(value, "utf8").toString("base64");
  throw new TypeError(`${field} must be a Buffer, a Uint8Array or a string, got ${typeof value}`);
}

function fromBase64(value) {
  return typeof value === "string" && value !== "" ? Buffer.from(value, "base64") : Buffer.alloc(0);
}

function toHeaders(headers, field) {
  if (headers === undefined || headers === null) return undefined;
  if (typeof headers !== "object" || Array.isArray(headers)) {
    throw new TypeError(`${field} must be an object of {name: [values]}`);
  }
  const out = {};
  for (const [name, values] of Object.entries(headers)) {
    if (values === undefined) continue;
    out[name] = Array.isArray(values) ? values.map(String) : [String(values)];
  }
  return out;
}

function withBytes(params, field) {
  const out = { ...params };
  if (field in out) {
    const encoded = toBase64(out[field], field);
    if (encoded === undefined) delete out[field];
    else out[field] = encoded;
  }
  return out;
}

function httpParams(params) {
  const encode = (p) => {
    const out = withBytes(p, "body");
    if ("headers" in out) out.headers = toHeaders(out.headers, "headers");
    return out;
  };
  const out = encode(params ?? {});
  if (out.request && typeof out.request === "object") out.request = encode(out.request);
  return out;
}

function modelParams(params, stream) {
  const out = withBytes(params ?? {}, "body");
  if ("headers" in out) out.headers = toHeaders(out.headers, "headers");
  if ("query" in out) out.query = toHeaders(out.query, "query");
  out.stream = stream;
  return out;
}

function errorText(err) {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

function abortError(signal) {
  const reason = signal?.reason;
  if (reason instanceof AbortError) return reason;
  return new AbortError("The operation was aborted", { cause: reason });
}

function toWireError(err) {
  if (err instanceof RpcError) return err.toError();
  return { code: ErrorCodes.HOST_CALL_FAILED, message: errorText(err) };
}

// Transports --------------------------------------------------------------------------------

let protocolWrite = null;

/**
 * Keep stdout for protocol lines: from here on console.log and process.stdout.write go to
 * stderr (hostd turns the plugin's stderr into log lines). Idempotent; returns the real write.
 */
function protectStdout() {
  if (protocolWrite) return protocolWrite;
  const stdout = process.stdout;
  protocolWrite = stdout.write.bind(stdout);
  stdout.write = (...args) => process.stderr.write(...args);
  return protocolWrite;
}

/** stdin/stdout of a plugin spawned by `hostd run`. */
function openStdio(handlers) {
  const write = protectStdout();
  const input = process.stdin;
  const onData = (chunk) => handlers.onData(chunk);
  const onEnd = () => handlers.onClose();
  input.on("data", onData);
  input.on("end", onEnd);
  input.on("error", onEnd);
  process.stdout.on("error", onEnd);
  return {
    write: (text) => write(text),
    close() {
      input.off("data", onData);
      input.off("end", onEnd);
      input.destroy();
      // Half-close the protocol side so hostd sees EOF.
      try {
        process.stdout.end();
      } catch {
        // a Node that refuses to end process.stdout: hostd sees EOF when the process exits
      }
    },
  };
}

function openUnix(path, handlers) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path });
    const fail = (err) => reject(new Disconnected(`cannot connect to unix:${path}: ${err.message}`));
    socket.once("error", fail);
    socket.once("connect", () => {
      socket.off("error", fail);
      socket.on("data", (chunk) => handlers.onData(chunk));
      socket.on("end", () => handlers.onClose());
      socket.on("close", () => handlers.onClose());
      socket.on("error", () => handlers.onClose());
      resolve({
        write: (text) => socket.write(text),
        close: () => socket.end(() => socket.destroy()),
      });
    });
  });
}

// Streams ------------------------------------------------------------------------------------

/**
 * An open http or model stream (`host.http.do_stream`, `host.model.execute_stream`). Iterate it
 * with `for await` to get each piece as a Buffer; leaving the loop early (break, an exception,
 * an abort) closes the stream. `read()` and `close()` are the step-by-step form.
 */
export class HostStream {
  #plugin;
  #family;
  #signal;
  #finished = false;
  #closing = null;
  #onAbort = null;

  constructor(plugin, family, result, signal) {
    this.#plugin = plugin;
    this.#family = family;
    this.#signal = signal;
    this.streamId = result.stream_id;
    this.statusCode = result.status_code;
    this.headers = result.headers ?? {};
    if (signal) {
      this.#onAbort = () => {
        this.close();
      };
      signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  /** True once the stream ended, failed or was closed. */
  get finished() {
    return this.#finished;
  }

  /** The next piece, or null at the end. Throws StreamError when the stream failed. */
  async read({ signal = this.#signal } = {}) {
    if (this.#finished) return null;
    const piece = await this.#plugin.call(`host.${this.#family}.stream_read`, { stream_id: this.streamId }, { signal });
    if (piece?.done) {
      this.#finish();
      if (piece.error) throw new StreamError(piece.error, this.streamId);
      return null;
    }
    return fromBase64(piece?.payload);
  }

  /** Close the stream (aborts the upstream). Idempotent; never rejects. */
  close() {
    if (this.#closing) return this.#closing;
    if (this.#finished) return Promise.resolve();
    this.#finish();
    this.#closing = this.#plugin
      .call(`host.${this.#family}.stream_close`, { stream_id: this.streamId })
      .then(
        () => undefined,
        () => undefined,
      );
    return this.#closing;
  }

  async *[Symbol.asyncIterator]() {
    let ended = false;
    try {
      for (;;) {
        const piece = await this.read();
        if (piece === null) {
          ended = true;
          return;
        }
        yield piece;
      }
    } finally {
      if (!ended) await this.close();
    }
  }

  #finish() {
    this.#finished = true;
    if (this.#onAbort) this.#signal.removeEventListener("abort", this.#onAbort);
    this.#onAbort = null;
  }
}

/** The writing end of an emit stream, for an executor's producer (`host.stream.*`). */
export class Emitter {
  #plugin;
  #closed = false;

  constructor(plugin, streamId) {
    this.#plugin = plugin;
    this.streamId = streamId;
  }

  get closed() {
    return this.#closed;
  }

  /** `host.stream.emit`: waits while 16 chunks are queued unread. */
  async emit(payload, { error, signal } = {}) {
    await this.#plugin.stream.emit({ stream_id: this.streamId, payload, error }, { signal });
  }

  /** `host.stream.close`, once; with `error` the host side's last read reports it. */
  async close({ error } = {}) {
    if (this.#closed) return;
    this.#closed = true;
    await this.#plugin.stream.close({ stream_id: this.streamId, error });
  }
}

// The plugin --------------------------------------------------------------------------------

/** One plugin session with hostd. */
export class Plugin {
  #handlers = new Map();
  #pending = new Map();
  #serving = new Map();
  #nextId = 1;
  #transport = null;
  #session = null;
  #ended = null;
  #maxLineBytes;

  #address;
  #stopped = false;

  constructor(pluginId, { address = process.env.HOSTD_SOCKET || "stdio", maxLineBytes = MAX_LINE_BYTES } = {}) {
    if (typeof pluginId !== "string" || pluginId.trim() === "") throw new TypeError("a plugin id is required");
    this.pluginId = pluginId;
    this.#address = address;
    // On stdio the protocol owns stdout from the start, so early console.log calls are safe
    // (not under `node --test`, whose runner reads its child's stdout: run() still does it).
    if (address === "stdio" && !process.env.NODE_TEST_CONTEXT) protectStdout();
    this.hello = null;
    this.#maxLineBytes = maxLineBytes;
    const call = (method, params, options) => this.call(method, params, options);

    this.http = {
      do: async (params, options) => {
        const r = await call("host.http.do", httpParams(params), options);
        return { statusCode: r.StatusCode, headers: r.Headers ?? {}, body: fromBase64(r.Body) };
      },
      doStream: async (params, options) => {
        const r = await call("host.http.do_stream", httpParams(params), options);
        return new HostStream(this, "http", r, options?.signal);
      },
      streamRead: async (params, options) => {
        const r = await call("host.http.stream_read", params, options);
        return { payload: r.payload == null ? null : fromBase64(r.payload), error: r.error ?? "", done: r.done === true };
      },
      streamClose: async (params, options) => {
        await call("host.http.stream_close", params, options);
      },
      operationOpen: async (params, options) => {
        const r = await call("host.http.operation_open", params ?? {}, options);
        return r.operation_id;
      },
      cancel: async (params, options) => {
        await call("host.http.cancel", params, options);
      },
    };

    const modelResult = (r) => ({ statusCode: r.status_code, headers: r.headers ?? {}, body: fromBase64(r.body) });
    this.model = {
      execute: async (params, options) =>
        modelResult(await call("host.model.execute", modelParams(params, false), options)),
      executeStream: async (params, options) => {
        const r = await call("host.model.execute_stream", modelParams(params, true), options);
        return new HostStream(this, "model", r, options?.signal);
      },
      streamRead: async (params, options) => {
        const r = await call("host.model.stream_read", params, options);
        return { payload: r.payload == null ? null : fromBase64(r.payload), error: r.error ?? "", done: r.done === true };
      },
      streamClose: async (params, options) => {
        await call("host.model.stream_close", params, options);
      },
    };

    this.auth = {
      list: async (params, options) => (await call("host.auth.list", params ?? {}, options)).files ?? [],
      get: (params, options) => call("host.auth.get", params, options),
      getRuntime: async (params, options) => (await call("host.auth.get_runtime", params, options)).auth,
      save: (params, options) => this.#saveAuth(params, options),
    };

    this.stream = {
      emit: async (params, options) => {
        const p = withBytes(params, "payload");
        if (!p.error) delete p.error;
        await call("host.stream.emit", p, options);
      },
      close: async (params, options) => {
        const p = { ...params };
        if (!p.error) delete p.error;
        await call("host.stream.close", p, options);
      },
    };

    this.affinity = { lookup: (params, options) => call("host.affinity.lookup", params, options) };
    this.routing = { resetCooldown: (params, options) => call("host.routing.reset_cooldown", params, options) };
  }

  /** Aborted when the session ends (hostd went away, or stop()). */
  get signal() {
    return this.#session?.signal ?? AbortSignal.abort(new Disconnected());
  }

  /** True while connected. */
  get connected() {
    return this.#transport !== null;
  }

  /** Serve `method` (a host → plugin call): `handler(params, {signal, id, method, plugin})`. */
  handle(method, handler) {
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    this.#handlers.set(method, handler);
    return this;
  }

  /**
   * Serve a streaming executor method: answers `answer` ({} by default) at once, then runs
   * `producer(params, emitter, {signal})` in the background for `params.stream_id`. When the
   * producer returns the stream is closed; when it throws, closed with the error's text.
   */
  executor(method, producer, { answer = {} } = {}) {
    return this.handle(method, async (params) => {
      const streamId = params?.stream_id;
      if (typeof streamId !== "string" || streamId === "") {
        throw new RpcError(ErrorCodes.INVALID_PARAMS, `${method}: stream_id is required (invoke with stream: true)`);
      }
      // Start after the answer is written: the host side learns the stream id from it.
      setImmediate(() => {
        this.spawn(async (signal) => {
          const emitter = new Emitter(this, streamId);
          try {
            await producer(params, emitter, { signal });
            await emitter.close();
          } catch (err) {
            if (!signal.aborted) console.error(`hostd-plugin: ${method} producer failed:`, err);
            if (!emitter.closed && this.connected) await emitter.close({ error: errorText(err) });
          }
        });
      });
      return answer;
    });
  }

  /** Run `fn(signal)` in the background for as long as the session lasts; failures are logged. */
  spawn(fn) {
    const signal = this.signal;
    return Promise.resolve()
      .then(() => fn(signal))
      .catch((err) => {
        if (signal.aborted && (err instanceof Disconnected || err instanceof AbortError)) return;
        console.error("hostd-plugin: background task failed:", err);
      });
  }

  /**
   * Connect (stdio, or `$HOSTD_SOCKET` = `unix:PATH`), say hostd.hello, call `onReady(plugin)`,
   * and serve until hostd closes the connection or stop() is called.
   */
  async run({ address = this.#address, onReady } = {}) {
    if (this.#transport) throw new Error("the plugin is already running");
    const splitter = new LineSplitter((line) => this.#onLine(line), {
      maxLineBytes: this.#maxLineBytes,
      onOversize: (n) => console.error(`hostd-plugin: dropped a line of more than ${n} bytes`),
    });
    const handlers = { onData: (chunk) => splitter.push(chunk), onClose: () => this.#end(new Disconnected("hostd closed the connection")) };
    this.#session = new AbortController();
    this.#stopped = false;
    let transport;
    if (address === "stdio") transport = openStdio(handlers);
    else if (address.startsWith("unix:")) transport = await openUnix(address.slice(5), handlers);
    else throw new Error(`unsupported address ${JSON.stringify(address)}: expected stdio or unix:PATH`);
    this.#transport = transport;
    const ended = new Promise((resolve) => {
      this.#ended = resolve;
    });
    try {
      this.hello = await this.call("hostd.hello", { plugin_id: this.pluginId, schema_version: SCHEMA_VERSION });
      if (onReady) await onReady(this);
    } catch (err) {
      const stopped = this.#stopped;
      this.stop();
      await ended;
      if (stopped && err instanceof Disconnected) return; // stop() while connecting is a clean end
      throw err;
    }
    await ended;
  }

  /** End the session: pending calls reject with Disconnected, handlers' signals abort, run() resolves. */
  stop() {
    if (this.#transport) this.#stopped = true;
    this.#end(new Disconnected("the plugin stopped"));
  }

  /** Call a hostd method with raw params (byte fields as base64 strings); resolves to its result. */
  call(method, params = {}, { signal } = {}) {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (!this.#transport) return Promise.reject(new Disconnected());
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        if (!this.#pending.delete(id)) return;
        this.notify("$/cancelRequest", { id });
        reject(abortError(signal));
      };
      const entry = {
        resolve,
        reject,
        done: () => signal?.removeEventListener("abort", onAbort),
      };
      this.#pending.set(id, entry);
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        this.#write({ jsonrpc: "2.0", id, method, params: params ?? {} });
      } catch (err) {
        this.#pending.delete(id);
        entry.done();
        reject(err);
      }
    });
  }

  /** Send a notification (no answer). */
  notify(method, params = {}) {
    if (this.#transport) this.#write({ jsonrpc: "2.0", method, params });
  }

  /** `host.log {level, message, fields, host_callback_id}`. */
  async log(params, options) {
    const p = { level: "info", ...params };
    if (!p.host_callback_id) delete p.host_callback_id;
    await this.call("host.log", p, options);
  }

  // Plumbing ---------------------------------------------------------------------------------

  async #saveAuth(params, options) {
    const { json, ...rest } = params ?? {};
    if (typeof json === "string" || Buffer.isBuffer(json)) {
      // Raw JSON text: hostd writes the bytes as received, so embed it without re-encoding.
      const text = Buffer.isBuffer(json) ? json.toString("utf8") : json;
      JSON.parse(text); // a clear error here beats hostd's decode error
      const marker = `\u0000hostd-raw-json-${this.#nextId}\u0000`;
      return this.call("host.auth.save", { ...rest, json: new RawJson(marker, text.replace(/[\r\n]/g, " ")) }, options);
    }
    return this.call("host.auth.save", { ...rest, json }, options);
  }

  #write(message) {
    let raw = null;
    const line = JSON.stringify(message, (key, value) => {
      if (value instanceof RawJson) {
        raw = value;
        return value.marker;
      }
      return value;
    });
    const text = raw === null ? line : line.replace(JSON.stringify(raw.marker), () => raw.text);
    this.#transport.write(text + "\n");
  }

  #onLine(line) {
    let end = line.length;
    if (end > 0 && line[end - 1] === 13) end -= 1;
    const text = line.toString("utf8", 0, end);
    if (text.trim() === "") return;
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      console.error(`hostd-plugin: ignored a line that is not JSON (${end} bytes)`);
      return;
    }
    for (const m of Array.isArray(message) ? message : [message]) {
      if (m && typeof m === "object") this.#dispatch(m);
    }
  }

  #dispatch(message) {
    if (typeof message.method !== "string") {
      const entry = this.#pending.get(message.id);
      if (!entry) return;
      this.#pending.delete(message.id);
      entry.done();
      if (message.error !== undefined) entry.reject(RpcError.fromError(message.error));
      else entry.resolve(message.result);
      return;
    }
    if (message.method === "$/cancelRequest") {
      const serving = this.#serving.get(idKey(message.params?.id));
      if (serving && !serving.controller.signal.aborted) {
        serving.cancelled = true;
        serving.controller.abort(new AbortError("cancelled by hostd ($/cancelRequest)"));
      }
      return;
    }
    this.#serve(message);
  }

  async #serve(message) {
    const { method } = message;
    const hasId = "id" in message;
    const key = idKey(message.id);
    const controller = new AbortController();
    const serving = { controller, cancelled: false };
    const session = this.#session.signal;
    const onEnd = () => controller.abort(session.reason);
    session.addEventListener("abort", onEnd, { once: true });
    if (hasId) this.#serving.set(key, serving);
    let answer;
    try {
      const handler = this.#handlers.get(method);
      if (!handler) throw new RpcError(ErrorCodes.METHOD_NOT_FOUND, `method not found: ${method}`);
      const result = await handler(message.params ?? {}, { signal: controller.signal, id: message.id, method, plugin: this });
      answer = { result: result === undefined ? {} : result };
    } catch (err) {
      if (!(err instanceof RpcError) && !serving.cancelled && !session.aborted) {
        console.error(`hostd-plugin: ${method} failed:`, err);
      }
      answer = { error: toWireError(err) };
    } finally {
      session.removeEventListener("abort", onEnd);
      if (this.#serving.get(key) === serving) this.#serving.delete(key);
    }
    if (serving.cancelled) answer = { error: { code: ErrorCodes.REQUEST_CANCELLED, message: "request cancelled" } };
    if (!hasId || !this.#transport || session.aborted) return;
    try {
      this.#write({ jsonrpc: "2.0", id: message.id, ...answer });
    } catch (err) {
      // A result JSON cannot encode (a BigInt, a cycle): say so instead of leaving hostd waiting.
      this.#write({ jsonrpc: "2.0", id: message.id, error: { code: ErrorCodes.HOST_CALL_FAILED, message: `cannot encode the result of ${method}: ${errorText(err)}` } });
    }
  }

  #end(reason) {
    const transport = this.#transport;
    if (!transport) return;
    this.#transport = null;
    for (const entry of this.#pending.values()) {
      entry.done();
      entry.reject(reason);
    }
    this.#pending.clear();
    this.#session.abort(reason);
    try {
      transport.close();
    } finally {
      this.#ended?.();
    }
  }
}

class RawJson {
  constructor(marker, text) {
    this.marker = marker;
    this.text = text;
  }
}

function idKey(id) {
  return typeof id === "string" ? `s:${id}` : `n:${id}`;
}
