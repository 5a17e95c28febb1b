// The Web Worker entry: runs the engine off the main thread and answers the messages of index.js.
//   in:  {id, type: 'load', model, options} | {id, type: 'generate', request} | {type: 'abort'} |
//        {type: 'abort-load'} | {id, type: 'info'} | {id, type: 'reload'} | {id, type: 'unload'} |
//        {type: 'lose-device'} (a test hook)
//   out: {id, type: 'progress', progress} | {id, type: 'event', event} | {id, type: 'result', value} |
//        {id, type: 'error', error: {code, message}}

import { loadCore } from './src/core.js';
import { serialize } from './src/errors.js';

let engine = null;
let loading = null;

async function handle(id, data) {
  switch (data.type) {
    case 'load':
      loading = new AbortController();
      engine = await loadCore(data.model, data.options, (progress) => self.postMessage({ id, type: 'progress', progress }), loading.signal);
      loading = null;
      return engine.info();
    case 'info':
      return engine.info();
    case 'reload':
      await engine.reload((progress) => self.postMessage({ id, type: 'progress', progress }));
      return engine.info();
    case 'generate':
      return engine.generate(data.request, (event) => self.postMessage({ id, type: 'event', event }));
    case 'unload':
      engine?.unload();
      engine = null;
      return null;
    default:
      throw Object.assign(new Error(`unknown message ${data.type}`), { code: 'usage' });
  }
}

self.onmessage = async ({ data }) => {
  if (data.type === 'abort') return engine?.abort();
  if (data.type === 'abort-load') return loading?.abort();
  if (data.type === 'lose-device') return engine?.loseDevice();
  try {
    const value = await handle(data.id, data);
    self.postMessage({ id: data.id, type: 'result', value });
  } catch (error) {
    self.postMessage({ id: data.id, type: 'error', error: serialize(error) });
  }
};
