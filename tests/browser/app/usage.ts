// How a TypeScript user of webr1 writes a chat page. package-users.test.mjs type-checks this file (tsc --noEmit, strict)
// against the index.d.ts of the packed and installed package; it is not run. Each annotation below states a type the
// user relies on, so a declaration that drifts to `any` or to another shape makes tsc fail here or in type-errors.ts.

import * as webr1 from 'webr1';
import type { ChatCompletion, ChatCompletionChunk, ChatMessage, EngineInfo, FinishReason, LoadProgress, Webr1Error } from 'webr1';

// webr1 rejects with an Error that carries a stable `code`.
function isWebr1Error(e: unknown): e is Webr1Error {
  return e instanceof Error && 'code' in e && typeof e.code === 'string';
}

function explain(e: unknown): string {
  if (!isWebr1Error(e)) return String(e);
  switch (e.code) {
    case 'webgpu.unavailable':
      return 'This browser has no WebGPU.';
    case 'model.too_large':
      return `The model does not fit this GPU: ${e.message}`;
    case 'aborted':
      return 'Loading was cancelled.';
    case 'download.http':
    case 'download.failed':
    case 'download.interrupted':
      return `The download failed: ${e.message}`;
    default:
      // Families of codes: gguf.*, config.*, tokenizer.*, …
      return e.code.startsWith('gguf.') ? `Not a usable GGUF file: ${e.message}` : `${e.code}: ${e.message}`;
  }
}

export async function loadModel(url: string, bar: HTMLProgressElement, cancel: HTMLButtonElement): Promise<webr1.Engine | null> {
  const controller = new AbortController();
  cancel.onclick = () => controller.abort();
  try {
    return await webr1.load(url, {
      contextLength: 4096,
      signal: controller.signal,
      onProgress: (p: LoadProgress) => {
        if (p.phase === 'upload' && p.total > 0) bar.value = p.loaded / p.total;
      },
    });
  } catch (e) {
    console.error(explain(e));
    return null;
  }
}

// A model the user picked from disk, run on the page's own thread.
export function loadPicked(input: HTMLInputElement): Promise<webr1.Engine> {
  const files: File[] = Array.from(input.files ?? []);
  return webr1.load(files.length === 1 ? files[0] : files, { worker: false, cache: false, forceF32: true });
}

// Streams the reasoning and the answer into two elements; resolves to how the generation ended.
export async function streamAnswer(
  engine: webr1.Engine,
  messages: ChatMessage[],
  thinking: HTMLElement,
  answer: HTMLElement,
  signal: AbortSignal,
): Promise<FinishReason | null> {
  const stream: AsyncIterable<ChatCompletionChunk> = await engine.chat.completions.create({
    messages,
    stream: true,
    temperature: 0.6,
    top_p: 0.95,
    max_tokens: 2048,
    thinking_budget: 1024,
    stop: ['</answer>'],
    signal,
  });
  let finish: FinishReason | null = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice.delta.reasoning_content) thinking.textContent += choice.delta.reasoning_content;
    if (choice.delta.content) answer.textContent += choice.delta.content;
    if (choice.finish_reason !== null) finish = choice.finish_reason;
    if (chunk.usage) {
      const reasoning: number = chunk.usage.completion_tokens_details.reasoning_tokens;
      console.log(`${chunk.usage.completion_tokens} tokens (${reasoning} reasoning) at ${chunk.usage.decode_tokens_per_second.toFixed(1)} tok/s`);
    }
  }
  return finish;
}

// One answer, not streamed, continuing a conversation (its prefix is reused from the KV cache).
export async function ask(engine: webr1.Engine, history: ChatMessage[], question: string): Promise<string> {
  history.push({ role: 'user', content: [{ type: 'text', text: question }] });
  const completion: ChatCompletion = await engine.chat.completions.create({ messages: history, temperature: 0, seed: 1, max_tokens: 256 });
  const choice = completion.choices[0];
  const reasoning: string = choice.message.reasoning_content;
  const content: string = choice.message.content ?? '';
  history.push({ role: 'assistant', content });
  const cached: number = completion.usage.prompt_tokens_details.cached_tokens;
  console.log(`finish ${choice.finish_reason}, ${completion.usage.prompt_tokens} prompt tokens (${cached} cached), ${reasoning.length} characters of reasoning`);
  return choice.finish_reason === 'length' ? `${content}…` : content;
}

export async function describe(engine: webr1.Engine): Promise<string> {
  const info: EngineInfo = await engine.info();
  const f16: boolean = info.features.shader_f16;
  const heapMiB = info.wasm_memory_peak_during_load / 2 ** 20;
  return `${engine.model}: ${info.model.architecture}, ${info.model.n_layer} layers, context ${info.context_length}, on ${info.adapter.name}` +
    ` (f16 ${f16}), ${(info.gpu_bytes / 2 ** 30).toFixed(2)} GiB on the GPU, wasm heap peak ${heapMiB.toFixed(0)} MiB`;
}

export async function finish(engine: webr1.Engine): Promise<void> {
  await engine.unload();
  await webr1.clearCache();
}

// Structured output: an answer valid for a schema, and a tool call answered with a tool message.
export async function weatherAgent(engine: webr1.Engine, city: string): Promise<string | null> {
  const tools: webr1.FunctionTool[] = [
    {
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'The weather in a city.',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    },
  ];
  const messages: ChatMessage[] = [{ role: 'user', content: `Weather in ${city}?` }];
  const first: ChatCompletion = await engine.chat.completions.create({ messages, tools, tool_choice: 'auto', parallel_tool_calls: false });
  const calls: webr1.ToolCall[] = first.choices[0].message.tool_calls ?? [];
  if (first.choices[0].finish_reason === 'tool_calls') {
    messages.push({ role: 'assistant', content: null, tool_calls: calls });
    for (const call of calls) {
      const args: { city: string } = JSON.parse(call.function.arguments);
      messages.push({ role: 'tool', tool_call_id: call.id, content: `Sunny in ${args.city}` });
    }
  }
  const format: webr1.ResponseFormat = {
    type: 'json_schema',
    json_schema: { name: 'report', schema: { type: 'object', properties: { summary: { type: 'string' } }, required: ['summary'] } },
  };
  const last: ChatCompletion = await engine.chat.completions.create({ messages, response_format: format });
  const content: string | null = last.choices[0].message.content;
  return content === null ? null : (JSON.parse(content) as { summary: string }).summary;
}
