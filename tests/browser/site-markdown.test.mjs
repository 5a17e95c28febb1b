// The demo site's Markdown renderer (www/markdown.js) on hostile and ordinary model output, in node (no browser):
// the DOM it builds goes through a small recording document, and is checked element by element.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ALLOWED, parseMarkdown, renderMarkdown, safeHref, toDom } from '../../www/markdown.js';

// A recording document: just the calls toDom may use.
class FakeNode {
  constructor(tag) {
    this.tag = tag;
    this.attrs = new Map();
    this.children = [];
  }
  setAttribute(name, value) {
    this.attrs.set(name, String(value));
  }
  appendChild(child) {
    this.children.push(child);
    return child;
  }
}
const fakeDocument = {
  createDocumentFragment: () => new FakeNode('#fragment'),
  createElement: (tag) => new FakeNode(tag),
  createTextNode: (text) => ({ text: String(text) }),
};

const escapeText = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const escapeAttr = (s) => escapeText(s).replace(/"/g, '&quot;');

// Serialises as a browser's innerHTML getter would.
function html(node) {
  if ('text' in node) return escapeText(node.text);
  const inner = node.children.map(html).join('');
  if (node.tag === '#fragment') return inner;
  const attrs = [...node.attrs].map(([k, v]) => ` ${k}="${escapeAttr(v)}"`).join('');
  return `<${node.tag}${attrs}>${inner}</${node.tag}>`;
}

function textOf(node) {
  return 'text' in node ? node.text : node.children.map(textOf).join('');
}

function* elements(node) {
  if ('text' in node) return;
  if (node.tag !== '#fragment') yield node;
  for (const child of node.children) yield* elements(child);
}

// Every element is an allowed tag with allowed attributes; every link is http(s) or mailto.
function assertSafe(root, input) {
  for (const e of elements(root)) {
    assert.ok(Object.hasOwn(ALLOWED, e.tag), `<${e.tag}> built from ${JSON.stringify(input).slice(0, 80)}`);
    for (const [name, value] of e.attrs) {
      const ok = ALLOWED[e.tag].includes(name) || (e.tag === 'a' && (name === 'target' || name === 'rel'));
      assert.ok(ok, `attribute ${name} on <${e.tag}>`);
      assert.ok(!/^on/i.test(name), `event handler ${name}`);
      if (name === 'href') assert.match(value, /^(https?:\/\/|mailto:)/, `href ${value}`);
    }
  }
}

const render = (text) => renderMarkdown(text, fakeDocument);

const HOSTILE = [
  '<script>alert(1)</script>',
  '<img src=x onerror="alert(1)">',
  'before <img src=x onerror=alert(1)> after',
  '<svg onload=alert(1)><a href="javascript:alert(1)">x</a></svg>',
  '<iframe srcdoc="<script>parent.alert(1)</script>"></iframe>',
  '[click](javascript:alert(1))',
  '[click](JaVaScRiPt:alert(1))',
  '[click](java\tscript:alert(1))',
  '[click]( javascript:alert(1) )',
  '[click](<javascript:alert(1)>)',
  '[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)',
  '[click](vbscript:msgbox(1))',
  '[click](//evil.example/x)',
  '![x](javascript:alert(1))',
  '<javascript:alert(1)>',
  '**<b onmouseover=alert(1)>bold</b>**',
  '`<script>alert(1)</script>`',
  '```html\n<script>alert(1)</script>\n```',
  '```"><script>alert(1)</script>\ncode\n```',
  '| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | [x](javascript:1) |',
  '> <style>body{display:none}</style>',
  '- <a href=# onclick=alert(1)>x</a>',
  '# <script>alert(1)</script>',
  '[x](https://ok.example/" onmouseover="alert(1))',
  'https://example.com/"><script>alert(1)</script>',
  '&lt;script&gt; and &#60;script&#62;',
];

test('hostile model output renders as text: no script, no handlers, no unsafe links', () => {
  for (const input of HOSTILE) {
    const root = render(input);
    assertSafe(root, input);
    const out = html(root);
    assert.doesNotMatch(out, /<(script|img|svg|iframe|style|b |b>)/i, `${input} → ${out}`);
    assert.doesNotMatch(out, /<a [^>]*href="(javascript|data|vbscript):/i, `${input} → ${out}`);
    assert.doesNotMatch(out, /<[a-z]+[^>]*\son\w+=/i, `${input} → ${out}`);
  }
  // The markup is shown to the reader, character for character.
  assert.equal(textOf(render('<script>alert(1)</script>')), '<script>alert(1)</script>');
  assert.equal(textOf(render('a <img src=x onerror="alert(1)"> b')), 'a <img src=x onerror="alert(1)"> b');
  assert.equal(textOf(render('&lt;script&gt;')), '&lt;script&gt;');
  // A refused link stays readable as its source.
  assert.equal(textOf(render('[click](javascript:alert(1))')), '[click](javascript:alert(1))');
  assert.equal([...elements(render('[click](javascript:alert(1))'))].filter((e) => e.tag === 'a').length, 0);
});

test('toDom refuses elements and attributes outside the allow-list even in a forged tree', () => {
  const forged = [
    { tag: 'script', attrs: {}, children: ['alert(1)'] },
    { tag: 'img', attrs: { src: 'x', onerror: 'alert(1)' }, children: [] },
    { tag: 'a', attrs: { href: 'javascript:alert(1)', onclick: 'alert(1)' }, children: ['x'] },
    { tag: 'p', attrs: { style: 'position:fixed', onmouseover: 'x' }, children: ['y'] },
    { tag: '__proto__', attrs: {}, children: ['z'] },
    { tag: 'constructor', attrs: {}, children: ['w'] },
  ];
  const root = toDom(forged, fakeDocument);
  assertSafe(root, 'forged tree');
  assert.equal(html(root), 'alert(1)<a>x</a><p>y</p>zw');
});

test('safeHref keeps http(s) and mailto, normalised, and nothing else', () => {
  assert.equal(safeHref('https://example.com/a?b=1'), 'https://example.com/a?b=1');
  assert.equal(safeHref('HTTP://Example.com'), 'http://example.com/');
  assert.equal(safeHref('mailto:a@b.c'), 'mailto:a@b.c');
  for (const bad of ['javascript:alert(1)', 'java\nscript:1', 'data:text/html,x', '/relative', '#top', 'file:///etc/passwd', '', 'https://a b']) {
    assert.equal(safeHref(bad), null, bad);
  }
});

test('huge and pathological inputs render in time proportional to their length', () => {
  const n = 1 << 20;
  const cases = {
    brackets: '['.repeat(n),
    brackets_with_close: '['.repeat(n) + '](javascript:x)',
    link_openers_huge_target: '['.repeat(n / 2) + '](' + 'a'.repeat(n / 2) + ')',
    stars: '*'.repeat(n),
    star_words: '*a '.repeat(n / 3),
    underscores: '_a'.repeat(n / 2),
    backticks: '`'.repeat(n),
    tick_pairs: '``a`'.repeat(n / 4),
    angles: '<'.repeat(n),
    quotes: '>'.repeat(n),
    lists: '- '.repeat(n / 2),
    list_lines: '- a\n\n'.repeat(n / 5),
    hashes: '#'.repeat(n),
    pipes: '|a'.repeat(n / 4) + '\n' + '|-'.repeat(n / 4),
    urls: 'http://'.repeat(n / 7),
    escapes: '\\'.repeat(n),
    html: '<img src=x onerror=alert(1)>'.repeat(n / 28),
    lines: 'x\n'.repeat(n / 2),
    unclosed_fence: '```\n' + '<script>\n'.repeat(n / 9),
  };
  // The machine may be busy: each case is measured against ordinary prose of the same length, rendered just before.
  // A quadratic scan of a megabyte would take minutes, far past this bound.
  const prose = 'The quick brown fox, with **bold** and `code`, jumps over the lazy dog.\n'.repeat(n / 72);
  const t = performance.now();
  render(prose);
  const baseline = performance.now() - t;
  const limit = 1000 + 10 * baseline;
  const times = { baseline_prose: Math.round(baseline) };
  for (const [name, input] of Object.entries(cases)) {
    const t0 = performance.now();
    const root = render(input);
    times[name] = Math.round(performance.now() - t0);
    assertSafe(root, name);
    assert.ok(times[name] < limit, `${name}: ${times[name]} ms for ${input.length} characters (limit ${limit} ms)`);
  }
  console.log('render times (ms) for ~1 MiB each:', JSON.stringify(times));
});

test('ordinary Markdown: headings, emphasis, code, lists, tables, links, quotes, breaks', () => {
  const md = [
    '## Result',
    '',
    'The **answer** is *42*, see `x < y` and [docs](https://example.com/d).',
    'Second line.',
    '',
    '```python',
    'print("<b>hi</b>")',
    '```',
    '',
    '1. one',
    '2. two',
    '   - nested',
    '',
    '| n | sq |',
    '|:-|-:|',
    '| 2 | 4 |',
    '',
    '> quoted ~~old~~',
    '',
    '---',
    'snake_case_name and \\*literal\\*',
  ].join('\n');
  assert.equal(
    html(render(md)),
    '<h2>Result</h2>' +
      '<p>The <strong>answer</strong> is <em>42</em>, see <code>x &lt; y</code> and ' +
      '<a href="https://example.com/d" target="_blank" rel="noopener noreferrer nofollow">docs</a>.<br></br>Second line.</p>' +
      '<pre data-lang="python"><code>print("&lt;b&gt;hi&lt;/b&gt;")</code></pre>' +
      '<ol><li>one</li><li>two<ul><li>nested</li></ul></li></ol>' +
      '<table><thead><tr><th data-align="left">n</th><th data-align="right">sq</th></tr></thead>' +
      '<tbody><tr><td data-align="left">2</td><td data-align="right">4</td></tr></tbody></table>' +
      '<blockquote><p>quoted <del>old</del></p></blockquote>' +
      '<hr></hr>' +
      '<p>snake_case_name and *literal*</p>',
  );
});

test('an unclosed code fence (an answer still streaming) is code up to the end', () => {
  const tree = parseMarkdown('Here:\n\n```js\nconst a = 1;\nconst b = "**not bold**";');
  assert.equal(tree.length, 2);
  assert.deepEqual(tree[1], {
    tag: 'pre',
    attrs: { 'data-lang': 'js' },
    children: [{ tag: 'code', attrs: {}, children: ['const a = 1;\nconst b = "**not bold**";'] }],
  });
});

test('bare URLs and autolinks become links, trailing punctuation stays outside', () => {
  assert.equal(
    html(render('See https://example.com/x. Or <https://a.example>.')),
    '<p>See <a href="https://example.com/x" target="_blank" rel="noopener noreferrer nofollow">https://example.com/x</a>. ' +
      'Or <a href="https://a.example/" target="_blank" rel="noopener noreferrer nofollow">https://a.example</a>.</p>',
  );
});
