package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"sync"
)

// Emitter writes to one emit stream (PROTOCOL §9): the stream_id the host side passed in
// executor.execute_stream.
type Emitter struct {
	p        *Plugin
	streamID string
	once     sync.Once
	closeErr error
}

// NewEmitter returns an emitter for streamID (HandleStream makes one for you).
func (p *Plugin) NewEmitter(streamID string) *Emitter {
	return &Emitter{p: p, streamID: streamID}
}

// StreamID is the emit stream's id.
func (e *Emitter) StreamID() string { return e.streamID }

// Emit queues one chunk; it waits while the stream's queue is full and fails once the stream is
// no longer open (the host side aborted it, for instance).
func (e *Emitter) Emit(ctx context.Context, payload []byte) error {
	return e.p.StreamEmit(ctx, e.streamID, payload)
}

// Close ends the stream; a non-empty errText is delivered as its final error. Only the first
// Close is sent.
func (e *Emitter) Close(ctx context.Context, errText string) error {
	e.once.Do(func() { e.closeErr = e.p.StreamClose(ctx, e.streamID, errText) })
	return e.closeErr
}

// StreamFunc produces an emit stream: emit each chunk with e.Emit and return. Returning nil
// closes the stream cleanly; returning an error closes it with the error's text.
type StreamFunc func(ctx context.Context, params json.RawMessage, e *Emitter) error

// HandleStream serves a streaming method (executor.execute_stream, server_tool.handle_stream):
// the call is answered {} at once (the host side learns the stream id from the answer), then fn
// runs in a session-owned goroutine with an Emitter for params.stream_id. Whatever way fn ends
// (nil, an error, a panic), the stream is closed: with the error's text when there is one.
func (p *Plugin) HandleStream(method string, fn StreamFunc) {
	p.Handle(method, func(_ context.Context, params json.RawMessage) (any, error) {
		var head struct {
			StreamID string `json:"stream_id"`
		}
		if err := json.Unmarshal(params, &head); err != nil {
			return nil, &Error{Code: CodeInvalidParams, Message: "decode " + method + " params: " + err.Error(),
				Data: ErrorData{Code: "invalid_params"}}
		}
		if head.StreamID == "" {
			return nil, &Error{Code: CodeInvalidParams, Message: "stream_id is required",
				Data: ErrorData{Code: "invalid_params"}}
		}
		e := p.NewEmitter(head.StreamID)
		p.Go(func(ctx context.Context) {
			err := runStream(ctx, fn, params, e)
			closeCtx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			defer cancel()
			text := ""
			if err != nil {
				text = err.Error()
				if text == "" {
					text = "stream failed"
				}
			}
			if cerr := e.Close(closeCtx, text); cerr != nil && ctx.Err() == nil {
				p.logf("closing stream %s: %v", e.streamID, cerr)
			}
		})
		return struct{}{}, nil
	})
}

func runStream(ctx context.Context, fn StreamFunc, params json.RawMessage, e *Emitter) (err error) {
	defer func() {
		if r := recover(); r != nil {
			e.p.logf("panic in stream producer: %v\n%s", r, debug.Stack())
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return fn(ctx, params, e)
}
