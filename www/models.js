// The model catalogue (models.json, shared with the CLI) and the arithmetic the picker shows: sizes, GPU memory,
// Hugging Face names.

/** Reads the catalogue; `url` is where models.json is served. */
export async function loadCatalogue(url = new URL('./models.json', import.meta.url)) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`models.json: HTTP ${response.status}`);
  const catalogue = await response.json();
  return catalogue.models.map((m) => ({ ...m, isDefault: m.id === catalogue.default }));
}

/** Bytes of the KV cache for `contextLength` tokens: keys and values, f16 where the GPU has shader-f16, else f32. */
export function kvCacheBytes(shape, contextLength, f16) {
  return 2 * shape.n_layer * shape.n_head_kv * shape.head_dim * contextLength * (f16 ? 2 : 4);
}

/**
 * GPU memory a catalogue model needs: its weights (kept quantised), the KV cache, and working buffers (logits over
 * the vocabulary for a prefill batch and activations; an estimate, a few percent of the total).
 */
export function gpuBytesNeeded(model, contextLength, f16) {
  const working = 64 * 2 ** 20 + model.shape.n_vocab * 4 * 64;
  return model.bytes + kvCacheBytes(model.shape, contextLength, f16) + working;
}

/** "1.1 GB", "512 MB", "980 kB": decimal units, as download sizes are usually written. */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '?';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = bytes;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** "hf:owner/repo/path/file.gguf" → its resolve URL (as the CLI reads it); other text is returned trimmed. */
export function resolveModelUrl(text) {
  const spec = text.trim();
  if (!spec.startsWith('hf:')) return spec;
  const parts = spec.slice(3).split('/').filter(Boolean);
  if (parts.length < 3) throw new Error(`"${spec}" is not a Hugging Face file: write hf:OWNER/REPO/FILE.gguf`);
  const [owner, repo, ...file] = parts;
  return `https://huggingface.co/${owner}/${repo}/resolve/main/${file.join('/')}`;
}

/** The catalogue models smaller than `bytes`, largest first (what to suggest when a model does not fit). */
export function smallerThan(models, bytes) {
  return models.filter((m) => m.bytes < bytes).sort((a, b) => b.bytes - a.bytes);
}

/** The catalogue entry whose URL is `url`, if any. */
export function byUrl(models, url) {
  return models.find((m) => m.url === url) ?? null;
}
