// Command executor is the executor example plugin (the same one every hostd SDK ships):
// executor.execute_stream answers {} at once, then streams a model answer back to the host
// side, piece by piece, through host.stream.emit, and closes the stream (with the error's text
// when something failed).
//
//	go build -o /tmp/demo-executor-go ./examples/executor
//	HOSTD_SOCKET=unix:/run/hostd/hostd.sock /tmp/demo-executor-go
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	plugin "hostd.dev/plugin"
)

const pluginID = "demo-executor-go"

type params struct {
	Model          string `json:"model"`
	Prompt         string `json:"prompt"`
	HostCallbackID string `json:"host_callback_id"`
}

func executeStream(p *plugin.Plugin) plugin.StreamFunc {
	return func(ctx context.Context, raw json.RawMessage, out *plugin.Emitter) error {
		var in params
		if err := json.Unmarshal(raw, &in); err != nil {
			return fmt.Errorf("decode executor.execute_stream params: %w", err)
		}
		body, err := json.Marshal(map[string]any{
			"model":    in.Model,
			"stream":   true,
			"messages": []map[string]string{{"role": "user", "content": in.Prompt}},
		})
		if err != nil {
			return err
		}
		stream, err := p.ModelExecuteStream(ctx, plugin.ModelRequest{
			EntryProtocol: "openai", Model: in.Model, Body: body, HostCallbackID: in.HostCallbackID,
		})
		if err != nil {
			return err
		}
		defer stream.Close()
		for {
			piece, err := stream.Next(ctx)
			if errors.Is(err, io.EOF) {
				return nil // HandleStream closes the emit stream cleanly
			}
			if err != nil {
				return err // ... or with this error's text
			}
			if err := out.Emit(ctx, piece); err != nil {
				return err
			}
		}
	}
}

func main() {
	p := plugin.New(pluginID)
	p.HandleStream("executor.execute_stream", executeStream(p))
	if err := p.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, pluginID+":", err)
		os.Exit(1)
	}
}
