// Command probe is a test plugin for tests/test_go_sdk.py and tests/test_go_parity.py: it
// exposes the SDK's cancellation paths and its pluginapi look-alikes to a real hostd. It is not
// an example; see ../../examples.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	plugin "hostd.dev/plugin"
	"hostd.dev/plugin/pluginapi"
)

type held struct {
	stop   chan struct{} // closed by t.fetch_cancel
	result chan error
}

func main() {
	id := "go-probe"
	if len(os.Args) > 1 {
		id = os.Args[1]
	}
	p := plugin.New(id)
	var mu sync.Mutex
	var fetch *held

	// t.wait_cancel blocks until its ctx ends (hostd's $/cancelRequest), then says so in the log.
	p.Handle("t.wait_cancel", func(ctx context.Context, raw json.RawMessage) (any, error) {
		<-ctx.Done()
		logCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Log(logCtx, plugin.LogEntry{Level: "info", Message: "probe handler cancelled",
			Fields: map[string]any{"cause": ctx.Err().Error()}})
		return nil, ctx.Err()
	})

	// t.fetch_start starts a host.http.do of params.url in the background; t.fetch_cancel
	// cancels its ctx and reports what the call returned.
	p.Handle("t.fetch_start", func(_ context.Context, raw json.RawMessage) (any, error) {
		var in struct {
			URL string `json:"url"`
		}
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, err
		}
		h := &held{stop: make(chan struct{}), result: make(chan error, 1)}
		mu.Lock()
		fetch = h
		mu.Unlock()
		p.Go(func(session context.Context) {
			ctx, cancel := context.WithCancel(session)
			defer cancel()
			go func() {
				select {
				case <-h.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			_, err := p.HTTPDo(ctx, plugin.HTTPRequest{URL: in.URL})
			h.result <- err
		})
		return struct{}{}, nil
	})
	p.Handle("t.fetch_cancel", func(ctx context.Context, _ json.RawMessage) (any, error) {
		mu.Lock()
		h := fetch
		mu.Unlock()
		if h == nil {
			return nil, fmt.Errorf("no fetch started")
		}
		close(h.stop)
		select {
		case err := <-h.result:
			text := ""
			if err != nil {
				text = err.Error()
			}
			return map[string]string{"error": text}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})

	// t.native_http sends host.http.do with the untagged pluginapi.HTTPRequest, as a native Go
	// plugin does: top-level ("Method", "URL", ...) or nested under "request".
	p.Handle("t.native_http", func(ctx context.Context, raw json.RawMessage) (any, error) {
		var in struct {
			URL            string `json:"url"`
			Nested         bool   `json:"nested"`
			HostCallbackID string `json:"host_callback_id"`
		}
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, err
		}
		req := pluginapi.HTTPRequest{Method: "POST", URL: in.URL,
			Headers: map[string][]string{"X-Native": {"yes"}}, Body: []byte("native body")}
		var params any = req
		if in.Nested {
			params = struct {
				HostCallbackID string                `json:"host_callback_id"`
				Request        pluginapi.HTTPRequest `json:"request"`
			}{in.HostCallbackID, req}
		}
		var resp pluginapi.HTTPResponse
		if err := p.Call(ctx, "host.http.do", params, &resp); err != nil {
			return nil, err
		}
		return map[string]any{"status": resp.StatusCode, "body": string(resp.Body),
			"content_type": resp.Headers.Get("Content-Type")}, nil
	})

	// t.native_model runs host.model.execute with pluginapi.HostModelExecutionRequest.
	p.Handle("t.native_model", func(ctx context.Context, raw json.RawMessage) (any, error) {
		var in struct {
			Model          string `json:"model"`
			HostCallbackID string `json:"host_callback_id"`
		}
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, err
		}
		params := struct {
			pluginapi.HostModelExecutionRequest
			HostCallbackID string `json:"host_callback_id,omitempty"`
		}{pluginapi.HostModelExecutionRequest{EntryProtocol: "openai", Model: in.Model,
			Body: []byte(`{"model":"` + in.Model + `"}`)}, in.HostCallbackID}
		var resp pluginapi.HostModelExecutionResponse
		if err := p.Call(ctx, "host.model.execute", params, &resp); err != nil {
			return nil, err
		}
		return map[string]any{"status": resp.StatusCode, "body": string(resp.Body)}, nil
	})

	if err := p.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, id+":", err)
		os.Exit(1)
	}
}
