// Command management is the management-style example plugin (the same one every hostd SDK
// ships): management.handle logs, lists credentials, fetches a URL and runs a model call, all
// through hostd, forwarding the host_callback_id it was given on each nested call.
//
//	go build -o /tmp/demo-management-go ./examples/management
//	HOSTD_SOCKET=unix:/run/hostd/hostd.sock /tmp/demo-management-go
//	(or: hostd run --control unix:/tmp/control.sock -- /tmp/demo-management-go)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	plugin "hostd.dev/plugin"
)

const pluginID = "demo-management-go"

type params struct {
	URL            string `json:"url"`
	Model          string `json:"model"`
	HostCallbackID string `json:"host_callback_id"`
}

type result struct {
	Plugin      string `json:"plugin"`
	AuthFiles   int    `json:"auth_files"`
	HTTPStatus  int    `json:"http_status"`
	HTTPBody    string `json:"http_body"`
	ModelStatus int    `json:"model_status"`
	ModelBody   string `json:"model_body"`
}

func handle(p *plugin.Plugin) plugin.HandlerFunc {
	return func(ctx context.Context, raw json.RawMessage) (any, error) {
		var in params
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, plugin.NewError(plugin.CodeInvalidParams, "decode management.handle params: "+err.Error())
		}
		scope := in.HostCallbackID
		if err := p.Log(ctx, plugin.LogEntry{
			Level: "info", Message: "management.handle", Fields: map[string]any{"url": in.URL}, HostCallbackID: scope,
		}); err != nil {
			return nil, err
		}
		auths, err := p.AuthList(ctx)
		if err != nil {
			return nil, err
		}
		page, err := p.HTTPDo(ctx, plugin.HTTPRequest{Method: "GET", URL: in.URL, HostCallbackID: scope})
		if err != nil {
			return nil, err
		}
		body, err := json.Marshal(map[string]any{
			"model":    in.Model,
			"messages": []map[string]string{{"role": "user", "content": "hello"}},
		})
		if err != nil {
			return nil, err
		}
		answer, err := p.ModelExecute(ctx, plugin.ModelRequest{
			EntryProtocol: "openai", Model: in.Model, Body: body, HostCallbackID: scope,
		})
		if err != nil {
			return nil, err
		}
		return result{
			Plugin:      pluginID,
			AuthFiles:   len(auths),
			HTTPStatus:  page.StatusCode,
			HTTPBody:    string(page.Body),
			ModelStatus: answer.StatusCode,
			ModelBody:   string(answer.Body),
		}, nil
	}
}

func main() {
	p := plugin.New(pluginID)
	p.Handle("management.handle", handle(p))
	if err := p.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, pluginID+":", err)
		os.Exit(1)
	}
}
