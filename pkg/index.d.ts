/** Error codes webr1 gives `Error.code` (the full table is in webr1's src/error.rs). */
export type Webr1ErrorCode =
  | 'webgpu.unavailable'
  | 'model.too_large'
  | 'download.failed'
  | 'download.http'
  | 'download.verify'
  | 'download.interrupted'
  | 'aborted'
  | 'gpu.out_of_memory'
  | 'gpu.device_lost'
  | 'gpu.device'
  | 'gpu.limits'
  | 'gpu.validation'
  | 'context.full'
  | 'io.is_directory'
  | 'io.not_a_file'
  | 'chat.no_template'
  | 'chat.template'
  | 'chat.bad_messages'
  | 'structured.schema'
  | 'structured.grammar'
  | 'structured.dead_end'
  | 'tools.invalid'
  | 'usage'
  | `gguf.${string}`
  | `config.${string}`
  | `tokenizer.${string}`
  | `quant.${string}`
  | `io.${string}`;

/** Every error webr1 throws or rejects with. */
export interface Webr1Error extends Error {
  name: 'Webr1Error';
  code: Webr1ErrorCode;
}

export interface LoadProgress {
  /** `header` while the GGUF headers are read, then `upload` while the weights go to the GPU. */
  phase: 'header' | 'upload';
  /** Bytes done: of the file being read (`header`), or of all tensor data (`upload`). */
  loaded: number;
  /** The bytes in all (0 when not known yet). */
  total: number;
}

/** A size in bytes: a number, or a string with a suffix, K/M/G/T (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024). */
export type ByteSize = number | `${number}${'' | 'B' | 'K' | 'KB' | 'M' | 'MB' | 'G' | 'GB' | 'T' | 'TB' | 'KiB' | 'MiB' | 'GiB' | 'TiB'}`;

export interface LoadOptions {
  /**
   * Tokens of context to allocate, at most the model's own (a longer one is a `usage` error). Default: the largest
   * that fits the GPU's limits and `gpuMemory`, up to the model's own context and 8192.
   */
  contextLength?: number;
  /**
   * GPU memory the model may use in all (weights, KV cache, activations), e.g. `'4GiB'`. A model and context that
   * need more are refused before any weight is uploaded (code `model.too_large`, naming the numbers); with no
   * `contextLength`, the context is the largest that fits. 0, negative or malformed is a `usage` error.
   */
  gpuMemory?: ByteSize;
  /** Cap one storage binding below the GPU's `maxStorageBufferBindingSize` (e.g. `'128MiB'`, as on many phones): larger weights are split across more buffers. */
  maxStorageBufferBindingSize?: ByteSize;
  /** Cap one buffer below the GPU's `maxBufferSize` (e.g. `'256MiB'`). */
  maxBufferSize?: ByteSize;
  onProgress?: (progress: LoadProgress) => void;
  /** Cancels the load (it rejects with code `aborted`). */
  signal?: AbortSignal;
  /** Run the engine in a Web Worker (default true); false runs it on the calling thread. */
  worker?: boolean;
  /** Cache downloaded models in the origin private file system (default true). */
  cache?: boolean;
  /** Use the f32 kernels even where the GPU offers shader-f16 and subgroups. */
  forceF32?: boolean;
  /** Where webr1_bg.wasm is, when the app or a bundler moved it (relative to the page). */
  wasmUrl?: string | URL;
  /** Where worker.js is, when the app or a bundler moved it (relative to the page). */
  workerUrl?: string | URL;
}

export type ContentPart = { type: 'text'; text: string };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  content: string | ContentPart[] | null;
  /** An assistant message: the calls it made (from an earlier answer's `message.tool_calls`). */
  tool_calls?: ToolCall[];
  /** A `tool` message: the id of the call whose result `content` is. */
  tool_call_id?: string;
}

/** A JSON schema (draft 2020-12; llguidance's supported keywords). */
export type JsonSchema = Record<string, unknown> | boolean;

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; json_schema: { name: string; schema?: JsonSchema; strict?: boolean | null; description?: string } };

export interface FunctionTool {
  type: 'function';
  function: {
    /** 1 to 64 letters, digits, '_' or '-'. */
    name: string;
    description?: string;
    /** The JSON schema of the arguments (an object); a call's arguments always match it. */
    parameters?: JsonSchema;
    strict?: boolean | null;
  };
}

export type ToolChoice = 'auto' | 'none' | 'required' | { type: 'function'; function: { name: string } };

export interface ToolCall {
  id: string;
  type: 'function';
  /** `arguments` is a JSON text. */
  function: { name: string; arguments: string };
}

/** A streamed piece of a tool call: the first of call `index` has its `id`, `type` and `name`. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: 'function';
  function: { name?: string; arguments: string };
}

export interface ChatCompletionParams {
  messages?: ChatMessage[];
  /** webr1: token ids to continue instead of `messages` (a raw prompt, no chat template). */
  prompt_ids?: number[];
  /** webr1: with `prompt_ids`, the prompt ends inside `<think>`. */
  starts_in_reasoning?: boolean;
  stream?: boolean;
  /** 0 is greedy. Default 0.6, as DeepSeek recommends for R1. */
  temperature?: number;
  /** Default 0.95. */
  top_p?: number;
  /** 0 (default) is off. */
  top_k?: number;
  min_p?: number;
  /** Tokens to generate at most, reasoning and answer together. */
  max_tokens?: number;
  max_completion_tokens?: number;
  stop?: string | string[];
  seed?: number;
  /** After this many reasoning tokens webr1 closes the reasoning (`</think>`) and the answer follows. */
  thinking_budget?: number;
  /** Stops the generation: it finishes with `finish_reason: "abort"`. */
  signal?: AbortSignal;
  /** The answer (after the reasoning) as JSON: any object, or valid for a schema. */
  response_format?: ResponseFormat;
  /** webr1: the answer matches this Lark grammar (llguidance's syntax). */
  grammar?: string;
  /** webr1: the answer matches this regular expression. */
  regex?: string;
  /** Functions the model may call; their calls come back in `message.tool_calls`. */
  tools?: FunctionTool[];
  /** Default `auto`; `required` or a named function makes the answer a call. */
  tool_choice?: ToolChoice;
  /** More than one call in an answer (default true). */
  parallel_tool_calls?: boolean;
}

export type FinishReason = 'stop' | 'length' | 'abort' | 'tool_calls';

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
  completion_tokens_details: { reasoning_tokens: number };
  prefill_tokens_per_second: number;
  decode_tokens_per_second: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    /** `content` is null when the answer is only tool calls. */
    message: { role: 'assistant'; content: string | null; reasoning_content: string; tool_calls?: ToolCall[] };
    logprobs: null;
    finish_reason: FinishReason;
  }>;
  usage: CompletionUsage;
  /** webr1: the generated token ids (an end-of-generation token excluded). */
  token_ids: number[];
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: Array<{
    index: 0;
    delta: { role?: 'assistant'; content?: string; reasoning_content?: string; tool_calls?: ToolCallDelta[] };
    logprobs: null;
    finish_reason: FinishReason | null;
  }>;
  /** On the last chunk. */
  usage?: CompletionUsage;
  /** webr1, on the last chunk: the generated token ids. */
  token_ids?: number[];
}

/** What loading a model allocates on the GPU, planned from its header before any upload (bytes). */
export interface MemoryPlan {
  /** Weights, KV cache, activations and scratch: what generation allocates at most. */
  total: number;
  weights: number;
  weight_buffers: number;
  /** Weights larger than one binding, split by rows across `parts` buffers. */
  split_weights: Array<{ name: string; type: string; bytes: number; parts: number }>;
  kv_cache: number;
  kv_type: 'f16' | 'f32';
  context_length: number;
  activations: number;
  scratch: number;
  largest_buffer: number;
  max_binding_bytes: number;
  max_buffer_bytes: number;
  /** `gpuMemory`, when given. */
  budget: number | null;
}

export interface EngineInfo {
  model: {
    architecture: string;
    name: string | null;
    n_vocab: number;
    n_embd: number;
    n_layer: number;
    n_head: number;
    n_head_kv: number;
    n_ff: number;
    context_length: number;
    has_chat_template: boolean;
  };
  context_length: number;
  adapter: { name: string; backend: string };
  features: { shader_f16: boolean; subgroups: boolean; adapter_shader_f16: boolean; adapter_subgroups: boolean };
  /** The device's limits, and the caps webr1 works under (the device's, lowered by the load options). */
  limits: { max_buffer_size: number; max_storage_buffer_binding_size: number; binding_cap: number; buffer_cap: number };
  /** Bytes of GPU buffers webr1 created, how many, the largest range bound to a kernel and the largest buffer. */
  gpu_bytes: number;
  gpu_buffers: number;
  largest_binding: number;
  largest_buffer: number;
  /** The memory plan the model was loaded with (bytes). */
  plan: MemoryPlan;
  /** The wasm heap now, and its peak while the model loaded. */
  wasm_memory_bytes: number;
  wasm_memory_peak_during_load: number;
}

export interface Completions {
  create(params: ChatCompletionParams & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
  create(params: ChatCompletionParams & { stream?: false }): Promise<ChatCompletion>;
  create(params: ChatCompletionParams): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
}

export declare class Engine {
  private constructor();
  /** The model's file name. */
  readonly model: string;
  /** `info()` as it was right after loading. */
  readonly loadInfo: EngineInfo;
  readonly chat: { completions: Completions };
  info(): Promise<EngineInfo>;
  /**
   * Loads the model again onto a new GPU device after the device was lost (calls then reject with
   * `gpu.device_lost`), without reloading the page; resolves to the new `info()`. A URL is read from the cache when the
   * model was cached. Runs after the request in progress.
   */
  reload(options?: { onProgress?: (progress: LoadProgress) => void }): Promise<EngineInfo>;
  /** Frees the GPU memory (and the worker); the engine cannot be used afterwards. */
  unload(): Promise<void>;
}

/** Loads a GGUF model from a URL, a File or Blob, or the Files of a split model (in order). */
export declare function load(model: string | URL | Blob | Blob[], options?: LoadOptions): Promise<Engine>;

/** Removes every model cached by webr1 in this origin. */
export declare function clearCache(): Promise<void>;
