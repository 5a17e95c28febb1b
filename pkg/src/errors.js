// webr1's errors in JS: an Error whose `code` is one of webr1's stable codes (see index.d.ts).

export function webr1Error(code, message) {
  const error = new Error(message);
  error.name = 'Webr1Error';
  error.code = code;
  return error;
}

// An error that crossed from a worker as {code, message}.
export function revive({ code, message }) {
  return webr1Error(code ?? 'usage', message ?? String(code));
}

export function serialize(error) {
  return { code: error?.code ?? 'usage', message: error?.message ?? String(error) };
}
