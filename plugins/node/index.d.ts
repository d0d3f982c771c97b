// Types for hostd-plugin (index.mjs). Params use the protocol's key names (PROTOCOL.md §5–§13);
// byte fields take Bytes and come back as Buffers; headers are {name: [values]}.
import type { Buffer } from "node:buffer";

export declare const SCHEMA_VERSION: 3;
export declare const MAX_LINE_BYTES: number;
export declare const ErrorCodes: Readonly<{
  PARSE_ERROR: -32700;
  INVALID_REQUEST: -32600;
  METHOD_NOT_FOUND: -32601;
  INVALID_PARAMS: -32602;
  INTERNAL_ERROR: -32603;
  HOST_CALL_FAILED: -32000;
  LIMIT_EXCEEDED: -32001;
  FORBIDDEN: -32002;
  REQUEST_CANCELLED: -32800;
}>;

/** A Buffer, a Uint8Array, or a string (sent as its UTF-8 bytes). */
export type Bytes = Buffer | Uint8Array | string;
/** `{"Name": ["v1", "v2"]}`; a single string value is accepted and sent as a one-element list. */
export type Headers = Record<string, string[] | string>;
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface CallOptions {
  /** Aborting sends `$/cancelRequest` for the call and rejects it with an AbortError. */
  signal?: AbortSignal;
}

export declare class RpcError extends Error {
  constructor(code: number, message: string, data?: unknown);
  readonly name: "RpcError";
  code: number;
  data: any;
  static fromError(error: { code?: number; message?: string; data?: unknown }): RpcError;
  toError(): { code: number; message: string; data?: unknown };
}
export declare class AbortError extends Error {
  constructor(message?: string, options?: { cause?: unknown });
  readonly name: "AbortError";
  readonly code: "ABORT_ERR";
}
export declare class Disconnected extends Error {
  constructor(message?: string);
  readonly name: "Disconnected";
}
export declare class StreamError extends Error {
  constructor(message: string, streamId: string);
  readonly name: "StreamError";
  streamId: string;
}

export declare class LineSplitter {
  constructor(
    onLine: (line: Buffer) => void,
    options?: { maxLineBytes?: number; onOversize?: (bytes: number) => void },
  );
  push(chunk: Buffer): void;
}

// host.http.* ---------------------------------------------------------------------------------

export interface WireProfile {
  http1_only?: boolean;
  disable_auto_compression?: boolean;
  header_profile?: string[];
}
export interface HttpRequest {
  method?: string;
  url?: string;
  headers?: Headers;
  body?: Bytes;
  wire_profile?: WireProfile;
}
export interface HttpDoParams extends HttpRequest {
  /** When present, replaces the four top-level request fields. */
  request?: HttpRequest;
  host_callback_id?: string;
  operation_id?: string;
  [key: string]: unknown;
}
export interface HttpResponse {
  statusCode: number;
  headers: Record<string, string[]>;
  body: Buffer;
}
export interface StreamPiece {
  /** null at the end or on error. */
  payload: Buffer | null;
  error: string;
  done: boolean;
}

/** An open http or model stream: iterate with `for await`; leaving the loop early closes it. */
export declare class HostStream implements AsyncIterable<Buffer> {
  readonly streamId: string;
  readonly statusCode: number;
  readonly headers: Record<string, string[]>;
  readonly finished: boolean;
  /** The next piece, or null at the end; throws StreamError when the stream failed. */
  read(options?: CallOptions): Promise<Buffer | null>;
  /** `*.stream_close`: idempotent, never rejects. */
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined>;
}

export interface HttpApi {
  do(params: HttpDoParams, options?: CallOptions): Promise<HttpResponse>;
  doStream(params: HttpDoParams, options?: CallOptions): Promise<HostStream>;
  streamRead(params: { stream_id: string }, options?: CallOptions): Promise<StreamPiece>;
  streamClose(params: { stream_id: string }, options?: CallOptions): Promise<void>;
  /** Resolves to the operation_id. */
  operationOpen(params?: { host_callback_id?: string }, options?: CallOptions): Promise<string>;
  cancel(params: { operation_id: string; host_callback_id?: string }, options?: CallOptions): Promise<void>;
}

// host.model.* ---------------------------------------------------------------------------------

export type EntryProtocol = "openai" | "openai-response" | "claude" | "gemini";
export interface ModelParams {
  entry_protocol: EntryProtocol | string;
  exit_protocol?: string;
  model?: string;
  body?: Bytes;
  headers?: Headers;
  query?: Headers;
  alt?: string;
  host_callback_id?: string;
  forced_provider?: string;
  auth_id?: string;
  proxy_url?: string;
  path?: string;
  [key: string]: unknown;
}
export interface ModelResponse {
  statusCode: number;
  headers: Record<string, string[]>;
  body: Buffer;
}
export interface ModelApi {
  /** `stream` is set to false for you. */
  execute(params: ModelParams, options?: CallOptions): Promise<ModelResponse>;
  /** `stream` is set to true for you. */
  executeStream(params: ModelParams, options?: CallOptions): Promise<HostStream>;
  streamRead(params: { stream_id: string }, options?: CallOptions): Promise<StreamPiece>;
  streamClose(params: { stream_id: string }, options?: CallOptions): Promise<void>;
}

// host.auth.* ----------------------------------------------------------------------------------

export interface AuthEntry {
  id: string;
  auth_index: string;
  name: string;
  type?: string;
  provider?: string;
  label?: string;
  status?: string;
  disabled?: boolean;
  source?: string;
  path?: string;
  size?: number;
  email?: string;
  project_id?: string;
  note?: string;
  priority?: number;
  websockets?: boolean;
  modtime: string;
  updated_at: string;
  last_refresh: string;
  created_at: string;
  next_retry_after: string;
  [key: string]: unknown;
}
export interface AuthApi {
  /** The `files` of host.auth.list (never null). */
  list(params?: Record<string, never>, options?: CallOptions): Promise<AuthEntry[]>;
  get(
    params: { auth_index: string },
    options?: CallOptions,
  ): Promise<{ auth_index: string; name: string; path: string; json: { [key: string]: Json } }>;
  /** The `auth` entry of host.auth.get_runtime. */
  getRuntime(params: { auth_index: string }, options?: CallOptions): Promise<AuthEntry>;
  /** `json` as an object, or as JSON text (a string or Buffer) that hostd writes byte for byte. */
  save(params: { name: string; json: object | string | Buffer }, options?: CallOptions): Promise<{ name: string; path: string }>;
}

// host.stream.*, host.affinity.*, host.routing.* ------------------------------------------------

export interface StreamApi {
  emit(params: { stream_id: string; payload?: Bytes; error?: string }, options?: CallOptions): Promise<void>;
  close(params: { stream_id: string; error?: string }, options?: CallOptions): Promise<void>;
}
export interface AffinityApi {
  lookup(params: { provider: string; model: string; session_id: string }, options?: CallOptions): Promise<any>;
}
export interface RoutingApi {
  resetCooldown(params: { auth_index: string }, options?: CallOptions): Promise<any>;
}

export interface LogParams {
  /** trace, debug, info (default), warn, error. */
  level?: string;
  message: string;
  fields?: Record<string, unknown>;
  host_callback_id?: string;
}

// Serving ----------------------------------------------------------------------------------

export interface HandlerContext {
  /** Aborted by hostd's `$/cancelRequest` for this call, and when the session ends. */
  signal: AbortSignal;
  id: string | number | undefined;
  method: string;
  plugin: Plugin;
}
export type Handler = (params: any, context: HandlerContext) => unknown | Promise<unknown>;

/** The writing end of an emit stream. */
export declare class Emitter {
  readonly streamId: string;
  readonly closed: boolean;
  emit(payload: Bytes, options?: { error?: string; signal?: AbortSignal }): Promise<void>;
  close(options?: { error?: string }): Promise<void>;
}
export type Producer = (params: any, emitter: Emitter, context: { signal: AbortSignal }) => Promise<void> | void;

export interface Hello {
  server: string;
  version: string;
  schema_version: number;
  session: string;
  methods: string[];
  limits: Record<string, number>;
}

export interface PluginOptions {
  /** `stdio` or `unix:PATH`; default `$HOSTD_SOCKET`, else `stdio` (then stdout is protected at once). */
  address?: string;
  maxLineBytes?: number;
}

export declare class Plugin {
  constructor(pluginId: string, options?: PluginOptions);
  readonly pluginId: string;
  /** hostd.hello's answer, once connected. */
  hello: Hello | null;
  /** Aborted when the session ends. */
  readonly signal: AbortSignal;
  readonly connected: boolean;

  readonly http: HttpApi;
  readonly model: ModelApi;
  readonly auth: AuthApi;
  readonly stream: StreamApi;
  readonly affinity: AffinityApi;
  readonly routing: RoutingApi;

  handle(method: string, handler: Handler): this;
  executor(method: string, producer: Producer, options?: { answer?: unknown }): this;
  spawn(fn: (signal: AbortSignal) => unknown): Promise<void>;
  run(options?: { address?: string; onReady?: (plugin: Plugin) => unknown }): Promise<void>;
  stop(): void;
  call(method: string, params?: Record<string, unknown>, options?: CallOptions): Promise<any>;
  notify(method: string, params?: Record<string, unknown>): void;
  log(params: LogParams, options?: CallOptions): Promise<void>;
}
