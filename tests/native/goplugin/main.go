// A CLIProxyAPI native plugin built with -buildmode=c-shared (standard library only) for hostd's
// worker tests: management.handle calls host.log from several goroutines at once and returns what
// each call got back.
package main

/*
#include <stdint.h>
#include <stdlib.h>

typedef struct { void* ptr; size_t len; } cliproxy_buffer;
typedef int (*cliproxy_host_call_fn)(void*, const char*, const uint8_t*, size_t, cliproxy_buffer*);
typedef void (*cliproxy_host_free_fn)(void*, size_t);
typedef struct {
	uint32_t abi_version;
	void* host_ctx;
	cliproxy_host_call_fn call;
	cliproxy_host_free_fn free_buffer;
} cliproxy_host_api;
typedef int (*cliproxy_plugin_call_fn)(char*, uint8_t*, size_t, cliproxy_buffer*);
typedef void (*cliproxy_plugin_free_fn)(void*, size_t);
typedef void (*cliproxy_plugin_shutdown_fn)(void);
typedef struct {
	uint32_t abi_version;
	cliproxy_plugin_call_fn call;
	cliproxy_plugin_free_fn free_buffer;
	cliproxy_plugin_shutdown_fn shutdown;
} cliproxy_plugin_api;

extern int goPluginCall(char*, uint8_t*, size_t, cliproxy_buffer*);
extern void goPluginFree(void*, size_t);
extern void goPluginShutdown(void);

static const cliproxy_host_api* stored_host;
static void store_host(const cliproxy_host_api* host) { stored_host = host; }
static int call_host(const char* method, const uint8_t* req, size_t len, cliproxy_buffer* resp) {
	return stored_host->call(stored_host->host_ctx, method, req, len, resp);
}
static void free_host(void* ptr, size_t len) { stored_host->free_buffer(ptr, len); }
static void fill_table(cliproxy_plugin_api* plugin) {
	plugin->abi_version = 1;
	plugin->call = (cliproxy_plugin_call_fn)goPluginCall;
	plugin->free_buffer = (cliproxy_plugin_free_fn)goPluginFree;
	plugin->shutdown = (cliproxy_plugin_shutdown_fn)goPluginShutdown;
}
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"sync"
	"unsafe"
)

func main() {}

//export cliproxy_plugin_init
func cliproxy_plugin_init(host *C.cliproxy_host_api, plugin *C.cliproxy_plugin_api) C.int {
	C.store_host(host)
	C.fill_table(plugin)
	return 0
}

func callHost(method string, request []byte) (int, []byte) {
	cMethod := C.CString(method)
	defer C.free(unsafe.Pointer(cMethod))
	cReq := C.CBytes(request)
	defer C.free(cReq)
	var resp C.cliproxy_buffer
	rc := C.call_host(cMethod, (*C.uint8_t)(cReq), C.size_t(len(request)), &resp)
	var out []byte
	if resp.ptr != nil {
		out = C.GoBytes(resp.ptr, C.int(resp.len))
		C.free_host(resp.ptr, resp.len)
	}
	return int(rc), out
}

type envelope struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
}

func handle(method string, request []byte) []byte {
	switch method {
	case "plugin.register", "plugin.reconfigure":
		return []byte(`{"ok":true,"result":{"schema_version":1,"metadata":{"Name":"go-native-test"},"capabilities":{"management_api":true}}}`)
	case "management.handle":
		var params struct {
			N              int    `json:"n"`
			Rounds         int    `json:"rounds"`
			HostCallbackID string `json:"host_callback_id"`
		}
		_ = json.Unmarshal(request, &params)
		if params.Rounds < 1 {
			params.Rounds = 1
		}
		results := make([]json.RawMessage, params.N)
		var wg sync.WaitGroup
		for i := 0; i < params.N; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for round := 0; round < params.Rounds; round++ {
					req, _ := json.Marshal(map[string]any{
						"level":            "info",
						"message":          fmt.Sprintf("goroutine %d", i),
						"host_callback_id": params.HostCallbackID,
					})
					rc, out := callHost("host.log", req)
					var env envelope
					if rc != 0 || json.Unmarshal(out, &env) != nil || !env.OK {
						results[i] = json.RawMessage(`"failed"`)
						return
					}
					results[i] = env.Result
				}
			}(i)
		}
		wg.Wait()
		fmt.Println("go plugin: management.handle done") // fmt.Println goes to fd 1: the worker's stderr
		raw, _ := json.Marshal(map[string]any{"ok": true, "result": map[string]any{"results": results}})
		return raw
	case "crash.panic":
		var m map[string]int
		m["x"] = 1 // a nil map write panics; in a c-shared library Go's runtime then aborts the process
		return nil
	default:
		return []byte(`{"ok":false,"error":{"code":"unknown_method","message":"unknown method: ` + method + `"}}`)
	}
}

//export goPluginCall
func goPluginCall(method *C.char, request *C.uint8_t, length C.size_t, response *C.cliproxy_buffer) C.int {
	out := handle(C.GoString(method), C.GoBytes(unsafe.Pointer(request), C.int(length)))
	response.ptr = C.CBytes(out)
	response.len = C.size_t(len(out))
	return 0
}

//export goPluginFree
func goPluginFree(ptr unsafe.Pointer, length C.size_t) { C.free(ptr) }

//export goPluginShutdown
func goPluginShutdown() {}
