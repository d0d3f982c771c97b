// An example Node.js plugin: newline-delimited JSON-RPC 2.0 over hostd's Unix socket.
// Usage: HOSTD_SOCKET=unix:/path/hostd.sock node fetch.mjs http://127.0.0.1:PORT
import net from "node:net";

const address = (process.env.HOSTD_SOCKET || "").replace(/^unix:/, "");
const baseUrl = process.argv[2];

function connect(path) {
  const socket = net.createConnection(path);
  const pending = new Map();
  let nextId = 1;
  let buffered = "";
  socket.setEncoding("utf8");
  socket.on("data", (data) => {
    buffered += data;
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (!line.trim()) continue;
      const msg = JSON.parse(line);
      const waiter = pending.get(msg.id);
      if (!waiter) continue;
      pending.delete(msg.id);
      if (msg.error) waiter.reject(Object.assign(new Error(msg.error.message), msg.error));
      else waiter.resolve(msg.result);
    }
  });
  const call = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      socket.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
    });
  return { call, close: () => socket.end() };
}

const host = connect(address);
const b64 = (text) => Buffer.from(text, "base64").toString("utf8");
try {
  const hello = await host.call("hostd.hello", { plugin_id: "node-fetch", schema_version: 3 });
  console.log(`connected as session ${hello.session}`);
  await host.call("host.log", { level: "info", message: "node plugin says hi", fields: { api_key: "hidden" } });
  const page = await host.call("host.http.do", { url: `${baseUrl}/hello` });
  console.log(`host.http.do -> ${page.StatusCode} ${JSON.stringify(b64(page.Body))}`);
  const opened = await host.call("host.http.do_stream", { url: `${baseUrl}/events` });
  for (;;) {
    const piece = await host.call("host.http.stream_read", { stream_id: opened.stream_id });
    if (piece.done) break;
    console.log(`stream_read  -> ${JSON.stringify(b64(piece.payload).trim())}`);
  }
  try {
    await host.call("host.http.stream_read", { stream_id: opened.stream_id });
  } catch (err) {
    console.log(`after done   -> error ${err.code}: ${err.message}`);
  }
} finally {
  host.close();
}
