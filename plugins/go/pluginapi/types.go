// Package pluginapi holds look-alikes of the host-callback payload types of CLIProxyAPI's
// sdk/pluginapi package: same field names, same JSON tags (or none), so they marshal to exactly
// the JSON a native Go plugin sends and decode exactly what the native host answers.
//
// Use them with plugin.Call when porting a native plugin's payload code unchanged:
//
//	var resp pluginapi.HTTPResponse
//	err := p.Call(ctx, "host.http.do", pluginapi.HTTPRequest{Method: "GET", URL: u}, &resp)
//
// HTTPRequest has no JSON tags, so it goes on the wire with capitalised keys ("Method", "URL",
// ...): hostd reads them because it matches keys as Go's encoding/json does (PROTOCOL §3).
// The typed helpers of package plugin send the lower-case keys instead.
package pluginapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// HTTPRequest describes an upstream HTTP request issued through the host (untagged, as upstream).
type HTTPRequest struct {
	Method      string
	URL         string
	Headers     http.Header
	Body        []byte
	WireProfile *HTTPWireProfile
}

// HTTPWireProfile shapes the outgoing request.
type HTTPWireProfile struct {
	HTTP1Only              bool     `json:"http1_only,omitempty"`
	DisableAutoCompression bool     `json:"disable_auto_compression,omitempty"`
	HeaderProfile          []string `json:"header_profile,omitempty"`
}

// HTTPResponse is host.http.do's result (untagged: the wire keys are the field names).
type HTTPResponse struct {
	StatusCode int
	Headers    http.Header
	Body       []byte
}

// HostModelExecutionRequest describes a model execution request issued through the host.
type HostModelExecutionRequest struct {
	EntryProtocol  string      `json:"entry_protocol"`
	ExitProtocol   string      `json:"exit_protocol"`
	Model          string      `json:"model"`
	Stream         bool        `json:"stream"`
	Body           []byte      `json:"body"`
	Headers        http.Header `json:"headers"`
	Query          url.Values  `json:"query"`
	Alt            string      `json:"alt"`
	ForcedProvider string      `json:"forced_provider,omitempty"`
	AuthID         string      `json:"auth_id,omitempty"`
}

// HostModelExecutionResponse describes a non-streaming host model execution response.
type HostModelExecutionResponse struct {
	StatusCode int         `json:"status_code"`
	Headers    http.Header `json:"headers"`
	Body       []byte      `json:"body"`
}

// HostModelStreamResponse describes a streaming host model execution response.
type HostModelStreamResponse struct {
	StatusCode int         `json:"status_code"`
	Headers    http.Header `json:"headers"`
	StreamID   string      `json:"stream_id"`
}

// HostModelStreamReadRequest asks the host to read the next model stream chunk.
type HostModelStreamReadRequest struct {
	StreamID string `json:"stream_id"`
}

// HostModelStreamReadResponse returns one model stream chunk or terminal state.
type HostModelStreamReadResponse struct {
	Payload []byte `json:"payload"`
	Error   string `json:"error"`
	Done    bool   `json:"done"`
}

// HostModelStreamCloseRequest asks the host to close a model stream.
type HostModelStreamCloseRequest struct {
	StreamID string `json:"stream_id"`
}

// HostRecentRequestEntry is one bucket of a credential's recent requests.
type HostRecentRequestEntry struct {
	Time    string `json:"time"`
	Success int64  `json:"success"`
	Failed  int64  `json:"failed"`
}

// HostAuthFileEntry describes one credential exposed through host auth callbacks.
type HostAuthFileEntry struct {
	ID             string                   `json:"id,omitempty"`
	AuthIndex      string                   `json:"auth_index,omitempty"`
	Name           string                   `json:"name"`
	Type           string                   `json:"type,omitempty"`
	Provider       string                   `json:"provider,omitempty"`
	Label          string                   `json:"label,omitempty"`
	Status         string                   `json:"status,omitempty"`
	StatusMessage  string                   `json:"status_message,omitempty"`
	Disabled       bool                     `json:"disabled,omitempty"`
	Unavailable    bool                     `json:"unavailable,omitempty"`
	RuntimeOnly    bool                     `json:"runtime_only,omitempty"`
	Source         string                   `json:"source,omitempty"`
	Path           string                   `json:"path,omitempty"`
	Size           int64                    `json:"size,omitempty"`
	ModTime        time.Time                `json:"modtime,omitempty"`
	UpdatedAt      time.Time                `json:"updated_at,omitempty"`
	CreatedAt      time.Time                `json:"created_at,omitempty"`
	LastRefresh    time.Time                `json:"last_refresh,omitempty"`
	NextRetryAfter time.Time                `json:"next_retry_after,omitempty"`
	Email          string                   `json:"email,omitempty"`
	ProjectID      string                   `json:"project_id,omitempty"`
	AccountType    string                   `json:"account_type,omitempty"`
	Account        string                   `json:"account,omitempty"`
	Priority       int                      `json:"priority,omitempty"`
	Note           string                   `json:"note,omitempty"`
	Websockets     bool                     `json:"websockets,omitempty"`
	Success        int64                    `json:"success,omitempty"`
	Failed         int64                    `json:"failed,omitempty"`
	RecentRequests []HostRecentRequestEntry `json:"recent_requests,omitempty"`
}

// HostAuthGetRequest asks the host for credential JSON by auth index.
type HostAuthGetRequest struct {
	AuthIndex string `json:"auth_index"`
}

// HostAuthGetResponse returns credential JSON resolved by auth index.
type HostAuthGetResponse struct {
	AuthIndex string          `json:"auth_index"`
	Name      string          `json:"name,omitempty"`
	Path      string          `json:"path,omitempty"`
	JSON      json.RawMessage `json:"json"`
}

// HostAuthGetRuntimeResponse returns runtime credential information by auth index.
type HostAuthGetRuntimeResponse struct {
	Auth HostAuthFileEntry `json:"auth"`
}

// HostAuthSaveRequest asks the host to persist credential JSON to a physical auth file.
type HostAuthSaveRequest struct {
	Name string          `json:"name"`
	JSON json.RawMessage `json:"json"`
}

// HostAuthSaveResponse reports the saved physical auth file.
type HostAuthSaveResponse struct {
	Name string `json:"name"`
	Path string `json:"path"`
}
