// What to tell a person when something fails, by the error's stable `code` (webr1's JS errors carry one), and what
// they can do next. The app turns `actions` into buttons.
//
// An explanation: { title, text, list?: string[], actions: Action[] }, where an Action is one of
//   {kind: 'retry'} · {kind: 'reload'} (load the same model again) · {kind: 'pick'} (back to the model list) ·
//   {kind: 'model', model} (load a smaller catalogue model) · {kind: 'context', contextLength} (same model, less context)

import { formatBytes, smallerThan } from './models.js';

const BROWSERS = [
  'Chrome or Edge 113 or later on Windows, macOS and ChromeOS; Chrome 121 or later on Android 12+.',
  'On Linux, Chrome or Chromium with chrome://flags/#enable-unsafe-webgpu and chrome://flags/#enable-vulkan turned on.',
  'Safari 26 on macOS, iOS and iPadOS (Safari 18: Develop ▸ Feature Flags ▸ WebGPU).',
  'Firefox 141 or later on Windows; elsewhere Firefox Nightly, or dom.webgpu.enabled in about:config.',
];

/** Why there is no WebGPU here: `gpuPresent` is whether navigator.gpu exists at all. */
export function explainNoWebGpu({ gpuPresent, secure }) {
  let text;
  if (!secure) text = 'WebGPU only works on secure pages: open this site over https:// or from localhost.';
  else if (gpuPresent) {
    text =
      'This browser has WebGPU but offered no GPU to use. Hardware acceleration may be off in its settings, or the ' +
      'GPU may be blocked (in Chrome, chrome://gpu says why). These browsers run webr1:';
  } else text = 'webr1 runs the model on your graphics card through WebGPU, which this browser does not offer. Use one of these:';
  return { title: 'WebGPU is not available', text, list: BROWSERS, actions: [] };
}

/**
 * Explains an error from loading (`during: 'load'`) or generating (`during: 'chat'`).
 * `model`: the catalogue entry being loaded, if it is one; `models`: the catalogue; `contextLength`: the setting.
 */
export function explainError(error, { during, model = null, models = [], contextLength = 4096 }) {
  const code = String(error?.code ?? '');
  const detail = String(error?.message ?? error);
  if (code === 'webgpu.unavailable') return { ...explainNoWebGpu({ gpuPresent: true, secure: true }), detail };
  if (code === 'model.too_large' || code === 'gpu.out_of_memory') {
    const actions = [];
    if (contextLength > 2048) actions.push({ kind: 'context', contextLength: 2048 });
    const smaller = smallerThan(models, model?.bytes ?? Infinity).slice(0, 2);
    for (const m of smaller) actions.push({ kind: 'model', model: m });
    const what = model ? model.name : 'This model';
    const fit = smaller.length
      ? ` ${smaller[0].name} (${formatBytes(smaller[0].bytes)}) is the next smaller model.`
      : ' Close other tabs and programs that use the GPU, or try a smaller model.';
    return {
      title: 'Not enough GPU memory',
      text: `${what} with a context of ${contextLength} tokens needs more than this GPU can hold.${fit}`,
      detail,
      actions: [...actions, { kind: 'pick' }],
    };
  }
  if (code.startsWith('download.')) {
    return {
      title: 'The download failed',
      text: 'The model file could not be fetched completely. Check the connection and try again: what arrived is not kept half-done.',
      detail,
      actions: [{ kind: 'retry' }, { kind: 'pick' }],
    };
  }
  if (code === 'gpu.device_lost' || code === 'device.lost') {
    return {
      title: 'The GPU was reset',
      text:
        'The browser lost the GPU device (a driver reset, another program, or the system reclaiming memory). ' +
        'Your conversation is still here; load the model again to continue.',
      detail,
      actions: [{ kind: 'reload' }],
    };
  }
  if (code === 'context.full') {
    return {
      title: 'The conversation is longer than the context',
      text: `This chat no longer fits in ${contextLength} tokens. Start a new chat, or raise the context length in Settings and load the model again.`,
      detail,
      actions: [{ kind: 'new-chat' }, { kind: 'reload' }],
    };
  }
  if (/^(gguf|config|tokenizer|quant|chat)\./.test(code)) {
    return {
      title: during === 'load' ? 'webr1 cannot run this file' : 'This model cannot chat',
      text:
        'webr1 runs GGUF files of the qwen2 and llama architectures (the DeepSeek-R1 distills) with a chat template. ' +
        'Choose one of the models below, or another GGUF.',
      detail,
      actions: [{ kind: 'pick' }],
    };
  }
  return {
    title: during === 'load' ? 'The model did not load' : 'The answer stopped with an error',
    text: 'Something went wrong that webr1 did not expect.',
    detail: code ? `${code}: ${detail}` : detail,
    actions: during === 'load' ? [{ kind: 'retry' }, { kind: 'pick' }] : [{ kind: 'reload' }],
  };
}
