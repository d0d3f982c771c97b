// A management-style plugin: one management.handle call uses host.log, host.auth.list,
// host.http.do and host.model.execute, each under the host_callback_id hostd gave it.
//
// Under hostd, as the proxy runs a plugin (stdio):
//   hostd run --control unix:/tmp/hostd-ctl.sock --model-base-url http://127.0.0.1:8317 \
//     --auth-dir ~/.cli-proxy-api -- node plugins/node/examples/management.mjs
// or against a running `hostd serve --listen unix:PATH`:
//   HOSTD_SOCKET=unix:PATH node plugins/node/examples/management.mjs
//
// The host side then invokes it on the control socket:
//   hostd.invoke {"plugin_id": "demo-management-node", "method": "management.handle",
//                 "params": {"url": "http://127.0.0.1:8080/", "model": "gpt-4o-mini"}}
import { Plugin } from "hostd-plugin";

const plugin = new Plugin("demo-management-node");

plugin.handle("management.handle", async (params, { signal }) => {
  const { url, model, host_callback_id } = params;
  await plugin.log({ level: "info", message: "management.handle", fields: { url }, host_callback_id }, { signal });
  const authFiles = await plugin.auth.list({}, { signal });
  const page = await plugin.http.do({ method: "GET", url, host_callback_id }, { signal });
  const body = { model, messages: [{ role: "user", content: "hello" }] };
  const answer = await plugin.model.execute(
    { entry_protocol: "openai", model, body: JSON.stringify(body), host_callback_id },
    { signal },
  );
  return {
    plugin: plugin.pluginId,
    auth_files: authFiles.length,
    http_status: page.statusCode,
    http_body: page.body.toString("utf8"),
    model_status: answer.statusCode,
    model_body: answer.body.toString("utf8"),
  };
});

await plugin.run({ onReady: () => console.error(`demo-management-node: connected (session ${plugin.hello.session})`) });
