// A small Markdown renderer for model output, which is untrusted text.
//
// `parseMarkdown(text)` turns the text into a plain tree: strings (text) and `{tag, attrs, children}` elements, where
// every tag comes from ALLOWED and every attribute from its list. `toDom(tree, document)` builds DOM nodes from that
// tree with createElement / createTextNode / setAttribute only, checking the same allow-list again; nothing is ever
// parsed as HTML, so `<script>` or `<img onerror=…>` in the text stays text. Links keep only http(s) and mailto URLs.
//
// Covered: paragraphs with line breaks, ATX headings, fenced code (an unclosed fence runs to the end, as it does while
// an answer streams), block quotes, nested bullet and numbered lists, tables, rules; inline code, **strong**, *em*,
// ~~strike~~, [links](url), <autolinks> and bare URLs, backslash escapes. Nesting is capped and every scan is linear or
// memoised, so hostile input (megabytes of brackets or stars) costs time in proportion to its length.

/** Tags the renderer may produce, each with the attributes it may carry. */
export const ALLOWED = {
  p: [], h1: [], h2: [], h3: [], h4: [], h5: [], h6: [], hr: [], br: [],
  ul: [], ol: ['start'], li: [], blockquote: [],
  pre: ['data-lang'], code: [], em: [], strong: [], del: [],
  a: ['href'],
  table: [], thead: [], tbody: [], tr: [], th: ['data-align'], td: ['data-align'],
};

const MAX_DEPTH = 8;
const SCHEMES = new Set(['http:', 'https:', 'mailto:']);

function el(tag, attrs, children) {
  return { tag, attrs: attrs ?? {}, children: children ?? [] };
}

/** The URL as an absolute http(s)/mailto href, or null for anything else (javascript:, data:, relative, …). */
export function safeHref(url) {
  const text = String(url).trim();
  // The URL parser drops tabs and newlines inside a scheme ("java\tscript:"); refuse every control character instead.
  if (text.length === 0 || text.length > 2048 || /[\u0000-\u001f\u007f\s]/.test(text)) return null;
  let parsed;
  try {
    parsed = new URL(text);
  } catch {
    return null;
  }
  return SCHEMES.has(parsed.protocol) ? parsed.href : null;
}

// ---------------------------------------------------------------- blocks

const isBlank = (line) => line.trim() === '';

function indentOf(line) {
  let n = 0;
  while (n < line.length && line[n] === ' ') n++;
  return n;
}

function fenceOf(line) {
  const indent = indentOf(line);
  if (indent > 3) return null;
  const ch = line[indent];
  if (ch !== '`' && ch !== '~') return null;
  let end = indent;
  while (line[end] === ch) end++;
  if (end - indent < 3) return null;
  const info = line.slice(end).trim();
  if (ch === '`' && info.includes('`')) return null;
  return { fence: line.slice(indent, end), lang: info.split(/\s/, 1)[0].slice(0, 32) };
}

function closesFence(line, fence) {
  const trimmed = line.trim();
  if (indentOf(line) > 3 || !trimmed.startsWith(fence)) return false;
  for (const c of trimmed) if (c !== fence[0]) return false;
  return true;
}

function headingOf(line) {
  const indent = indentOf(line);
  if (indent > 3) return null;
  let level = 0;
  while (line[indent + level] === '#') level++;
  const after = line[indent + level];
  if (level < 1 || level > 6 || (after !== undefined && after !== ' ' && after !== '\t')) return null;
  let text = line.slice(indent + level).trim();
  // A closing run of #s (preceded by a space) is not part of the heading.
  let end = text.length;
  while (end > 0 && text[end - 1] === '#') end--;
  if (end === 0 || text[end - 1] === ' ') text = text.slice(0, end).trim();
  return { level, text };
}

function isRule(line) {
  if (indentOf(line) > 3) return false;
  const s = line.replace(/[ \t]/g, '');
  return s.length >= 3 && (/^-+$/.test(s) || /^\*+$/.test(s) || /^_+$/.test(s));
}

function listMarkerOf(line) {
  const m = /^( *)([-*+]|\d{1,9}[.)])([ \t]+|$)/.exec(line);
  if (!m || m[1].length > 12) return null;
  const ordered = m[2].length > 1 || /\d/.test(m[2]);
  return { indent: m[1].length, ordered, start: ordered ? parseInt(m[2], 10) : 1, width: m[0].length };
}

const isQuote = (line) => indentOf(line) <= 3 && line.trimStart().startsWith('>');

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  const cells = [];
  let cell = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && s[i + 1] === '|') {
      cell += '|';
      i++;
    } else if (s[i] === '|') {
      cells.push(cell.trim());
      cell = '';
    } else cell += s[i];
  }
  cells.push(cell.trim());
  return cells;
}

function tableAlignments(line) {
  if (!line.includes('-')) return null;
  const cells = splitRow(line);
  const aligns = [];
  for (const c of cells) {
    if (!/^:?-+:?$/.test(c)) return null;
    aligns.push(c.endsWith(':') ? (c.startsWith(':') ? 'center' : 'right') : c.startsWith(':') ? 'left' : '');
  }
  return aligns;
}

function startsBlock(line) {
  const first = line.trimStart()[0];
  if (first === undefined || !'`~#-*_>+0123456789'.includes(first)) return false;
  return fenceOf(line) || headingOf(line) || isRule(line) || isQuote(line) || listMarkerOf(line);
}

/** Parses Markdown into the renderer's tree (an array of nodes). */
export function parseMarkdown(text) {
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  return parseBlocks(lines, 0);
}

function parseBlocks(lines, depth) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    const fence = fenceOf(line);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !closesFence(lines[i], fence.fence); i++) body.push(lines[i]);
      i++;
      const attrs = fence.lang ? { 'data-lang': fence.lang } : {};
      out.push(el('pre', attrs, [el('code', null, [body.join('\n')])]));
      continue;
    }
    const heading = headingOf(line);
    if (heading) {
      out.push(el(`h${heading.level}`, null, parseInline(heading.text, depth)));
      i++;
      continue;
    }
    if (isRule(line)) {
      out.push(el('hr'));
      i++;
      continue;
    }
    if (isQuote(line) && depth < MAX_DEPTH) {
      const inner = [];
      for (; i < lines.length && isQuote(lines[i]); i++) inner.push(lines[i].trimStart().slice(1).replace(/^ /, ''));
      out.push(el('blockquote', null, parseBlocks(inner, depth + 1)));
      continue;
    }
    const marker = listMarkerOf(line);
    if (marker && depth < MAX_DEPTH) {
      i = parseList(lines, i, marker, depth, out);
      continue;
    }
    const aligns = line.includes('|') && i + 1 < lines.length ? tableAlignments(lines[i + 1]) : null;
    if (aligns && splitRow(line).length === aligns.length) {
      i = parseTable(lines, i, aligns, depth, out);
      continue;
    }
    const para = [line.trim()];
    for (i++; i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i]); i++) para.push(lines[i].trim());
    out.push(el('p', null, parseInline(para.join('\n'), depth)));
  }
  return out;
}

function parseTable(lines, i, aligns, depth, out) {
  const cell = (tag, text, k) => el(tag, aligns[k] ? { 'data-align': aligns[k] } : null, parseInline(text, depth));
  const head = el('tr', null, splitRow(lines[i]).map((c, k) => cell('th', c, k)));
  const rows = [];
  for (i += 2; i < lines.length && !isBlank(lines[i]) && lines[i].includes('|'); i++) {
    const cells = splitRow(lines[i]).slice(0, aligns.length);
    while (cells.length < aligns.length) cells.push('');
    rows.push(el('tr', null, cells.map((c, k) => cell('td', c, k))));
  }
  out.push(el('table', null, [el('thead', null, [head]), el('tbody', null, rows)]));
  return i;
}

// One list: items of the same kind at the first item's indent. Returns the index of the first line after it.
function parseList(lines, i, first, depth, out) {
  const items = [];
  let loose = false;
  while (i < lines.length) {
    const marker = listMarkerOf(lines[i]);
    if (!marker || marker.ordered !== first.ordered || marker.indent > first.indent + 1) break;
    const body = [lines[i].slice(marker.width)];
    const inside = marker.width;
    let j = i + 1;
    for (; j < lines.length; j++) {
      const line = lines[j];
      if (isBlank(line)) {
        // A blank line ends the item unless what follows is indented into it.
        let k = j + 1;
        while (k < lines.length && isBlank(lines[k])) k++;
        if (k < lines.length && indentOf(lines[k]) >= inside) {
          loose = true;
          for (; j < k; j++) body.push('');
          j--;
          continue;
        }
        break;
      }
      const indent = indentOf(line);
      if (indent >= inside) body.push(line.slice(inside));
      else if (!startsBlock(line)) body.push(line.trim()); // a paragraph's lazy continuation
      else break;
    }
    const blocks = parseBlocks(body, depth + 1);
    items.push(blocks);
    i = j;
    // Blank lines between items make the list loose; before anything else they end it.
    let k = i;
    while (k < lines.length && isBlank(lines[k])) k++;
    const next = k > i && k < lines.length ? listMarkerOf(lines[k]) : null;
    if (next && next.ordered === first.ordered && next.indent <= first.indent + 1) {
      loose = true;
      i = k;
    }
  }
  const children = items.map((blocks) => {
    // A tight list's items hold their text directly, not in paragraphs.
    const flat = loose ? blocks : blocks.flatMap((b) => (b.tag === 'p' ? b.children : [b]));
    return el('li', null, flat);
  });
  const attrs = first.ordered && first.start !== 1 ? { start: String(first.start) } : null;
  out.push(el(first.ordered ? 'ol' : 'ul', attrs, children));
  return i;
}

// ---------------------------------------------------------------- inline

const PUNCT = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~');
// The characters where an inline construct may start (a bare URL starts with "h").
const SPECIAL = /[\\`*_~[!<\nh]/g;
const isWordChar = (c) => c !== undefined && /[\p{L}\p{N}]/u.test(c);
const isSpace = (c) => c === undefined || /\s/.test(c);
// `_` emphasis may not start or end inside a word (snake_case, __dunder__ names stay as they are).
const inWord = (c) => c === '_' || isWordChar(c);

// Finds tokens left to right in one string, remembering each token's last answer so that repeated searches
// (a megabyte of "[" with no "]") do not rescan: the first occurrence at or after `from` is the remembered one
// whenever that was searched from at or before `from` and lies at or after it.
class Finder {
  constructor(src) {
    this.src = src;
    this.memo = new Map();
  }

  find(token, from, end) {
    const hit = this.memo.get(token);
    let at;
    if (hit && hit.from <= from && (hit.at === -1 || hit.at >= from)) at = hit.at;
    else {
      at = this.src.indexOf(token, from);
      this.memo.set(token, { from, at });
    }
    return at === -1 || at + token.length > end ? -1 : at;
  }
}

/** Parses inline Markdown; returns an array of strings and elements. */
export function parseInline(text, depth = 0) {
  const src = String(text);
  return inlineRange(new Finder(src), 0, src.length, depth);
}

function inlineRange(finder, start, end, depth) {
  const src = finder.src;
  const out = [];
  let buf = '';
  const flush = () => {
    if (buf) out.push(buf);
    buf = '';
  };
  const push = (node) => {
    flush();
    out.push(node);
  };
  let i = start;
  while (i < end) {
    SPECIAL.lastIndex = i;
    const next = SPECIAL.exec(src)?.index ?? end;
    if (next > i) {
      buf += src.slice(i, Math.min(next, end));
      i = next;
      continue;
    }
    const c = src[i];
    if (c === '\n') {
      push(el('br'));
      i++;
      continue;
    }
    if (c === '\\' && i + 1 < end && PUNCT.has(src[i + 1])) {
      buf += src[i + 1];
      i += 2;
      continue;
    }
    if (c === '`') {
      let n = 1;
      while (i + n < end && src[i + n] === '`') n++;
      const ticks = '`'.repeat(n);
      const close = finder.find(ticks, i + n, end);
      if (close === -1) {
        buf += ticks;
        i += n;
        continue;
      }
      let code = src.slice(i + n, close).replace(/\n/g, ' ');
      if (code.length > 2 && code.startsWith(' ') && code.endsWith(' ') && code.trim()) code = code.slice(1, -1);
      push(el('code', null, [code]));
      i = close + n;
      continue;
    }
    if (depth < MAX_DEPTH) {
      const span = emphasis(finder, i, end, depth) ?? link(finder, i, end, depth) ?? autolink(finder, i, end);
      if (span) {
        push(span.node);
        i = span.next;
        continue;
      }
    }
    buf += c;
    i++;
  }
  flush();
  return out;
}

const EMPHASIS = [
  ['**', 'strong'],
  ['__', 'strong'],
  ['~~', 'del'],
  ['*', 'em'],
  ['_', 'em'],
];

function emphasis(finder, i, end, depth) {
  const src = finder.src;
  for (const [delim, tag] of EMPHASIS) {
    if (!src.startsWith(delim, i)) continue;
    const open = i + delim.length;
    // An opener is followed by a non-space; `_` may not open inside a word (snake_case stays as it is).
    if (isSpace(src[open]) || src[open] === delim[0]) return null;
    if (delim[0] === '_' && inWord(src[i - 1])) return null;
    const close = finder.find(delim, open, end);
    if (close === -1 || isSpace(src[close - 1])) return null;
    if (delim[0] === '_' && inWord(src[close + delim.length])) return null;
    return { node: el(tag, null, inlineRange(finder, open, close, depth + 1)), next: close + delim.length };
  }
  return null;
}

// [text](url) and ![alt](url). Images are shown as links: model output never makes the page fetch anything.
function link(finder, i, end, depth) {
  const src = finder.src;
  const image = src[i] === '!' && src[i + 1] === '[';
  if (src[i] !== '[' && !image) return null;
  const open = i + (image ? 2 : 1);
  const close = finder.find('](', open, end);
  if (close === -1) return null;
  const bracket = finder.find(']', open, end);
  if (bracket !== close) return null; // the first "]" must be the one followed by "("
  const paren = finder.find(')', close + 2, end);
  if (paren === -1 || paren - close > 2050) return null;
  // Many openers can share one target ("[[[[…](x)"): its check is remembered.
  if (finder.target?.paren !== paren) finder.target = { paren, href: hrefOf(src.slice(close + 2, paren)) };
  const href = finder.target.href;
  if (!href) return null;
  const children = open === close ? [href] : inlineRange(finder, open, close, depth + 1);
  return { node: el('a', { href }, children), next: paren + 1 };
}

function hrefOf(target) {
  target = target.trim();
  const titled = /^(\S+)\s+["'(]/.exec(target);
  if (titled) target = titled[1];
  if (target.startsWith('<') && target.endsWith('>')) target = target.slice(1, -1);
  return safeHref(target);
}

function autolink(finder, i, end) {
  const src = finder.src;
  if (src[i] === '<') {
    const close = finder.find('>', i + 1, end);
    if (close === -1 || close - i > 2050) return null;
    const href = safeHref(src.slice(i + 1, close));
    return href ? { node: el('a', { href }, [src.slice(i + 1, close)]), next: close + 1 } : null;
  }
  if (src[i] !== 'h' || isWordChar(src[i - 1]) || !(src.startsWith('https://', i) || src.startsWith('http://', i))) {
    return null;
  }
  let j = i;
  while (j < end && j - i < 2048 && !/[\s<>"`]/.test(src[j])) j++;
  while (j > i && /[.,;:!?)'\]*_~]/.test(src[j - 1])) j--;
  const text = src.slice(i, j);
  const href = safeHref(text);
  return href && j > i + 8 ? { node: el('a', { href }, [text]), next: j } : null;
}

// ---------------------------------------------------------------- DOM

/** Builds DOM nodes for a tree from parseMarkdown, through the allow-list; returns a DocumentFragment. */
export function toDom(nodes, doc = globalThis.document) {
  const fragment = doc.createDocumentFragment();
  for (const node of nodes) appendNode(fragment, node, doc);
  return fragment;
}

function appendNode(parent, node, doc) {
  if (typeof node === 'string') {
    parent.appendChild(doc.createTextNode(node));
    return;
  }
  const allowed = Object.hasOwn(ALLOWED, node?.tag) ? ALLOWED[node.tag] : null;
  if (!allowed) {
    // Not a tag the renderer makes: keep what it holds, as text, and drop the element.
    for (const child of node?.children ?? []) appendNode(parent, child, doc);
    return;
  }
  const element = doc.createElement(node.tag);
  for (const [name, value] of Object.entries(node.attrs ?? {})) {
    if (!allowed.includes(name)) continue;
    if (name === 'href') {
      const href = safeHref(value);
      if (!href) continue;
      element.setAttribute('href', href);
      element.setAttribute('target', '_blank');
      element.setAttribute('rel', 'noopener noreferrer nofollow');
    } else element.setAttribute(name, String(value));
  }
  for (const child of node.children ?? []) appendNode(element, child, doc);
  parent.appendChild(element);
}

/** Parses and builds in one step. */
export function renderMarkdown(text, doc = globalThis.document) {
  return toDom(parseMarkdown(text), doc);
}
