// Test support (HOSTD_PYTHON picks the interpreter, HOSTD_REPO the checkout hostd runs from):
// a real hostd process, a raw control-socket client and a loopback HTTP server.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const NODE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = resolve(NODE_DIR, "..", "..");

export function python() {
  if (process.env.HOSTD_PYTHON) return process.env.HOSTD_PYTHON;
  const venv = join(REPO, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** Resolves when `predicate()` holds, re-checked at each `changed()` call; rejects after `ms`. */
export function waitUntil(predicate, subscribe, ms = 10000, what = "condition") {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const check = () => {
      if (!predicate()) return;
      clearTimeout(timer);
      unsubscribe();
      resolvePromise();
    };
    const unsubscribe = subscribe(check);
    check();
  });
}

/** `hostd serve` on a Unix socket with a control socket; `args` are extra options. */
export async function startHostd(...args) {
  const dir = mkdtempSync(join(tmpdir().length < 40 ? tmpdir() : "/tmp", "hostd-node-"));
  const socket = join(dir, "hostd.sock");
  const control = join(dir, "control.sock");
  const argv = ["-m", "hostd", "serve", "--log-level", "debug", "--listen", `unix:${socket}`, "--control", `unix:${control}`];
  if (!args.some((a) => a.startsWith("--auth-dir"))) argv.push("--auth-dir", "");
  if (!args.some((a) => a.startsWith("--model-base-url"))) argv.push("--model-base-url", "");
  const env = { ...process.env };
  delete env.HOSTD_CONFIG;
  delete env.HOSTD_SOCKET;
  return launch(python(), [...argv, ...args], { dir, socket, control, env });
}

/** Start a hostd command line and resolve once it logs `ready`. */
export async function launch(cmd, argv, { dir, socket, control, env, ready = '"hostd ready"' }) {
  const proc = spawn(cmd, argv, { cwd: process.env.HOSTD_REPO || REPO, env, stdio: ["ignore", "ignore", "pipe"] });
  const lines = [];
  const listeners = new Set();
  let partial = "";
  let exited = false;
  const notify = () => {
    for (const fn of [...listeners]) fn();
  };
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (text) => {
    const parts = (partial + text).split("\n");
    partial = parts.pop();
    lines.push(...parts);
    notify();
  });
  const exit = new Promise((r) => proc.on("exit", (code, sig) => r(code ?? 128)));
  exit.then(() => {
    exited = true;
    notify();
  });
  const subscribe = (fn) => {
    listeners.add(fn);
    return () => listeners.delete(fn);
  };
  const hostd = {
    proc,
    dir,
    socket,
    control,
    lines,
    exit,
    subscribe,
    address: `unix:${socket}`,
    /** The first log line containing `text` (waits for it). */
    async waitLog(text, ms = 10000) {
      await waitUntil(() => exited || lines.some((l) => l.includes(text)), subscribe, ms, `log ${text}`);
      const line = lines.find((l) => l.includes(text));
      if (!line) throw new Error(`hostd exited before logging ${text}:\n${lines.join("\n")}`);
      return line;
    },
    async stop() {
      if (!exited) proc.kill("SIGTERM");
      const code = await exit;
      rmSync(dir, { recursive: true, force: true });
      return code;
    },
  };
  try {
    await hostd.waitLog(ready, 20000);
  } catch (err) {
    proc.kill("SIGKILL");
    await exit;
    throw new Error(`hostd did not start: ${err.message}\n${lines.join("\n")}`);
  }
  return hostd;
}

/** A raw JSON-RPC client (its own framing, independent of the SDK's), for the control socket. */
export async function rawClient(path) {
  const socket = net.createConnection({ path });
  await new Promise((r, j) => {
    socket.once("connect", r);
    socket.once("error", j);
  });
  const pending = new Map();
  let nextId = 1;
  let buffered = "";
  socket.setEncoding("utf8");
  socket.on("data", (text) => {
    buffered += text;
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (!line.trim()) continue;
      const msg = JSON.parse(line);
      const waiter = pending.get(msg.id);
      if (waiter) {
        pending.delete(msg.id);
        waiter(msg);
      }
    }
  });
  const send = (msg) => socket.write(JSON.stringify(msg) + "\n");
  return {
    /** Resolves to the whole answer message ({result} or {error}). */
    request(method, params = {}, id = nextId++) {
      const answer = new Promise((r) => pending.set(id, r));
      send({ jsonrpc: "2.0", id, method, params });
      return { id, answer };
    },
    async call(method, params = {}) {
      const msg = await this.request(method, params).answer;
      if (msg.error) throw Object.assign(new Error(msg.error.message), { code: msg.error.code, data: msg.error.data });
      return msg.result;
    },
    notify(method, params = {}) {
      send({ jsonrpc: "2.0", method, params });
    },
    close() {
      socket.destroy();
    },
  };
}

/** Read an emit stream through the control socket until done; returns every read. */
export async function readAll(ctl, streamId) {
  const reads = [];
  for (;;) {
    const r = await ctl.call("hostd.stream.read", { stream_id: streamId });
    reads.push(r);
    if (r.done) return reads;
  }
}

/** A loopback HTTP server; `routes[path](req, res, body)` answer; records requests. */
export async function startUpstream(routes) {
  const requests = [];
  const listeners = new Set();
  const notify = () => {
    for (const fn of [...listeners]) fn();
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const record = { method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks), closed: false };
      requests.push(record);
      res.on("close", () => {
        record.closed = true;
        record.finished = res.writableFinished;
        notify();
      });
      notify();
      const route = routes[req.url.split("?")[0]];
      if (route) route(req, res, record);
      else res.writeHead(404).end("not found");
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    subscribe(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    stop() {
      server.closeAllConnections();
      return new Promise((r) => server.close(r));
    },
  };
}
