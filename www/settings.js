// Generation settings: R1's recommended defaults, kept in localStorage, edited in the settings dialog.

const KEY = 'webr1.settings';

export const DEFAULTS = Object.freeze({
  temperature: 0.6,
  top_p: 0.95,
  max_tokens: 4096,
  thinking_budget: 0,
  context_length: 4096,
});

const LIMITS = {
  temperature: [0, 2],
  top_p: [0.01, 1],
  max_tokens: [1, 131072],
  thinking_budget: [0, 131072],
  context_length: [256, 131072],
};

function clean(values) {
  const out = { ...DEFAULTS };
  for (const [key, [lo, hi]] of Object.entries(LIMITS)) {
    const v = Number(values?.[key]);
    if (values?.[key] !== undefined && values[key] !== '' && Number.isFinite(v)) out[key] = Math.min(hi, Math.max(lo, v));
  }
  for (const key of ['max_tokens', 'thinking_budget', 'context_length']) out[key] = Math.round(out[key]);
  return out;
}

export function loadSettings() {
  try {
    return clean(JSON.parse(localStorage.getItem(KEY) ?? '{}'));
  } catch {
    return { ...DEFAULTS };
  }
}

function saveSettings(settings) {
  try {
    localStorage.setItem(KEY, JSON.stringify(settings));
  } catch {
    // Private mode: the settings last for this visit.
  }
}

/**
 * Wires the dialog; `onChange(settings)` runs after every edit. Returns the current settings and `update(partial)`,
 * which changes, stores and shows some of them from elsewhere (an error's "load with less context").
 */
export function bindSettings(dialog, openButton, onChange) {
  let settings = loadSettings();
  const form = dialog.querySelector('form');
  const fields = Object.keys(DEFAULTS).map((k) => form.elements.namedItem(k));
  const show = () => {
    for (const field of fields) {
      field.value = String(settings[field.name]);
      const out = form.querySelector(`output[for="${field.name}"]`);
      if (out) out.textContent = String(settings[field.name]);
    }
  };
  form.addEventListener('input', () => {
    settings = clean(Object.fromEntries(fields.map((f) => [f.name, f.value])));
    for (const out of form.querySelectorAll('output')) out.textContent = String(settings[out.htmlFor]);
    saveSettings(settings);
    onChange(settings);
  });
  form.querySelector('#reset-settings').addEventListener('click', () => {
    settings = { ...DEFAULTS };
    saveSettings(settings);
    show();
    onChange(settings);
  });
  openButton.addEventListener('click', () => {
    show();
    dialog.showModal();
  });
  show();
  const update = (partial) => {
    settings = clean({ ...settings, ...partial });
    saveSettings(settings);
    show();
    onChange(settings);
    return settings;
  };
  return { settings, update };
}
