package plugin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests drive the SDK over an in-memory full-duplex pipe with a scripted host on the
// other end, so each message the SDK writes can be checked exactly. tests/test_go_sdk.py runs
// the examples against a real hostd.

const wait = 10 * time.Second

type msg = map[string]any

type fakeHost struct {
	t    *testing.T
	conn net.Conn
	in   chan msg
	wmu  sync.Mutex
	done chan error // Run's result
}

func startPlugin(t *testing.T, p *Plugin) *fakeHost {
	t.Helper()
	pluginEnd, hostEnd := net.Pipe()
	h := &fakeHost{t: t, conn: hostEnd, in: make(chan msg, 1024), done: make(chan error, 1)}
	go func() {
		br := bufio.NewReaderSize(hostEnd, 1<<20)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				var m msg
				if jerr := json.Unmarshal(line, &m); jerr != nil {
					t.Errorf("plugin wrote a line that is not JSON: %q", line)
				}
				h.in <- m
			}
			if err != nil {
				close(h.in)
				return
			}
		}
	}()
	go func() { h.done <- p.RunConn(context.Background(), pluginEnd, pluginEnd, pluginEnd) }()
	t.Cleanup(func() { p.Stop(); _ = hostEnd.Close() })
	return h
}

// connected starts the plugin and answers its hostd.hello.
func connected(t *testing.T, p *Plugin) *fakeHost {
	h := startPlugin(t, p)
	hello := h.next("hostd.hello")
	h.answer(hello["id"], msg{"server": "hostd", "session": "s-1", "schema_version": 3})
	return h
}

func (h *fakeHost) next(method string) msg {
	h.t.Helper()
	select {
	case m, ok := <-h.in:
		if !ok {
			h.t.Fatalf("plugin closed the connection while the test waited for %q", method)
		}
		if method != "" && m["method"] != method {
			h.t.Fatalf("expected %q from the plugin, got %v", method, m)
		}
		return m
	case <-time.After(wait):
		h.t.Fatalf("timed out waiting for %q", method)
	}
	return nil
}

func (h *fakeHost) sendRaw(line []byte) {
	h.t.Helper()
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if _, err := h.conn.Write(append(line, '\n')); err != nil {
		h.t.Fatalf("write to plugin: %v", err)
	}
}

func (h *fakeHost) send(m msg) {
	h.t.Helper()
	m["jsonrpc"] = "2.0"
	line, err := json.Marshal(m)
	if err != nil {
		h.t.Fatal(err)
	}
	h.sendRaw(line)
}

func (h *fakeHost) answer(id any, result any) { h.send(msg{"id": id, "result": result}) }

func (h *fakeHost) request(id any, method string, params any) {
	h.send(msg{"id": id, "method": method, "params": params})
}

func errorOf(t *testing.T, m msg) msg {
	t.Helper()
	e, ok := m["error"].(msg)
	if !ok {
		t.Fatalf("expected an error answer, got %v", m)
	}
	return e
}

// Session ------------------------------------------------------------------------------------

func TestHelloIsTheFirstMessageAndOnConnectSeesTheAnswer(t *testing.T) {
	p := New("go-sdk-test")
	seen := make(chan Hello, 1)
	p.OnConnect(func(_ context.Context, hello Hello) { seen <- hello })
	h := startPlugin(t, p)
	hello := h.next("hostd.hello")
	params := hello["params"].(msg)
	if params["plugin_id"] != "go-sdk-test" || params["schema_version"] != float64(3) {
		t.Fatalf("hello params: %v", params)
	}
	h.answer(hello["id"], msg{"server": "hostd", "session": "s-7", "schema_version": 3})
	select {
	case got := <-seen:
		if got.Session != "s-7" || p.Hello().Session != "s-7" {
			t.Fatalf("hello: %+v", got)
		}
	case <-time.After(wait):
		t.Fatal("OnConnect never ran")
	}
}

func TestRunReturnsNilWhenHostdClosesTheConnection(t *testing.T) {
	p := New("eof")
	h := connected(t, p)
	_ = h.conn.Close()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after EOF")
	}
}

func TestStopEndsRunAndFailsWaitingCalls(t *testing.T) {
	p := New("stop")
	h := connected(t, p)
	failed := make(chan error, 1)
	go func() { failed <- p.Call(context.Background(), "host.log", msg{}, nil) }()
	h.next("host.log") // never answered
	p.Stop()
	if err := <-failed; !errors.Is(err, ErrDisconnected) {
		t.Fatalf("waiting call: %v", err)
	}
	if err := <-h.done; err != nil {
		t.Fatalf("Run after Stop: %v", err)
	}
}

// Plugin → host calls ------------------------------------------------------------------------

func TestCancellingTheContextSendsCancelRequestAndReturnsCtxErr(t *testing.T) {
	p := New("cancel-out")
	h := connected(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { _, err := p.ModelStreamRead(ctx, "s-1"); result <- err }()
	req := h.next("host.model.stream_read")
	cancel()
	notice := h.next("$/cancelRequest")
	if _, hasID := notice["id"]; hasID {
		t.Fatalf("$/cancelRequest must be a notification: %v", notice)
	}
	if notice["params"].(msg)["id"] != req["id"] {
		t.Fatalf("cancelled id %v, request id %v", notice["params"], req["id"])
	}
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Fatalf("Call returned %v, want context.Canceled", err)
	}
	// The late answer is dropped, and the session goes on serving.
	h.send(msg{"id": req["id"], "error": msg{"code": -32800, "message": "request cancelled"}})
	go func() { result <- p.Log(context.Background(), LogEntry{Message: "after"}) }()
	h.answer(h.next("host.log")["id"], msg{})
	if err := <-result; err != nil {
		t.Fatalf("call after a cancel: %v", err)
	}
}

func TestConcurrentCallsAreMatchedByID(t *testing.T) {
	p := New("many")
	h := connected(t, p)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var out struct{ N int }
			if err := p.Call(context.Background(), "t.echo", msg{"n": i}, &out); err != nil {
				errs <- err
			} else if out.N != i {
				errs <- fmt.Errorf("call %d got the answer of %d", i, out.N)
			}
		}(i)
	}
	reqs := make([]msg, 0, n)
	for i := 0; i < n; i++ {
		reqs = append(reqs, h.next("t.echo"))
	}
	for i := n - 1; i >= 0; i-- { // answer in reverse order
		h.answer(reqs[i]["id"], msg{"N": reqs[i]["params"].(msg)["n"]})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestErrorsCarryCodeMessageDataCodeStatusAndRetryable(t *testing.T) {
	p := New("errors")
	h := connected(t, p)
	result := make(chan error, 1)
	go func() {
		_, err := p.HTTPDo(context.Background(), HTTPRequest{URL: "http://127.0.0.1:9/"})
		result <- err
	}()
	req := h.next("host.http.do")
	h.send(msg{"id": req["id"], "error": msg{"code": -32000, "message": "execute host http request: boom",
		"data": msg{"code": "host_call_failed", "http_status": 502, "retryable": true, "extra": 1}}})
	err := <-result
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error, got %T %v", err, err)
	}
	want := Error{Code: -32000, Message: "execute host http request: boom",
		Data: ErrorData{Code: "host_call_failed", HTTPStatus: 502, Retryable: true}}
	if *e != want || !IsCode(err, CodeHostCallFailed) {
		t.Fatalf("got %+v, want %+v", *e, want)
	}
}

func TestTypedHelpersSendLowerCaseKeysAndBase64(t *testing.T) {
	p := New("wire")
	h := connected(t, p)
	result := make(chan *HTTPResponse, 1)
	go func() {
		resp, err := p.HTTPDo(context.Background(), HTTPRequest{
			Method: "POST", URL: "http://127.0.0.1/x", Headers: map[string][]string{"X-A": {"1"}},
			Body: []byte("hi\x00"), HostCallbackID: "cb-1",
		})
		if err != nil {
			t.Error(err)
		}
		result <- resp
	}()
	req := h.next("host.http.do")
	want := msg{"method": "POST", "url": "http://127.0.0.1/x", "headers": msg{"X-A": []any{"1"}},
		"body": base64.StdEncoding.EncodeToString([]byte("hi\x00")), "host_callback_id": "cb-1"}
	if got, _ := json.Marshal(req["params"]); !jsonEqual(t, got, want) {
		t.Fatalf("params %s", got)
	}
	h.answer(req["id"], msg{"StatusCode": 201, "Headers": msg{"Content-Type": []any{"text/plain"}},
		"Body": base64.StdEncoding.EncodeToString([]byte("ok"))})
	resp := <-result
	if resp.StatusCode != 201 || string(resp.Body) != "ok" || resp.Headers.Get("content-type") != "text/plain" {
		t.Fatalf("response %+v", resp)
	}
}

func jsonEqual(t *testing.T, got []byte, want any) bool {
	t.Helper()
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal(got, &a)
	_ = json.Unmarshal(w, &b)
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// Framing ------------------------------------------------------------------------------------

func TestAnswerLinesOver128MiBAreRead(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~0.5 GiB")
	}
	p := New("big")
	h := connected(t, p)
	payload := bytes.Repeat([]byte("x"), 97<<20) // ~129.3 MiB of base64
	got := make(chan StreamChunk, 1)
	go func() {
		chunk, err := p.ModelStreamRead(context.Background(), "s")
		if err != nil {
			t.Error(err)
		}
		got <- chunk
	}()
	req := h.next("host.model.stream_read")
	line := []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":%v,"result":{"payload":"%s","error":"","done":false}}`,
		req["id"], base64.StdEncoding.EncodeToString(payload)))
	if len(line) <= 128<<20 {
		t.Fatalf("line is only %d bytes", len(line))
	}
	h.sendRaw(line)
	chunk := <-got
	if !bytes.Equal(chunk.Payload, payload) {
		t.Fatalf("payload of %d bytes came back as %d", len(payload), len(chunk.Payload))
	}
}

func TestAnOverlongLineIsDroppedAndTheSessionContinues(t *testing.T) {
	p := New("overlong")
	p.MaxLineBytes = 1024
	var logged []string
	var mu sync.Mutex
	p.Logf = func(f string, a ...any) { mu.Lock(); logged = append(logged, fmt.Sprintf(f, a...)); mu.Unlock() }
	p.Handle("t.ping", func(context.Context, json.RawMessage) (any, error) { return "pong", nil })
	h := connected(t, p)
	h.sendRaw([]byte(`{"jsonrpc":"2.0","id":"x","method":"t.ping","params":{"pad":"` + strings.Repeat("a", 4000) + `"}}`))
	h.request("hostd-2", "t.ping", msg{})
	answer := h.next("")
	if answer["id"] != "hostd-2" || answer["result"] != "pong" {
		t.Fatalf("answer %v", answer)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 || !strings.Contains(logged[0], "longer than 1024") {
		t.Fatalf("logged %q", logged)
	}
}

func TestCRLFAndBlankLinesAreAccepted(t *testing.T) {
	p := New("crlf")
	p.Handle("t.ping", func(context.Context, json.RawMessage) (any, error) { return nil, nil })
	h := connected(t, p)
	h.sendRaw([]byte("\r\n\n" + `{"jsonrpc":"2.0","id":5,"method":"t.ping"}` + "\r"))
	answer := h.next("")
	if answer["id"] != float64(5) || !jsonEqual(t, mustJSON(t, answer["result"]), msg{}) {
		t.Fatalf("answer %v", answer)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Host → plugin calls ------------------------------------------------------------------------

func TestUnknownMethodsAnswerMethodNotFound(t *testing.T) {
	h := connected(t, New("unknown"))
	h.request("hostd-1", "no.such", msg{})
	e := errorOf(t, h.next(""))
	if e["code"] != float64(-32601) || e["message"] != "method not found: no.such" {
		t.Fatalf("error %v", e)
	}
}

func TestHandlerErrorsBecomeJSONRPCErrors(t *testing.T) {
	p := New("errs")
	p.Handle("t.plain", func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("no luck") })
	p.Handle("t.coded", func(context.Context, json.RawMessage) (any, error) {
		return nil, fmt.Errorf("wrapped: %w", &Error{Code: -32001, Message: "too many", Data: ErrorData{Code: "limit_exceeded", Retryable: true}})
	})
	p.Handle("t.panic", func(context.Context, json.RawMessage) (any, error) { panic("bug") })
	p.Logf = func(string, ...any) {}
	h := connected(t, p)
	for _, m := range []string{"t.plain", "t.coded", "t.panic"} {
		h.request(m, m, msg{})
	}
	got := map[any]msg{}
	for i := 0; i < 3; i++ {
		a := h.next("")
		got[a["id"]] = errorOf(t, a)
	}
	want := map[string]msg{
		"t.plain": {"code": -32000, "message": "no luck", "data": msg{"code": "host_call_failed"}},
		"t.coded": {"code": -32001, "message": "too many", "data": msg{"code": "limit_exceeded", "retryable": true}},
		"t.panic": {"code": -32603, "message": "internal error in t.panic", "data": msg{"code": "internal_error"}},
	}
	for id, w := range want {
		if !jsonEqual(t, mustJSON(t, got[id]), w) {
			t.Errorf("%s: got %v, want %v", id, got[id], w)
		}
	}
}

func TestCancelRequestFromHostdCancelsTheHandlersContext(t *testing.T) {
	p := New("cancel-in")
	started := make(chan struct{})
	p.Handle("t.wait", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	h := connected(t, p)
	h.request("hostd-9", "t.wait", msg{})
	<-started
	h.send(msg{"method": "$/cancelRequest", "params": msg{"id": "hostd-9"}})
	a := h.next("")
	e := errorOf(t, a)
	if a["id"] != "hostd-9" || e["code"] != float64(-32800) {
		t.Fatalf("answer %v", a)
	}
}

func TestTheSessionEndingCancelsHandlersAndBackgroundTasks(t *testing.T) {
	p := New("session-end")
	handlerDone := make(chan error, 1)
	taskDone := make(chan error, 1)
	started := make(chan struct{})
	p.Handle("t.wait", func(ctx context.Context, _ json.RawMessage) (any, error) {
		p.Go(func(ctx context.Context) { <-ctx.Done(); taskDone <- ctx.Err() })
		close(started)
		<-ctx.Done()
		handlerDone <- ctx.Err()
		return nil, ctx.Err()
	})
	h := connected(t, p)
	h.request("hostd-1", "t.wait", msg{})
	<-started
	_ = h.conn.Close()
	for _, ch := range []chan error{handlerDone, taskDone} {
		select {
		case err := <-ch:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("ctx ended with %v", err)
			}
		case <-time.After(wait):
			t.Fatal("a ctx was not cancelled when the session ended")
		}
	}
	if err := <-h.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestNotificationsRunAndAreNeverAnswered(t *testing.T) {
	p := New("notify")
	ran := make(chan string, 1)
	p.Handle("t.note", func(_ context.Context, params json.RawMessage) (any, error) {
		ran <- string(params)
		return nil, errors.New("not sent")
	})
	p.Handle("t.ping", func(context.Context, json.RawMessage) (any, error) { return "pong", nil })
	h := connected(t, p)
	h.send(msg{"method": "t.note", "params": msg{"a": 1}})
	if got := <-ran; got != `{"a":1}` {
		t.Fatalf("params %s", got)
	}
	h.request(1, "t.ping", msg{}) // the sentinel: its answer is the next message
	if a := h.next(""); a["id"] != float64(1) {
		t.Fatalf("a notification was answered: %v", a)
	}
}

// Streams ------------------------------------------------------------------------------------

func TestHandleStreamAnswersFirstEmitsThenClosesWithTheErrorText(t *testing.T) {
	p := New("exec")
	release := make(chan struct{})
	p.HandleStream("executor.execute_stream", func(ctx context.Context, _ json.RawMessage, e *Emitter) error {
		<-release
		if err := e.Emit(ctx, []byte("one")); err != nil {
			return err
		}
		return errors.New("upstream went away")
	})
	h := connected(t, p)
	h.request("hostd-1", "executor.execute_stream", msg{"stream_id": "S", "host_callback_id": "C"})
	if a := h.next(""); a["id"] != "hostd-1" || !jsonEqual(t, mustJSON(t, a["result"]), msg{}) {
		t.Fatalf("first message must be the answer {}: %v", a)
	}
	close(release)
	emit := h.next("host.stream.emit")
	if !jsonEqual(t, mustJSON(t, emit["params"]), msg{"stream_id": "S", "payload": "b25l"}) {
		t.Fatalf("emit %v", emit["params"])
	}
	h.answer(emit["id"], msg{})
	closeReq := h.next("host.stream.close")
	if !jsonEqual(t, mustJSON(t, closeReq["params"]), msg{"stream_id": "S", "error": "upstream went away"}) {
		t.Fatalf("close %v", closeReq["params"])
	}
	h.answer(closeReq["id"], msg{})
}

func TestHandleStreamWithoutStreamIDIsInvalidParams(t *testing.T) {
	p := New("exec")
	p.HandleStream("executor.execute_stream", func(context.Context, json.RawMessage, *Emitter) error { return nil })
	h := connected(t, p)
	h.request(1, "executor.execute_stream", msg{})
	if e := errorOf(t, h.next("")); e["code"] != float64(-32602) || e["message"] != "stream_id is required" {
		t.Fatalf("error %v", e)
	}
}

func TestModelStreamReadsToTheEndWithoutAnExtraClose(t *testing.T) {
	p := New("reader")
	h := connected(t, p)
	type out struct {
		data []byte
		err  error
	}
	done := make(chan out, 1)
	go func() {
		s, err := p.ModelExecuteStream(context.Background(), ModelRequest{EntryProtocol: "openai", Model: "m"})
		if err != nil {
			done <- out{nil, err}
			return
		}
		defer s.Close()
		data, err := io.ReadAll(s)
		done <- out{data, err}
	}()
	open := h.next("host.model.execute_stream")
	if open["params"].(msg)["stream"] != true {
		t.Fatalf("execute_stream params %v", open["params"])
	}
	h.answer(open["id"], msg{"status_code": 200, "headers": nil, "stream_id": "M"})
	for _, piece := range []string{"ab", "cd"} {
		r := h.next("host.model.stream_read")
		h.answer(r["id"], msg{"payload": base64.StdEncoding.EncodeToString([]byte(piece)), "error": "", "done": false})
	}
	r := h.next("host.model.stream_read")
	h.answer(r["id"], msg{"payload": nil, "error": "", "done": true})
	got := <-done
	if got.err != nil || string(got.data) != "abcd" {
		t.Fatalf("read %q, %v", got.data, got.err)
	}
	// Close after the end sends nothing: the next message is this sentinel call.
	go func() { _ = p.Log(context.Background(), LogEntry{Message: "sentinel"}) }()
	h.next("host.log")
}

func TestAStreamReadErrorComesBackAsStreamErrorAndTheStreamIsGone(t *testing.T) {
	p := New("reader")
	h := connected(t, p)
	errs := make(chan error, 2)
	go func() {
		s, err := p.HTTPDoStream(context.Background(), HTTPRequest{URL: "http://127.0.0.1/"})
		if err != nil {
			errs <- err
			return
		}
		defer s.Close()
		_, err = s.Next(context.Background())
		errs <- err
		_, err = s.Next(context.Background())
		errs <- err
	}()
	open := h.next("host.http.do_stream")
	h.answer(open["id"], msg{"status_code": 200, "stream_id": "H"})
	r := h.next("host.http.stream_read")
	h.answer(r["id"], msg{"error": "connection reset", "done": true})
	first, second := <-errs, <-errs
	var se *StreamError
	if !errors.As(first, &se) || se.Message != "connection reset" || second != first {
		t.Fatalf("errors %v, %v", first, second)
	}
	go func() { _ = p.Log(context.Background(), LogEntry{Message: "sentinel"}) }()
	h.next("host.log")
}

func TestCancellingAStreamReadClosesTheStream(t *testing.T) {
	p := New("reader")
	h := connected(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() {
		s, err := p.ModelExecuteStream(ctx, ModelRequest{EntryProtocol: "openai", Model: "m"})
		if err != nil {
			result <- err
			return
		}
		_, err = s.Next(ctx)
		result <- err
	}()
	open := h.next("host.model.execute_stream")
	h.answer(open["id"], msg{"status_code": 200, "stream_id": "M"})
	read := h.next("host.model.stream_read")
	cancel()
	if c := h.next("$/cancelRequest"); c["params"].(msg)["id"] != read["id"] {
		t.Fatalf("cancel %v", c)
	}
	closeReq := h.next("host.model.stream_close")
	if closeReq["params"].(msg)["stream_id"] != "M" {
		t.Fatalf("close %v", closeReq)
	}
	h.answer(closeReq["id"], msg{})
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next: %v", err)
	}
}
