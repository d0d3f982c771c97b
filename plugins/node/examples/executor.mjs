// An executor plugin: executor.execute_stream answers {} at once, then streams a model
// answer back to the host side: each host.model.stream_read piece is emitted unchanged with
// host.stream.emit, then host.stream.close; any error closes the stream with its text.
//
// Under hostd (stdio):
//   hostd run --control unix:/tmp/hostd-ctl.sock --model-base-url http://127.0.0.1:8317 \
//     -- node plugins/node/examples/executor.mjs
// or: HOSTD_SOCKET=unix:PATH node plugins/node/examples/executor.mjs
//
// The host side invokes it with a stream and reads the chunks:
//   hostd.invoke {"plugin_id": "demo-executor-node", "method": "executor.execute_stream",
//                 "params": {"model": "gpt-4o-mini", "prompt": "hi"}, "stream": true}
//   hostd.stream.read {"stream_id": <from the answer>}   (until done)
import { Plugin } from "hostd-plugin";

const plugin = new Plugin("demo-executor-node");

plugin.executor("executor.execute_stream", async (params, emitter, { signal }) => {
  const { model, prompt, host_callback_id } = params;
  const body = { model, messages: [{ role: "user", content: prompt }], stream: true };
  const answer = await plugin.model.executeStream(
    { entry_protocol: "openai", model, body: JSON.stringify(body), host_callback_id },
    { signal },
  );
  // Leaving this loop for any reason (an emit that fails, an abort) closes the model stream.
  for await (const piece of answer) {
    await emitter.emit(piece, { signal });
  }
  // Returning closes the emit stream; throwing would close it with the error's text.
});

await plugin.run({ onReady: () => console.error(`demo-executor-node: connected (session ${plugin.hello.session})`) });
