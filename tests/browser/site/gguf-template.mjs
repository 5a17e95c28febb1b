// Writes a copy of a GGUF file with its `tokenizer.chat_template` changed, so that a small test model's prompt opens
// R1's reasoning (`<think>\n` after the assistant's turn marker) and the site's thinking panel gets real model text.
// The GGUF layout (header, key/values, tensor infos, alignment padding, tensor data) is as ggml's gguf.md describes;
// tensor offsets are relative to the data section, so only the padding before it changes.

import fs from 'node:fs';

const SCALAR_BYTES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const ARRAY = 9;

class Reader {
  constructor(buf) {
    this.buf = buf;
    this.at = 0;
  }
  need(n) {
    if (this.at + n > this.buf.length) throw new Error('the GGUF header is longer than the bytes read');
  }
  u32() {
    this.need(4);
    return this.buf.readUInt32LE((this.at += 4) - 4);
  }
  u64() {
    this.need(8);
    return Number(this.buf.readBigUInt64LE((this.at += 8) - 8));
  }
  string() {
    const n = this.u64();
    this.need(n);
    return this.buf.toString('utf8', this.at, (this.at += n));
  }
  skipValue(type) {
    if (type === STRING) return void this.string();
    if (type === ARRAY) {
      const inner = this.u32();
      const n = this.u64();
      if (inner === STRING) for (let i = 0; i < n; i++) this.string();
      else this.at += n * SCALAR_BYTES[inner];
      return;
    }
    this.at += SCALAR_BYTES[type];
  }
}

function ggufString(text) {
  const bytes = Buffer.from(text, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(bytes.length));
  return Buffer.concat([len, bytes]);
}

/** Copies `src` to `dst` with the chat template replaced by `edit(template)`. Returns the new template. */
export function rewriteChatTemplate(src, dst, edit) {
  const fd = fs.openSync(src, 'r');
  const head = Buffer.alloc(Math.min(fs.fstatSync(fd).size, 64 << 20));
  fs.readSync(fd, head, 0, head.length, 0);
  const r = new Reader(head);
  if (head.toString('latin1', 0, 4) !== 'GGUF') throw new Error(`${src} is not a GGUF file`);
  r.at = 4;
  const version = r.u32();
  if (version < 2) throw new Error(`GGUF version ${version} is not supported here`);
  const nTensors = r.u64();
  const nKv = r.u64();
  let alignment = 32;
  let template = null;
  const pieces = [head.subarray(0, r.at)];
  let copied = r.at;
  for (let i = 0; i < nKv; i++) {
    const key = r.string();
    const type = r.u32();
    const valueAt = r.at;
    if (key === 'tokenizer.chat_template' && type === STRING) {
      template = r.string();
      pieces.push(head.subarray(copied, valueAt), ggufString(edit(template)));
      copied = r.at;
    } else if (key === 'general.alignment' && type === 4) alignment = r.u32();
    else r.skipValue(type);
  }
  if (template === null) throw new Error(`${src} has no tokenizer.chat_template`);
  for (let i = 0; i < nTensors; i++) {
    r.string();
    const dims = r.u32();
    r.at += 8 * dims + 4 + 8;
  }
  pieces.push(head.subarray(copied, r.at));
  const dataStart = Math.ceil(r.at / alignment) * alignment;
  let header = Buffer.concat(pieces);
  header = Buffer.concat([header, Buffer.alloc(Math.ceil(header.length / alignment) * alignment - header.length)]);
  const out = fs.openSync(dst, 'w');
  fs.writeSync(out, header);
  const chunk = Buffer.alloc(8 << 20);
  for (let at = dataStart; ; ) {
    const n = fs.readSync(fd, chunk, 0, chunk.length, at);
    if (n === 0) break;
    fs.writeSync(out, chunk, 0, n);
    at += n;
  }
  fs.closeSync(out);
  fs.closeSync(fd);
  return edit(template);
}
