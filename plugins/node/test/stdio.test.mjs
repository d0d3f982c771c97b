// A plugin spawned by `hostd run` speaks on its stdio; console output must not break the protocol.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { NODE_DIR, launch, python, rawClient } from "./support.mjs";

test("under hostd run, console.log and process.stdout.write go to stderr", async () => {
  const dir = mkdtempSync("/tmp/hostd-node-run-");
  const control = join(dir, "control.sock");
  const env = { ...process.env };
  delete env.HOSTD_SOCKET;
  delete env.NODE_TEST_CONTEXT; // the fixture is a plugin, not a test file
  const argv = ["-m", "hostd", "run", "--log-level", "debug", "--control", `unix:${control}`, "--auth-dir", "", "--model-base-url", ""];
  argv.push("--", process.execPath, join(NODE_DIR, "test", "fixtures", "stdio-plugin.mjs"));
  const hostd = await launch(python(), argv, { dir, socket: null, control, env, ready: '"hello plugin"' });
  const ctl = await rawClient(control);
  try {
    const status = await ctl.call("hostd.status");
    assert.deepEqual(
      status.sessions.map((s) => s.plugin_id),
      ["node-sdk-stdio"],
    );
    const answer = await ctl.call("hostd.invoke", { plugin_id: "node-sdk-stdio", method: "demo.ping", params: { n: 41 } });
    assert.deepEqual(answer.result, { pong: 42 });
    for (const text of ["console.log goes to stderr", "process.stdout.write goes to stderr", "ping received", "console.info too"]) {
      await hostd.waitLog(text);
    }
    // stop() ends the session: hostd sees EOF on the plugin's stdout and the child exits 0.
    assert.deepEqual((await ctl.call("hostd.invoke", { plugin_id: "node-sdk-stdio", method: "demo.stop" })).result, { stopping: true });
    await hostd.waitLog("run() returned");
    assert.equal(await hostd.exit, 0);
  } finally {
    ctl.close();
    await hostd.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
