package plugin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// StreamError is the error a host stream ended with (an upstream failure reported by a read's
// "error"); Message is hostd's text, unchanged.
type StreamError struct {
	StreamID string
	Message  string
}

func (e *StreamError) Error() string { return e.Message }

// closeTimeout bounds the stream_close a reader sends when it gives up on its stream.
const closeTimeout = 5 * time.Second

// hostStream is what HTTPStream and ModelStream share: pieces read one call at a time, an
// io.Reader view over them, and a Close that is sent exactly once unless hostd already
// dropped the stream (its end or error was read).
type hostStream struct {
	p           *Plugin
	id          string
	readMethod  string
	closeMethod string
	ctx         context.Context // used by Read, which has no ctx of its own

	mu       sync.Mutex // one read at a time
	buf      []byte     // what Read has not returned yet
	finished bool       // no more reads: end, error or closed
	err      error      // what reads return once finished (io.EOF at a clean end)
	pending  error      // an error that arrived together with a payload, returned next

	closed atomic.Bool // stream_close sent, or hostd dropped the stream itself
}

func (s *hostStream) init(ctx context.Context, p *Plugin, id, readMethod, closeMethod string) {
	s.p, s.id, s.readMethod, s.closeMethod, s.ctx = p, id, readMethod, closeMethod, ctx
}

// StreamID is hostd's id of the stream.
func (s *hostStream) StreamID() string { return s.id }

// Next returns the next piece (at least one byte), io.EOF at the end, a *StreamError when the
// upstream failed, or the call's error. Any error closes the stream: after it, Next keeps
// returning the same error. Cancelling ctx returns ctx.Err() and closes the stream.
func (s *hostStream) Next(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.pending != nil {
			s.finish(s.pending)
			s.pending = nil
		}
		if s.finished {
			return nil, s.err
		}
		if s.closed.Load() {
			s.finish(errors.New("stream " + s.id + " is closed"))
			continue
		}
		var chunk StreamChunk
		if err := s.p.Call(ctx, s.readMethod, streamParams{s.id}, &chunk); err != nil {
			s.finish(err)
			s.Close()
			continue
		}
		var end error
		switch {
		case chunk.Error != "":
			end = &StreamError{StreamID: s.id, Message: chunk.Error}
		case chunk.Done:
			end = io.EOF
		}
		if end != nil {
			s.closed.Store(true) // hostd has already forgotten the stream
		}
		if len(chunk.Payload) > 0 {
			s.pending = end
			return chunk.Payload, nil
		}
		if end != nil {
			s.finish(end)
		}
	}
}

func (s *hostStream) finish(err error) {
	s.finished, s.err = true, err
}

// Read implements io.Reader over the stream's pieces, with the ctx the stream was opened with.
func (s *hostStream) Read(b []byte) (int, error) {
	if len(s.buf) == 0 {
		piece, err := s.Next(s.ctx)
		if err != nil {
			return 0, err
		}
		s.buf = piece
	}
	n := copy(b, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// Close aborts the stream at hostd (its *.stream_close) unless it already ended. It is safe to
// call more than once and concurrently with a read; always call it (defer stream.Close()).
func (s *hostStream) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := s.p.Call(ctx, s.closeMethod, streamParams{s.id}, nil)
	if errors.Is(err, ErrDisconnected) || errors.Is(err, ErrNotConnected) {
		return nil // the session is gone, and hostd closed the stream with it
	}
	return err
}

// HTTPStream is the body of a host.http.do_stream answer. It is an io.ReadCloser; Next reads
// piece by piece.
type HTTPStream struct {
	StatusCode int
	Headers    http.Header
	hostStream
}

// ModelStream is a host.model.execute_stream answer. It is an io.ReadCloser; Next reads piece
// by piece (one host.model.stream_read each).
type ModelStream struct {
	StatusCode int
	Headers    http.Header
	hostStream
}

var (
	_ io.ReadCloser = (*HTTPStream)(nil)
	_ io.ReadCloser = (*ModelStream)(nil)
)
