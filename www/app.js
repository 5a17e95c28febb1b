// The webr1 demo: pick a model, load it onto the GPU (the engine runs in a Web Worker, so the page stays responsive),
// and chat with it. State lives in `state`; the three views (picker, loading, chat) are sections of index.html.

import { loadCatalogue, formatBytes, gpuBytesNeeded, resolveModelUrl, byUrl } from './models.js';
import { explainError, explainNoWebGpu } from './errors.js';
import { Conversation, formatRate, h } from './chat.js';
import { bindSettings } from './settings.js';

const $ = (id) => document.getElementById(id);
const ui = {
  notice: $('notice'),
  picker: $('picker'),
  loading: $('loading'),
  chat: $('chat'),
  gpuLine: $('gpu-line'),
  modelList: $('model-list'),
  urlForm: $('url-form'),
  urlInput: $('url-input'),
  fileInput: $('file-input'),
  cacheLine: $('cache-line'),
  loadingTitle: $('loading-title'),
  loadProgress: $('load-progress'),
  loadDetail: $('load-detail'),
  cancelLoad: $('cancel-load'),
  messages: $('messages'),
  empty: $('empty'),
  form: $('prompt-form'),
  prompt: $('prompt'),
  send: $('send'),
  stop: $('stop'),
  status: $('status'),
  modelChip: $('model-chip'),
  newChat: $('new-chat'),
  dropOverlay: $('drop-overlay'),
};

const state = {
  webr1: null, // the npm package's module
  models: [], // the catalogue
  gpu: null, // what the main thread sees of the adapter, before any model loads
  engine: null,
  info: null, // engine.info() after loading
  source: null, // the model loaded (or being loaded): {kind: 'url', url, model} | {kind: 'files', files}
  loading: null, // AbortController of a load in progress
  generating: null, // AbortController of an answer in progress
  history: [], // [{role, content}] sent with each request; answers without their reasoning
  settings: null,
  updateSettings: null, // (partial) => settings, through the settings dialog's store
};

const conversation = new Conversation(ui.messages, $('main'));

// ---------------------------------------------------------------- views

function setView(view) {
  ui.picker.hidden = view !== 'picker';
  ui.loading.hidden = view !== 'loading';
  ui.chat.hidden = view !== 'chat';
  document.documentElement.dataset.view = view;
  const ready = Boolean(state.engine) && view === 'chat';
  ui.prompt.disabled = !ready;
  ui.send.disabled = !ready || Boolean(state.generating);
  ui.prompt.placeholder = ready ? 'Ask R1 anything (Enter sends, Shift+Enter for a new line)' : 'Load a model to start';
  ui.newChat.disabled = !ready;
}

function setStatus(text) {
  ui.status.textContent = text;
}

function hideNotice() {
  ui.notice.hidden = true;
  ui.notice.replaceChildren();
}

// Shows an explanation from errors.js, with a button per action.
function showNotice(explanation) {
  const body = [h('h2', { text: explanation.title }), h('p', { text: explanation.text })];
  if (explanation.list) body.push(h('ul', {}, explanation.list.map((item) => h('li', { text: item }))));
  if (explanation.detail) body.push(h('details', { class: 'detail' }, [h('summary', { text: 'Details' }), h('code', { text: explanation.detail })]));
  const buttons = (explanation.actions ?? []).map((action) => actionButton(action)).filter(Boolean);
  if (buttons.length) body.push(h('div', { class: 'actions' }, buttons));
  ui.notice.replaceChildren(...body);
  ui.notice.hidden = false;
  ui.notice.dataset.kind = explanation.title;
  (buttons[0] ?? ui.notice).focus?.();
}

function actionButton(action) {
  const button = (text, run, cls = '') => h('button', { type: 'button', class: cls, text, onclick: run });
  switch (action.kind) {
    case 'retry':
      return state.source && button('Try again', () => loadModel(state.source));
    case 'reload':
      return state.source && button('Reload the model', () => loadModel(state.source));
    case 'pick':
      return button('Choose another model', () => (hideNotice(), setView('picker')), 'ghost');
    case 'new-chat':
      return button('New chat', () => (hideNotice(), newChat()), 'ghost');
    case 'model':
      return button(`Load ${action.model.name}`, () => loadModel({ kind: 'url', url: action.model.url, model: action.model }));
    case 'context':
      return (
        state.source &&
        button(`Load with ${action.contextLength} tokens of context`, () => {
          state.updateSettings({ context_length: action.contextLength });
          loadModel(state.source);
        })
      );
    default:
      return null;
  }
}

// ---------------------------------------------------------------- the GPU and the model list

async function probeGpu() {
  const secure = window.isSecureContext;
  const gpu = navigator.gpu;
  if (!gpu) return { ok: false, gpuPresent: false, secure };
  let adapter = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch {
    adapter = null;
  }
  if (!adapter) return { ok: false, gpuPresent: true, secure };
  const info = adapter.info ?? {};
  const name = info.description || [info.vendor, info.architecture].filter(Boolean).join(' ') || 'WebGPU adapter';
  return { ok: true, name, f16: adapter.features.has('shader-f16'), subgroups: adapter.features.has('subgroups') };
}

/** "SwiftShader · no shader-f16 · f32 path". */
function describeGpu(name, f16, subgroups) {
  return [name, f16 ? 'shader-f16' : 'no shader-f16', subgroups ? 'subgroups' : null, f16 ? 'f16 path' : 'f32 path']
    .filter(Boolean)
    .join(' · ');
}

function renderModelList() {
  const ctx = state.settings.context_length;
  const f16 = state.gpu?.f16 ?? false;
  const canLoad = Boolean(state.gpu?.ok && state.webr1);
  ui.modelList.replaceChildren(
    ...state.models.map((m) => {
      const need = gpuBytesNeeded(m, ctx, f16);
      const title = h('span', { class: 'model-name' }, [m.name]);
      if (m.isDefault) title.append(h('span', { class: 'badge', text: 'Start here' }));
      const facts = `${m.quant} · ${formatBytes(m.bytes)} download · needs about ${formatBytes(need)} of GPU memory at ${ctx.toLocaleString('en')} tokens`;
      const button = h('button', { type: 'button', text: 'Load', 'aria-label': `Load ${m.name}` });
      button.disabled = !canLoad;
      button.addEventListener('click', () => loadModel({ kind: 'url', url: m.url, model: m }));
      return h('li', { class: 'model' }, [h('div', { class: 'model-text' }, [title, h('span', { class: 'facts', text: facts })]), button]);
    }),
  );
}

async function renderCacheLine() {
  const clear = state.webr1?.clearCache;
  if (!clear || !navigator.storage?.estimate) return ui.cacheLine.replaceChildren();
  const { usage = 0 } = await navigator.storage.estimate().catch(() => ({}));
  const text = `Downloaded models stay in this browser for next time (this site stores ${formatBytes(usage)}). `;
  const button = h('button', { type: 'button', class: 'link', text: 'Delete downloaded models' });
  button.addEventListener('click', async () => {
    if (!confirm('Delete every model this site downloaded? They will be downloaded again when you load them.')) return;
    await clear();
    renderCacheLine();
  });
  ui.cacheLine.replaceChildren(text, usage > 0 ? button : '');
}

// ---------------------------------------------------------------- loading

function progressView(source) {
  const upload = ui.loading.querySelector('[data-phase="upload"]');
  upload.textContent = source.kind === 'url' ? 'Download to the GPU' : 'Copy to the GPU';
  let last = null;
  let speed = 0;
  let frame = 0;
  let latest = null;
  const draw = () => {
    frame = 0;
    const p = latest;
    for (const li of ui.loading.querySelectorAll('.phases li')) {
      const order = ['header', 'upload', 'ready'];
      const at = order.indexOf(p.phase);
      const mine = order.indexOf(li.dataset.phase);
      li.className = mine < at ? 'done' : mine === at ? 'active' : '';
    }
    if (p.total > 0) ui.loadProgress.value = Math.min(1, p.loaded / p.total);
    else ui.loadProgress.removeAttribute('value');
    const parts = [p.total > 0 ? `${formatBytes(p.loaded)} of ${formatBytes(p.total)}` : formatBytes(p.loaded)];
    if (speed > 0) parts.push(`${formatBytes(speed)}/s`);
    if (speed > 0 && p.total > p.loaded && p.phase === 'upload') parts.push(`about ${duration((p.total - p.loaded) / speed)} left`);
    ui.loadDetail.textContent = parts.join(' · ');
  };
  return (p) => {
    const now = performance.now();
    if (last && last.phase === p.phase && now > last.t + 250) {
      const rate = ((p.loaded - last.loaded) * 1000) / (now - last.t);
      speed = speed ? 0.7 * speed + 0.3 * rate : rate;
      last = { t: now, loaded: p.loaded, phase: p.phase };
    } else if (!last || last.phase !== p.phase) last = { t: now, loaded: p.loaded, phase: p.phase };
    latest = p;
    frame ||= requestAnimationFrame(draw);
  };
}

function duration(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  return `${Math.round(seconds / 60)} min`;
}

function sourceName(source) {
  if (source.kind === 'url') return source.model?.name ?? decodeURIComponent(source.url.split('/').pop().split('?')[0]);
  return source.files[0].name;
}

async function loadModel(source) {
  if (!state.webr1 || state.loading) return;
  hideNotice();
  if (state.generating) state.generating.abort();
  if (state.engine) {
    const old = state.engine;
    state.engine = null;
    await old.unload().catch(() => {});
  }
  state.source = source;
  const controller = new AbortController();
  state.loading = controller;
  ui.loadingTitle.textContent = `Loading ${sourceName(source)}`;
  ui.loadProgress.value = 0;
  ui.loadDetail.textContent = 'Starting the engine…';
  ui.modelChip.hidden = true;
  for (const li of ui.loading.querySelectorAll('.phases li')) li.className = '';
  setView('loading');
  ui.cancelLoad.focus();
  setStatus('');
  const onProgress = progressView(source);
  const contextLength = state.settings.context_length;
  try {
    const what = source.kind === 'url' ? source.url : source.files.length === 1 ? source.files[0] : source.files;
    const engine = await state.webr1.load(what, { contextLength, onProgress, signal: controller.signal, worker: true });
    state.engine = engine;
    state.info = engine.loadInfo ?? (await engine.info());
    onReady(source);
  } catch (error) {
    setView('picker');
    if (error?.code !== 'aborted') {
      showNotice(explainError(error, { during: 'load', model: source.model ?? null, models: state.models, contextLength }));
    }
  } finally {
    state.loading = null;
    renderCacheLine();
  }
}

function onReady(source) {
  const info = state.info;
  for (const li of ui.loading.querySelectorAll('.phases li')) li.className = 'done';
  const gpu = describeGpu(info.adapter?.name || state.gpu?.name || 'GPU', info.features?.shader_f16, info.features?.subgroups);
  const name = sourceName(source);
  ui.modelChip.textContent = name;
  ui.modelChip.title = `${name} · ${gpu}`;
  ui.modelChip.hidden = false;
  const memory = info.gpu_bytes ? ` · ${formatBytes(info.gpu_bytes)} on the GPU` : '';
  setStatus(`${gpu}${memory} · context ${info.context_length?.toLocaleString('en') ?? '?'} tokens`);
  ui.gpuLine.textContent = `Your GPU: ${gpu}`;
  setView('chat');
  ui.empty.hidden = !conversation.isEmpty;
  ui.prompt.focus();
}

// ---------------------------------------------------------------- chatting

function setGenerating(controller) {
  state.generating = controller;
  ui.stop.hidden = !controller;
  ui.send.hidden = Boolean(controller);
  ui.send.disabled = Boolean(controller) || !state.engine;
  document.documentElement.dataset.generating = controller ? 'true' : 'false';
}

async function send(text) {
  text = text.trim();
  if (!text || !state.engine || state.generating) return;
  hideNotice();
  ui.prompt.value = '';
  autosize();
  ui.empty.hidden = true;
  conversation.addUser(text);
  state.history.push({ role: 'user', content: text });
  const view = conversation.addAssistant();
  const controller = new AbortController();
  setGenerating(controller);
  ui.stop.focus();
  const s = state.settings;
  const context = state.info?.context_length ?? s.context_length;
  let pieces = 0;
  let first = 0;
  let usage = null;
  let finish = null;
  try {
    const stream = await state.engine.chat.completions.create({
      messages: state.history,
      stream: true,
      temperature: s.temperature,
      top_p: s.top_p,
      max_tokens: Math.min(s.max_tokens, context),
      thinking_budget: s.thinking_budget > 0 ? s.thinking_budget : undefined,
      signal: controller.signal,
    });
    for await (const chunk of stream) {
      const choice = chunk.choices?.[0];
      const delta = choice?.delta ?? {};
      if (delta.reasoning_content || delta.content) {
        const now = performance.now();
        first ||= now;
        if (++pieces % 4 === 0) {
          const rate = ((pieces - 1) * 1000) / Math.max(1, now - first);
          view.showSpeed(rate);
          setStatus(`Generating · ${formatRate(rate)} tok/s`);
        }
      }
      if (delta.reasoning_content) view.appendReasoning(delta.reasoning_content);
      if (delta.content) view.appendContent(delta.content);
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    view.finish(usage, finish);
    setStatus(usage ? `Last answer: ${formatRate(usage.decode_tokens_per_second)} tok/s, prompt ${formatRate(usage.prefill_tokens_per_second)} tok/s` : '');
  } catch (error) {
    view.fail(error?.code === 'gpu.device_lost' ? 'The GPU was reset' : 'Stopped by an error');
    setStatus('');
    showNotice(explainError(error, { during: 'chat', models: state.models, contextLength: context }));
    if (error?.code === 'gpu.device_lost') state.engine = null;
  } finally {
    // The answer (as far as it got) stays part of the conversation, so that turns keep alternating.
    state.history.push({ role: 'assistant', content: view.content });
    setGenerating(null);
    setView('chat');
    if (state.engine) ui.prompt.focus();
  }
}

function stop() {
  state.generating?.abort();
}

function newChat() {
  stop();
  state.history = [];
  conversation.clear();
  ui.empty.hidden = false;
  hideNotice();
  if (state.engine) {
    setView('chat');
    ui.prompt.focus();
  }
}

function autosize() {
  ui.prompt.style.height = 'auto';
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, window.innerHeight * 0.4)}px`;
}

// ---------------------------------------------------------------- local files

function loadFiles(fileList) {
  const files = [...fileList].filter((f) => /\.gguf$/i.test(f.name)).sort((a, b) => a.name.localeCompare(b.name));
  if (files.length === 0) {
    showNotice({ title: 'Not a GGUF file', text: 'webr1 loads .gguf model files. Choose one, or one of the models listed.', actions: [] });
    return;
  }
  loadModel({ kind: 'files', files });
}

function bindDragAndDrop() {
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
  window.addEventListener('dragenter', (e) => {
    if (!hasFiles(e) || state.loading || !state.gpu?.ok) return;
    depth++;
    ui.dropOverlay.hidden = false;
  });
  window.addEventListener('dragleave', () => {
    if (--depth <= 0) {
      depth = 0;
      ui.dropOverlay.hidden = true;
    }
  });
  window.addEventListener('dragover', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  window.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    ui.dropOverlay.hidden = true;
    if (!state.loading && state.gpu?.ok && state.webr1) loadFiles(e.dataTransfer.files);
  });
}

// ---------------------------------------------------------------- start

function bindEvents() {
  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    send(ui.prompt.value);
  });
  ui.prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send(ui.prompt.value);
    }
  });
  ui.prompt.addEventListener('input', autosize);
  ui.stop.addEventListener('click', stop);
  document.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' || document.querySelector('dialog[open]')) return;
    if (state.generating) stop();
    else if (state.loading) state.loading.abort();
  });
  ui.cancelLoad.addEventListener('click', () => state.loading?.abort());
  ui.newChat.addEventListener('click', newChat);
  ui.modelChip.addEventListener('click', () => setView(ui.picker.hidden ? 'picker' : 'chat'));
  ui.urlForm.addEventListener('submit', (e) => {
    e.preventDefault();
    let url;
    try {
      url = new URL(resolveModelUrl(ui.urlInput.value), location.href).href;
    } catch (error) {
      showNotice({ title: 'That is not a model address', text: String(error.message ?? error), actions: [] });
      return;
    }
    loadModel({ kind: 'url', url, model: byUrl(state.models, url) });
  });
  ui.fileInput.addEventListener('change', () => {
    if (ui.fileInput.files.length) loadFiles(ui.fileInput.files);
    ui.fileInput.value = '';
  });
  for (const button of document.querySelectorAll('.suggestion')) {
    button.addEventListener('click', () => send(button.textContent));
  }
  bindDragAndDrop();
}

async function main() {
  const settings = bindSettings($('settings'), $('open-settings'), (changed) => {
    state.settings = changed;
    renderModelList();
  });
  state.settings = settings.settings;
  state.updateSettings = settings.update;
  bindEvents();
  setView('picker');
  const [gpu, models, webr1] = await Promise.all([
    probeGpu(),
    loadCatalogue().catch(() => []),
    import('../pkg/index.js').catch((error) => error),
  ]);
  state.gpu = gpu;
  state.models = models;
  if (webr1 instanceof Error) {
    showNotice({
      title: 'The webr1 package is missing',
      text: 'This page needs the built npm package next to it (../pkg). Build it with scripts/build-web.sh, then reload.',
      detail: String(webr1.message ?? webr1),
      actions: [],
    });
  } else state.webr1 = webr1;
  renderModelList();
  if (!gpu.ok) {
    ui.gpuLine.textContent = 'No WebGPU in this browser.';
    showNotice(explainNoWebGpu(gpu));
  } else {
    ui.gpuLine.textContent = `Your GPU: ${describeGpu(gpu.name, gpu.f16, gpu.subgroups)}`;
    renderCacheLine();
  }
  document.documentElement.dataset.booted = 'true';
}

main();
