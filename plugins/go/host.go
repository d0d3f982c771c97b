package plugin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// This file holds one typed helper per host.* method (PROTOCOL §5–§9, §13). Request structs
// marshal to the lower-case wire keys of PROTOCOL.md; byte fields are []byte (encoding/json
// writes and reads them as standard base64) and header maps are http.Header.

// HTTP: host.http.* ----------------------------------------------------------------------------

// HTTPRequest is the params of host.http.do and host.http.do_stream.
type HTTPRequest struct {
	Method         string       `json:"method,omitempty"` // default GET
	URL            string       `json:"url"`
	Headers        http.Header  `json:"headers,omitempty"`
	Body           []byte       `json:"body,omitempty"`
	HostCallbackID string       `json:"host_callback_id,omitempty"`
	OperationID    string       `json:"operation_id,omitempty"` // claims a host.http.operation_open id
	WireProfile    *WireProfile `json:"wire_profile,omitempty"`
}

// WireProfile shapes the outgoing request (PROTOCOL §13).
type WireProfile struct {
	HTTP1Only              bool     `json:"http1_only,omitempty"`
	DisableAutoCompression bool     `json:"disable_auto_compression,omitempty"`
	HeaderProfile          []string `json:"header_profile,omitempty"`
}

// HTTPResponse is host.http.do's result (its keys are Go field names on the wire).
type HTTPResponse struct {
	StatusCode int         `json:"StatusCode"`
	Headers    http.Header `json:"Headers"`
	Body       []byte      `json:"Body"`
}

// HTTPDo sends one HTTP request through hostd and returns the whole answer. Non-2xx statuses
// are results, not errors.
func (p *Plugin) HTTPDo(ctx context.Context, req HTTPRequest) (*HTTPResponse, error) {
	var out HTTPResponse
	if err := p.Call(ctx, "host.http.do", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// HTTPDoStream sends one HTTP request and returns once its headers arrived; read the body from
// the returned stream and Close it (reading to the end or to an error closes it too).
func (p *Plugin) HTTPDoStream(ctx context.Context, req HTTPRequest) (*HTTPStream, error) {
	var out struct {
		StatusCode int         `json:"status_code"`
		Headers    http.Header `json:"headers"`
		StreamID   string      `json:"stream_id"`
	}
	if err := p.Call(ctx, "host.http.do_stream", req, &out); err != nil {
		return nil, err
	}
	s := &HTTPStream{StatusCode: out.StatusCode, Headers: out.Headers}
	s.init(ctx, p, out.StreamID, "host.http.stream_read", "host.http.stream_close")
	return s, nil
}

// StreamChunk is one read of a host stream: a payload, or the end (Done), or an upstream error
// (Error, with Done).
type StreamChunk struct {
	Payload []byte `json:"payload"`
	Error   string `json:"error"`
	Done    bool   `json:"done"`
}

// HTTPStreamRead reads one piece of an HTTP stream (host.http.stream_read). Most plugins use
// HTTPStream instead.
func (p *Plugin) HTTPStreamRead(ctx context.Context, streamID string) (StreamChunk, error) {
	var out StreamChunk
	err := p.Call(ctx, "host.http.stream_read", streamParams{streamID}, &out)
	return out, err
}

// HTTPStreamClose aborts an HTTP stream (host.http.stream_close; unknown ids are fine).
func (p *Plugin) HTTPStreamClose(ctx context.Context, streamID string) error {
	return p.Call(ctx, "host.http.stream_close", streamParams{streamID}, nil)
}

// HTTPOperationOpen opens a cancellable HTTP operation (host.http.operation_open); pass its id
// as HTTPRequest.OperationID and cancel it with HTTPCancel.
func (p *Plugin) HTTPOperationOpen(ctx context.Context, hostCallbackID string) (string, error) {
	var out struct {
		OperationID string `json:"operation_id"`
	}
	params := struct {
		HostCallbackID string `json:"host_callback_id,omitempty"`
	}{hostCallbackID}
	err := p.Call(ctx, "host.http.operation_open", params, &out)
	return out.OperationID, err
}

// HTTPCancel cancels an operation opened with HTTPOperationOpen (host.http.cancel).
func (p *Plugin) HTTPCancel(ctx context.Context, operationID, hostCallbackID string) error {
	params := struct {
		OperationID    string `json:"operation_id"`
		HostCallbackID string `json:"host_callback_id,omitempty"`
	}{operationID, hostCallbackID}
	return p.Call(ctx, "host.http.cancel", params, nil)
}

type streamParams struct {
	StreamID string `json:"stream_id"`
}

// Logging: host.log ---------------------------------------------------------------------------

// LogEntry is the params of host.log.
type LogEntry struct {
	Level          string         `json:"level,omitempty"` // trace, debug, info, warn, error
	Message        string         `json:"message"`
	Fields         map[string]any `json:"fields,omitempty"`
	HostCallbackID string         `json:"host_callback_id,omitempty"`
}

// Log writes a structured line to hostd's log (secret-looking fields are redacted by hostd).
func (p *Plugin) Log(ctx context.Context, entry LogEntry) error {
	return p.Call(ctx, "host.log", entry, nil)
}

// Models: host.model.* -------------------------------------------------------------------------

// ModelRequest is the params of host.model.execute and host.model.execute_stream.
type ModelRequest struct {
	EntryProtocol  string      `json:"entry_protocol"` // openai, openai-response, claude, gemini
	ExitProtocol   string      `json:"exit_protocol,omitempty"`
	Model          string      `json:"model"`
	Stream         bool        `json:"stream"` // set by ModelExecute / ModelExecuteStream
	Body           []byte      `json:"body,omitempty"`
	Headers        http.Header `json:"headers,omitempty"`
	Query          url.Values  `json:"query,omitempty"`
	Alt            string      `json:"alt,omitempty"`
	ForcedProvider string      `json:"forced_provider,omitempty"`
	AuthID         string      `json:"auth_id,omitempty"`
	ProxyURL       string      `json:"proxy_url,omitempty"`
	HostCallbackID string      `json:"host_callback_id,omitempty"`
}

// ModelResponse is host.model.execute's result.
type ModelResponse struct {
	StatusCode int         `json:"status_code"`
	Headers    http.Header `json:"headers"`
	Body       []byte      `json:"body"`
}

// ModelExecute runs one model call through the proxy's pipeline (req.Stream is forced false).
func (p *Plugin) ModelExecute(ctx context.Context, req ModelRequest) (*ModelResponse, error) {
	req.Stream = false
	var out ModelResponse
	if err := p.Call(ctx, "host.model.execute", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ModelExecuteStream starts a streamed model call (req.Stream is forced true). Read it with the
// returned stream's Next or Read, and Close it.
func (p *Plugin) ModelExecuteStream(ctx context.Context, req ModelRequest) (*ModelStream, error) {
	req.Stream = true
	var out struct {
		StatusCode int         `json:"status_code"`
		Headers    http.Header `json:"headers"`
		StreamID   string      `json:"stream_id"`
	}
	if err := p.Call(ctx, "host.model.execute_stream", req, &out); err != nil {
		return nil, err
	}
	s := &ModelStream{StatusCode: out.StatusCode, Headers: out.Headers}
	s.init(ctx, p, out.StreamID, "host.model.stream_read", "host.model.stream_close")
	return s, nil
}

// ModelStreamRead reads one piece of a model stream (host.model.stream_read).
func (p *Plugin) ModelStreamRead(ctx context.Context, streamID string) (StreamChunk, error) {
	var out StreamChunk
	err := p.Call(ctx, "host.model.stream_read", streamParams{streamID}, &out)
	return out, err
}

// ModelStreamClose cancels a model stream (host.model.stream_close; unknown ids are fine).
func (p *Plugin) ModelStreamClose(ctx context.Context, streamID string) error {
	return p.Call(ctx, "host.model.stream_close", streamParams{streamID}, nil)
}

// Credentials: host.auth.* ----------------------------------------------------------------------

// AuthEntry describes one credential (host.auth.list, host.auth.get_runtime).
type AuthEntry struct {
	ID             string    `json:"id,omitempty"`
	AuthIndex      string    `json:"auth_index,omitempty"`
	Name           string    `json:"name"`
	Type           string    `json:"type,omitempty"`
	Provider       string    `json:"provider,omitempty"`
	Label          string    `json:"label,omitempty"`
	Status         string    `json:"status,omitempty"`
	StatusMessage  string    `json:"status_message,omitempty"`
	Disabled       bool      `json:"disabled,omitempty"`
	Unavailable    bool      `json:"unavailable,omitempty"`
	RuntimeOnly    bool      `json:"runtime_only,omitempty"`
	Source         string    `json:"source,omitempty"`
	Path           string    `json:"path,omitempty"`
	Size           int64     `json:"size,omitempty"`
	ModTime        time.Time `json:"modtime"`
	UpdatedAt      time.Time `json:"updated_at"`
	CreatedAt      time.Time `json:"created_at"`
	LastRefresh    time.Time `json:"last_refresh"`
	NextRetryAfter time.Time `json:"next_retry_after"`
	Email          string    `json:"email,omitempty"`
	ProjectID      string    `json:"project_id,omitempty"`
	Priority       int       `json:"priority,omitempty"`
	Note           string    `json:"note,omitempty"`
	Websockets     bool      `json:"websockets,omitempty"`
}

// AuthFile is host.auth.get's result: the credential's JSON as stored.
type AuthFile struct {
	AuthIndex string          `json:"auth_index"`
	Name      string          `json:"name,omitempty"`
	Path      string          `json:"path,omitempty"`
	JSON      json.RawMessage `json:"json"`
}

// AuthSaved is host.auth.save's result.
type AuthSaved struct {
	Name string `json:"name"`
	Path string `json:"path"`
}

// AuthList lists the credentials in hostd's auth directory (never nil on success).
func (p *Plugin) AuthList(ctx context.Context) ([]AuthEntry, error) {
	var out struct {
		Files []AuthEntry `json:"files"`
	}
	if err := p.Call(ctx, "host.auth.list", struct{}{}, &out); err != nil {
		return nil, err
	}
	if out.Files == nil {
		out.Files = []AuthEntry{}
	}
	return out.Files, nil
}

// AuthGet returns a credential's JSON by its auth index.
func (p *Plugin) AuthGet(ctx context.Context, authIndex string) (*AuthFile, error) {
	var out AuthFile
	if err := p.Call(ctx, "host.auth.get", authIndexParams{authIndex}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuthGetRuntime returns a credential's entry (the same one AuthList gives) by its auth index.
func (p *Plugin) AuthGetRuntime(ctx context.Context, authIndex string) (*AuthEntry, error) {
	var out struct {
		Auth AuthEntry `json:"auth"`
	}
	if err := p.Call(ctx, "host.auth.get_runtime", authIndexParams{authIndex}, &out); err != nil {
		return nil, err
	}
	return &out.Auth, nil
}

// AuthSave writes a credential file atomically (name must end with .json; credential must be a
// JSON object, written exactly as given).
func (p *Plugin) AuthSave(ctx context.Context, name string, credential json.RawMessage) (*AuthSaved, error) {
	params := struct {
		Name string          `json:"name"`
		JSON json.RawMessage `json:"json"`
	}{name, credential}
	var out AuthSaved
	if err := p.Call(ctx, "host.auth.save", params, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

type authIndexParams struct {
	AuthIndex string `json:"auth_index"`
}

// Emit streams: host.stream.* -------------------------------------------------------------------

// StreamEmit queues one chunk on an emit stream (host.stream.emit); it waits while the stream's
// queue (16 chunks) is full.
func (p *Plugin) StreamEmit(ctx context.Context, streamID string, payload []byte) error {
	params := struct {
		StreamID string `json:"stream_id"`
		Payload  []byte `json:"payload"`
	}{streamID, payload}
	return p.Call(ctx, "host.stream.emit", params, nil)
}

// StreamEmitError sends a final chunk that carries an error (and optionally a payload).
func (p *Plugin) StreamEmitError(ctx context.Context, streamID string, payload []byte, message string) error {
	params := struct {
		StreamID string `json:"stream_id"`
		Payload  []byte `json:"payload,omitempty"`
		Error    string `json:"error"`
	}{streamID, payload, message}
	return p.Call(ctx, "host.stream.emit", params, nil)
}

// StreamClose ends an emit stream (host.stream.close); a non-empty errText becomes the stream's
// final error chunk.
func (p *Plugin) StreamClose(ctx context.Context, streamID, errText string) error {
	params := struct {
		StreamID string `json:"stream_id"`
		Error    string `json:"error,omitempty"`
	}{streamID, errText}
	return p.Call(ctx, "host.stream.close", params, nil)
}

// Affinity and routing (PROTOCOL §13) ------------------------------------------------------------

// AffinityRequest is the params of host.affinity.lookup.
type AffinityRequest struct {
	Provider  string `json:"provider"`
	Model     string `json:"model"`
	SessionID string `json:"session_id"`
}

// AffinityResult is host.affinity.lookup's result; Raw holds every key the host sent.
type AffinityResult struct {
	Status     string          `json:"status"`
	ObservedAt time.Time       `json:"observed_at"`
	Raw        json.RawMessage `json:"-"`
}

// AffinityLookup asks which credential a session is bound to (standalone hostd answers
// status "unsupported").
func (p *Plugin) AffinityLookup(ctx context.Context, req AffinityRequest) (*AffinityResult, error) {
	var raw json.RawMessage
	if err := p.Call(ctx, "host.affinity.lookup", req, &raw); err != nil {
		return nil, err
	}
	var out AffinityResult
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	out.Raw = raw
	return &out, nil
}

// RoutingResetCooldown clears a credential's cooldown (host.routing.reset_cooldown; standalone
// hostd answers -32601, as proxies before v8.0.12 do).
func (p *Plugin) RoutingResetCooldown(ctx context.Context, authIndex string) error {
	return p.Call(ctx, "host.routing.reset_cooldown", authIndexParams{authIndex}, nil)
}
