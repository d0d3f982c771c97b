package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
)

// JSON-RPC error codes hostd uses (PROTOCOL §2).
const (
	CodeParseError       = -32700
	CodeInvalidRequest   = -32600
	CodeMethodNotFound   = -32601
	CodeInvalidParams    = -32602
	CodeInternalError    = -32603
	CodeHostCallFailed   = -32000
	CodeLimitExceeded    = -32001
	CodeForbidden        = -32002
	CodeRequestCancelled = -32800
)

// Error is a JSON-RPC error: what a host call failed with, or what a handler answers with.
//
//	var e *plugin.Error
//	if errors.As(err, &e) && e.Data.Retryable { ... }
type Error struct {
	Code    int       `json:"code"`
	Message string    `json:"message"`
	Data    ErrorData `json:"data,omitempty"`
}

// ErrorData is the error's data object: a stable string code (host_call_failed, forbidden, ...),
// the upstream HTTP status when known, and whether a retry may succeed.
type ErrorData struct {
	Code       string `json:"code,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
	Retryable  bool   `json:"retryable,omitempty"`
}

func (e *Error) Error() string {
	if e.Data.Code != "" {
		return fmt.Sprintf("%s (%d %s)", e.Message, e.Code, e.Data.Code)
	}
	return fmt.Sprintf("%s (%d)", e.Message, e.Code)
}

// MarshalJSON leaves out an empty data object.
func (e *Error) MarshalJSON() ([]byte, error) {
	type plain struct {
		Code    int        `json:"code"`
		Message string     `json:"message"`
		Data    *ErrorData `json:"data,omitempty"`
	}
	out := plain{Code: e.Code, Message: e.Message}
	if e.Data != (ErrorData{}) {
		out.Data = &e.Data
	}
	return json.Marshal(out)
}

// UnmarshalJSON accepts a data object with any extra keys (or none, or not an object).
func (e *Error) UnmarshalJSON(raw []byte) error {
	var in struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return err
	}
	e.Code, e.Message, e.Data = in.Code, in.Message, ErrorData{}
	if len(in.Data) > 0 {
		_ = json.Unmarshal(in.Data, &e.Data) // data that is not an object carries nothing we read
	}
	return nil
}

// NewError returns an error a handler can return to answer with code and message
// (data.code defaults to host_call_failed for -32000).
func NewError(code int, message string) *Error {
	e := &Error{Code: code, Message: message}
	if code == CodeHostCallFailed {
		e.Data.Code = "host_call_failed"
	}
	return e
}

// AsError turns any error into the *Error a handler's caller receives: an *Error in err's chain
// is used as it is, anything else becomes -32000 with err's text.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return NewError(CodeHostCallFailed, err.Error())
}

// IsCode reports whether err is an *Error with this JSON-RPC code.
func IsCode(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
