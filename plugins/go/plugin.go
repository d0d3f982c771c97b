// Package plugin is the Go SDK for hostd plugins: a plugin process speaks newline-delimited
// JSON-RPC 2.0 with hostd, calls hostd's host.* methods, and serves the methods the host side
// invokes through hostd (executor.execute_stream, management.handle, ...).
//
//	p := plugin.New("my-plugin")
//	p.Handle("management.handle", func(ctx context.Context, params json.RawMessage) (any, error) {
//		return map[string]any{"ok": true}, nil
//	})
//	log.Fatal(p.Run(context.Background()))
//
// The transport is the process's stdio (when hostd run spawned the plugin) or the Unix socket
// named by $HOSTD_SOCKET ("unix:PATH"). Standard library only.
package plugin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SchemaVersion is the plugin contract version the SDK announces in hostd.hello.
const SchemaVersion = 3

// DefaultMaxLineBytes is the longest line the SDK reads: hostd's answers can be far longer than
// its request limit (a 64 MiB body is ~86 MiB of base64), so this must be at least 128 MiB.
const DefaultMaxLineBytes = 256 << 20

// ErrDisconnected is returned by calls that were waiting when the session ended.
var ErrDisconnected = errors.New("hostd disconnected")

// ErrNotConnected is returned by calls made before Run has connected.
var ErrNotConnected = errors.New("plugin is not connected to hostd")

// HandlerFunc serves one host → plugin method. ctx is cancelled when hostd sends
// $/cancelRequest for this call or the session ends. The result is marshalled with
// encoding/json (nil becomes {}); a returned *Error is sent as it is, any other error as -32000.
type HandlerFunc func(ctx context.Context, params json.RawMessage) (any, error)

// Hello is hostd's answer to hostd.hello.
type Hello struct {
	Server        string   `json:"server"`
	Version       string   `json:"version"`
	SchemaVersion int      `json:"schema_version"`
	Session       string   `json:"session"`
	Methods       []string `json:"methods"`
	Limits        Limits   `json:"limits"`
}

// Limits are the session's limits as hostd.hello reports them.
type Limits struct {
	MaxLineBytes       int64   `json:"max_line_bytes"`
	MaxInFlight        int     `json:"max_in_flight"`
	MaxStreams         int     `json:"max_streams"`
	StreamIdleTimeoutS float64 `json:"stream_idle_timeout_s"`
	EmitQueue          int     `json:"emit_queue"`
	StreamPieceBytes   int     `json:"stream_piece_bytes"`
}

// Plugin is one plugin's connection to hostd. Create it with New, register handlers, then Run.
// All methods are safe for concurrent use by many goroutines.
type Plugin struct {
	id string

	// MaxLineBytes bounds one incoming line (default DefaultMaxLineBytes); a longer line is
	// discarded up to its newline. Set it before Run.
	MaxLineBytes int

	// Logf receives the SDK's own diagnostics (default: standard error). Set it before Run.
	Logf func(format string, args ...any)

	mu        sync.Mutex
	handlers  map[string]HandlerFunc
	onConnect []func(ctx context.Context, hello Hello)
	pending   map[int64]chan answer
	incoming  map[string]*incomingCall
	session   context.Context // nil until connected
	w         io.Writer
	hello     Hello
	stopped   bool
	stop      context.CancelFunc
	closers   []io.Closer

	writeMu sync.Mutex
	nextID  atomic.Int64
	tasks   sync.WaitGroup
}

type answer struct {
	result json.RawMessage
	err    *Error
}

type incomingCall struct {
	cancel    context.CancelFunc
	cancelled atomic.Bool
}

// New returns a plugin that introduces itself to hostd as id (PROTOCOL §4: without hostd.hello
// hostd does not know the plugin's id and the proxy cannot skip its interceptors).
func New(id string) *Plugin {
	return &Plugin{
		id:       id,
		handlers: map[string]HandlerFunc{},
		pending:  map[int64]chan answer{},
		incoming: map[string]*incomingCall{},
	}
}

// ID is the plugin id sent in hostd.hello.
func (p *Plugin) ID() string { return p.id }

// Handle registers fn for a host → plugin method (replacing an earlier one). Methods without a
// handler are answered -32601.
func (p *Plugin) Handle(method string, fn HandlerFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handlers[method] = fn
}

// OnConnect registers fn to run (in its own goroutine) once hostd has answered hostd.hello.
// ctx ends with the session.
func (p *Plugin) OnConnect(fn func(ctx context.Context, hello Hello)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onConnect = append(p.onConnect, fn)
}

// Hello returns hostd's answer to hostd.hello (the zero value before it arrived).
func (p *Plugin) Hello() Hello {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hello
}

// Go runs fn in a goroutine owned by the session: its ctx is cancelled when the session ends,
// and Run waits for it (up to a grace period) before returning. Use it for work that outlives
// the call that started it, such as producing an emit stream after answering.
func (p *Plugin) Go(fn func(ctx context.Context)) {
	p.mu.Lock()
	ctx := p.session
	p.mu.Unlock()
	if ctx == nil {
		ctx = canceledContext()
	}
	p.tasks.Add(1)
	go func() {
		defer p.tasks.Done()
		defer p.recoverTask("background task")
		fn(ctx)
	}()
}

// Run connects to hostd ($HOSTD_SOCKET when set, else stdio), says hostd.hello and serves until
// hostd closes the connection (nil), ctx is cancelled (ctx.Err()), Stop is called (nil), or the
// connection fails (that error).
//
// On stdio the SDK keeps the original standard output for the protocol and points file
// descriptor 1 (and os.Stdout) at standard error, so fmt.Println output becomes hostd log lines.
func (p *Plugin) Run(ctx context.Context) error {
	r, w, closer, err := Connect(os.Getenv("HOSTD_SOCKET"))
	if err != nil {
		return err
	}
	return p.RunConn(ctx, r, w, closer)
}

// Connect opens the transport Run uses: address "" is stdio, "unix:PATH" a Unix socket.
// closer (may be nil) ends the connection.
func Connect(address string) (io.Reader, io.Writer, io.Closer, error) {
	if address == "" || address == "stdio" {
		out, err := takeStdout()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("hostd plugin: claim stdout: %w", err)
		}
		return os.Stdin, out, nil, nil
	}
	path, ok := strings.CutPrefix(address, "unix:")
	if !ok || path == "" {
		return nil, nil, nil, fmt.Errorf("hostd plugin: address %q must be unix:PATH", address)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hostd plugin: connect %s: %w", address, err)
	}
	return conn, conn, conn, nil
}

// RunConn serves one session over r and w (any transport: a socket, pipes, an in-memory pipe in
// tests). closer, when not nil, is closed when the session ends, which also unblocks the reader.
func (p *Plugin) RunConn(ctx context.Context, r io.Reader, w io.Writer, closer io.Closer) error {
	session, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	if p.session != nil {
		p.mu.Unlock()
		return errors.New("hostd plugin: already running")
	}
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.session, p.w, p.stop = session, w, cancel
	if closer != nil {
		p.closers = append(p.closers, closer)
	}
	p.mu.Unlock()

	readErr := make(chan error, 1)
	go func() { readErr <- p.readLoop(session, r) }()

	p.Go(func(ctx context.Context) {
		var hello Hello
		err := p.Call(ctx, "hostd.hello", map[string]any{"plugin_id": p.id, "schema_version": SchemaVersion}, &hello)
		if err != nil {
			if ctx.Err() == nil {
				p.logf("hostd.hello failed: %v", err)
			}
			return
		}
		p.mu.Lock()
		p.hello = hello
		hooks := append([]func(context.Context, Hello){}, p.onConnect...)
		p.mu.Unlock()
		for _, fn := range hooks {
			fn := fn
			p.Go(func(ctx context.Context) { fn(ctx, hello) })
		}
	})

	var result error
	select {
	case err := <-readErr:
		if err != nil && !errors.Is(err, io.EOF) && session.Err() == nil {
			result = err
		}
	case <-session.Done():
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		if !stopped {
			result = ctx.Err()
		}
	}
	p.shutdown(cancel)
	return result
}

// Stop ends the session: handlers and background tasks see their ctx cancelled, waiting calls
// fail with ErrDisconnected, and Run returns nil. Safe to call more than once, and before Run.
func (p *Plugin) Stop() {
	p.mu.Lock()
	p.stopped = true
	stop := p.stop
	p.mu.Unlock()
	if stop != nil {
		stop()
	}
}

const shutdownGrace = 5 * time.Second

func (p *Plugin) shutdown(cancel context.CancelFunc) {
	cancel()
	p.mu.Lock()
	pending := p.pending
	p.pending = map[int64]chan answer{}
	closers := p.closers
	p.closers = nil
	p.mu.Unlock()
	for _, ch := range pending {
		close(ch)
	}
	done := make(chan struct{})
	go func() { p.tasks.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		p.logf("some handlers did not return within %s of the session ending", shutdownGrace)
	}
	for _, c := range closers {
		_ = c.Close()
	}
}

// Call sends a request to hostd and decodes its result into result (which may be nil, or a
// *json.RawMessage). A JSON-RPC error comes back as *Error. When ctx ends first, Call sends
// $/cancelRequest for the call and returns ctx.Err().
func (p *Plugin) Call(ctx context.Context, method string, params, result any) error {
	raw, err := marshalParams(params)
	if err != nil {
		return fmt.Errorf("encode %s params: %w", method, err)
	}
	id := p.nextID.Add(1)
	ch := make(chan answer, 1)
	p.mu.Lock()
	session := p.session
	if session == nil || session.Err() != nil {
		p.mu.Unlock()
		if session == nil {
			return ErrNotConnected
		}
		return ErrDisconnected
	}
	p.pending[id] = ch
	p.mu.Unlock()

	msg := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      int64           `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params,omitempty"`
	}{"2.0", id, method, raw}
	if err := p.send(msg); err != nil {
		p.forget(id)
		return err
	}
	select {
	case a, ok := <-ch:
		if !ok {
			return ErrDisconnected
		}
		if a.err != nil {
			return a.err
		}
		if result == nil {
			return nil
		}
		if out, ok := result.(*json.RawMessage); ok {
			*out = append((*out)[:0], a.result...)
			return nil
		}
		if err := json.Unmarshal(a.result, result); err != nil {
			return fmt.Errorf("decode %s result: %w", method, err)
		}
		return nil
	case <-ctx.Done():
		if p.forget(id) {
			_ = p.Notify("$/cancelRequest", map[string]int64{"id": id})
		}
		return ctx.Err()
	}
}

// Notify sends a notification (a request without id, never answered).
func (p *Plugin) Notify(method string, params any) error {
	raw, err := marshalParams(params)
	if err != nil {
		return fmt.Errorf("encode %s params: %w", method, err)
	}
	return p.send(struct {
		JSONRPC string          `json:"jsonrpc"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params,omitempty"`
	}{"2.0", method, raw})
}

// forget drops a pending call; false when its answer already arrived or the session ended.
func (p *Plugin) forget(id int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.pending[id]
	delete(p.pending, id)
	return ok
}

func marshalParams(params any) (json.RawMessage, error) {
	switch v := params.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		var buf bytes.Buffer
		if err := json.Compact(&buf, v); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return json.Marshal(params)
}

// send writes one message as one line. Writes are serialised by one mutex, so lines from many
// goroutines never interleave.
func (p *Plugin) send(msg any) error {
	line, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	p.mu.Lock()
	w, session := p.w, p.session
	p.mu.Unlock()
	if w == nil {
		return ErrNotConnected
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	if session.Err() != nil {
		return ErrDisconnected
	}
	if _, err := w.Write(line); err != nil {
		p.Stop()
		return fmt.Errorf("write to hostd: %w", err)
	}
	return nil
}

// Reading ------------------------------------------------------------------------------------

type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *Error          `json:"error"`
}

func (p *Plugin) readLoop(ctx context.Context, r io.Reader) error {
	max := p.MaxLineBytes
	if max <= 0 {
		max = DefaultMaxLineBytes
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br, max)
		if len(line) > 0 {
			p.dispatch(ctx, line)
		}
		if err == errLineTooLong {
			p.logf("discarded a line longer than %d bytes", max)
			continue
		}
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its "\n" (and "\r"). A line longer than max is
// read to its end and dropped (errLineTooLong). Memory grows only with the line itself.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > max+2 {
				tooLong, line = true, nil
			} else if line == nil && err == nil {
				line = append([]byte(nil), chunk...)
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			if err == nil {
				return nil, errLineTooLong
			}
			return nil, err
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		return line, err
	}
}

func (p *Plugin) dispatch(ctx context.Context, line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	if line[0] == '[' {
		var batch []json.RawMessage
		if err := json.Unmarshal(line, &batch); err != nil {
			p.logf("dropped a line that is not JSON: %v", err)
			return
		}
		for _, item := range batch {
			p.dispatchOne(ctx, item)
		}
		return
	}
	p.dispatchOne(ctx, line)
}

func (p *Plugin) dispatchOne(ctx context.Context, raw []byte) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		p.logf("dropped a message that is not a JSON-RPC object: %v", err)
		return
	}
	if env.Method == nil {
		p.deliver(env)
		return
	}
	method := *env.Method
	if method == "$/cancelRequest" {
		var params struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(env.Params, &params) == nil && params.ID != nil {
			p.mu.Lock()
			call := p.incoming[idKey(params.ID)]
			p.mu.Unlock()
			if call != nil {
				call.cancelled.Store(true)
				call.cancel()
			}
		}
		return
	}
	p.serve(ctx, method, env.ID, env.Params)
}

func (p *Plugin) deliver(env envelope) {
	id, err := strconv.ParseInt(string(bytes.TrimSpace(env.ID)), 10, 64)
	if err != nil {
		p.logf("dropped an answer with unknown id %s", env.ID)
		return
	}
	p.mu.Lock()
	ch, ok := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	if !ok {
		return // cancelled by the caller, or a stray answer
	}
	if env.Error != nil {
		ch <- answer{err: env.Error}
		return
	}
	result := env.Result
	if result == nil {
		result = json.RawMessage("null")
	}
	ch <- answer{result: result}
}

func idKey(id json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, id) != nil {
		return string(id)
	}
	return buf.String()
}

// serve runs one host → plugin request in its own goroutine.
func (p *Plugin) serve(session context.Context, method string, id, params json.RawMessage) {
	p.mu.Lock()
	handler := p.handlers[method]
	p.mu.Unlock()
	notification := id == nil
	if handler == nil {
		if !notification {
			p.reply(id, nil, &Error{Code: CodeMethodNotFound, Message: "method not found: " + method,
				Data: ErrorData{Code: "method_not_found"}})
		}
		return
	}
	if params == nil || bytes.Equal(bytes.TrimSpace(params), []byte("null")) {
		params = json.RawMessage("{}")
	}
	ctx, cancel := context.WithCancel(session)
	call := &incomingCall{cancel: cancel}
	key := ""
	if !notification {
		key = idKey(id)
		p.mu.Lock()
		p.incoming[key] = call
		p.mu.Unlock()
	}
	p.tasks.Add(1)
	go func() {
		defer p.tasks.Done()
		defer cancel()
		result, err := p.runHandler(ctx, method, handler, params)
		if notification {
			return
		}
		p.mu.Lock()
		delete(p.incoming, key)
		p.mu.Unlock()
		if err != nil && call.cancelled.Load() {
			p.reply(id, nil, &Error{Code: CodeRequestCancelled, Message: "request cancelled",
				Data: ErrorData{Code: "request_cancelled"}})
			return
		}
		if err != nil {
			p.reply(id, nil, AsError(err))
			return
		}
		p.reply(id, result, nil)
	}()
}

func (p *Plugin) runHandler(ctx context.Context, method string, h HandlerFunc, params json.RawMessage) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.logf("panic in handler %s: %v\n%s", method, r, debug.Stack())
			result, err = nil, &Error{Code: CodeInternalError, Message: "internal error in " + method,
				Data: ErrorData{Code: "internal_error"}}
		}
	}()
	return h(ctx, params)
}

func (p *Plugin) reply(id json.RawMessage, result any, rpcErr *Error) {
	msg := struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Result  json.RawMessage `json:"result,omitempty"`
		Error   *Error          `json:"error,omitempty"`
	}{JSONRPC: "2.0", ID: id, Error: rpcErr}
	if rpcErr == nil {
		raw := json.RawMessage("{}")
		if result != nil {
			encoded, err := json.Marshal(result)
			if err != nil {
				msg.Error = &Error{Code: CodeInternalError, Message: "encode result: " + err.Error(),
					Data: ErrorData{Code: "internal_error"}}
			}
			raw = encoded
		}
		if msg.Error == nil {
			msg.Result = raw
		}
	}
	if err := p.send(msg); err != nil && !errors.Is(err, ErrDisconnected) {
		p.logf("answer to %s not sent: %v", id, err)
	}
}

func (p *Plugin) recoverTask(what string) {
	if r := recover(); r != nil {
		p.logf("panic in %s: %v\n%s", what, r, debug.Stack())
	}
}

func (p *Plugin) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, "hostd plugin %s: "+format+"\n", append([]any{p.id}, args...)...)
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
