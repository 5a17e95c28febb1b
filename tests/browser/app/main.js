// A tiny app built with Vite: it imports webr1 as any user would, loads the model named by `?model=` (the engine in its
// Web Worker, the default) and asks one question. package-users.test.mjs builds it, serves dist/ and reads #result.

import * as webr1 from 'webr1';

const status = document.querySelector('#status');
const result = document.querySelector('#result');

async function main() {
  const model = new URLSearchParams(location.search).get('model');
  const engine = await webr1.load(model, {
    contextLength: 128,
    cache: false,
    onProgress: (p) => (status.textContent = `${p.phase} ${p.loaded} / ${p.total}`),
  });
  const completion = await engine.chat.completions.create({
    messages: [{ role: 'user', content: 'What is the capital of France?' }],
    temperature: 0,
    max_tokens: 4,
  });
  const info = await engine.info();
  await engine.unload();
  return { choice: completion.choices[0], usage: completion.usage, token_ids: completion.token_ids, architecture: info.model.architecture };
}

main().then(
  (answer) => {
    result.textContent = JSON.stringify(answer);
    status.textContent = 'done';
  },
  (e) => {
    result.textContent = JSON.stringify({ error: { code: e.code, message: e.message } });
    status.textContent = 'failed';
  },
);
