// The conversation on the page: user messages, and assistant messages that stream in two parts, the reasoning (a
// collapsible "Thinking…" panel, plain text appended as it arrives) and the answer (Markdown, rendered at most once
// per frame). Model text only ever reaches the page as text nodes or through markdown.js.

import { renderMarkdown } from './markdown.js';

/** "0.2", "12.5", "340": tokens per second with the digits that matter. */
export function formatRate(rate) {
  return rate < 100 ? rate.toFixed(1) : rate.toFixed(0);
}

/** A DOM element with properties (class, text, on* listeners, attributes) and children. */
export function h(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Copy failed';
  }
  setTimeout(() => (button.textContent = label), 1500);
}

/** The list of messages in `list`, kept scrolled to the end inside `scroller` while an answer grows. */
export class Conversation {
  constructor(list, scroller) {
    this.list = list;
    this.scroller = scroller;
  }

  clear() {
    this.list.replaceChildren();
  }

  get isEmpty() {
    return this.list.childElementCount === 0;
  }

  addUser(text) {
    const body = h('div', { class: 'bubble', text });
    this.list.append(h('article', { class: 'msg user', 'aria-label': 'You' }, [body]));
    this.scrollToEnd(true);
  }

  addAssistant() {
    const view = new AssistantMessage(() => this.scrollToEnd(false));
    this.list.append(view.root);
    this.scrollToEnd(true);
    return view;
  }

  // Follows the stream while the reader is at the bottom; leaves them where they are if they scrolled up.
  scrollToEnd(force) {
    const s = this.scroller;
    const atEnd = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    if (force || atEnd) s.scrollTop = s.scrollHeight;
  }
}

/** One streamed answer. */
export class AssistantMessage {
  constructor(onGrow) {
    this.onGrow = onGrow;
    this.reasoning = '';
    this.content = '';
    this.thinkStart = 0;
    this.thinkEnd = 0;
    this.userToggled = false;
    this.pending = false;

    this.reasoningText = document.createTextNode('');
    this.thinkLabel = h('span', { class: 'think-label', text: 'Thinking…' });
    const summary = h('summary', {}, [h('span', { class: 'pulse', 'aria-hidden': 'true' }), this.thinkLabel]);
    summary.addEventListener('click', () => (this.userToggled = true));
    this.thinking = h('details', { class: 'thinking', open: '' }, [summary, h('div', { class: 'reasoning' }, [this.reasoningText])]);
    this.thinking.hidden = true;
    this.answer = h('div', { class: 'answer markdown' });
    this.stats = h('span', { class: 'stats' });
    this.copyButton = h('button', { type: 'button', class: 'ghost small copy', text: 'Copy answer', onclick: () => copyText(this.content, this.copyButton) });
    this.copyButton.hidden = true;
    this.meta = h('div', { class: 'meta' }, [this.stats, this.copyButton]);
    this.root = h('article', { class: 'msg assistant streaming', 'aria-label': 'R1', 'aria-busy': 'true' }, [this.thinking, this.answer, this.meta]);
    this.timer = null;
  }

  appendReasoning(text) {
    if (!this.thinkStart) {
      this.thinkStart = performance.now();
      this.thinking.hidden = false;
      this.timer = setInterval(() => this.updateThinkLabel(), 1000);
    }
    this.reasoning += text;
    this.reasoningText.appendData(text);
    this.onGrow();
  }

  appendContent(text) {
    if (!this.content && !text.trim()) return;
    if (!this.content) this.endThinking();
    this.content += text;
    this.scheduleRender();
  }

  endThinking() {
    if (!this.thinkStart || this.thinkEnd) return;
    this.thinkEnd = performance.now();
    clearInterval(this.timer);
    this.updateThinkLabel();
    if (!this.userToggled) this.thinking.open = false;
  }

  updateThinkLabel() {
    const seconds = Math.max(1, Math.round(((this.thinkEnd || performance.now()) - this.thinkStart) / 1000));
    this.thinkLabel.textContent = this.thinkEnd ? `Thought for ${seconds} s` : `Thinking… ${seconds} s`;
  }

  scheduleRender() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  render() {
    this.answer.replaceChildren(renderMarkdown(this.content));
    for (const pre of this.answer.querySelectorAll('pre')) {
      const code = pre.textContent;
      const button = h('button', { type: 'button', class: 'ghost small code-copy', text: 'Copy' });
      button.addEventListener('click', () => copyText(code, button));
      pre.prepend(button);
    }
    this.onGrow();
  }

  /** Live speed while streaming. */
  showSpeed(tokensPerSecond) {
    this.stats.textContent = `${formatRate(tokensPerSecond)} tok/s`;
  }

  /** The stream ended: `usage` and `finishReason` from the last chunk (absent when it broke off). */
  finish(usage, finishReason) {
    this.endThinking();
    clearInterval(this.timer);
    this.render();
    this.root.classList.remove('streaming');
    this.root.removeAttribute('aria-busy');
    this.copyButton.hidden = !this.content;
    const parts = [];
    if (finishReason === 'abort') parts.push('Stopped');
    if (finishReason === 'length') parts.push('Hit the token limit');
    if (usage) {
      const reasoning = usage.completion_tokens_details?.reasoning_tokens ?? 0;
      parts.push(`${usage.completion_tokens} tokens${reasoning ? ` (${reasoning} thinking)` : ''}`);
      parts.push(`${formatRate(usage.decode_tokens_per_second)} tok/s`);
      parts.push(`prompt ${formatRate(usage.prefill_tokens_per_second)} tok/s`);
    }
    this.stats.textContent = parts.join(' · ');
    if (!this.content && !this.reasoning) this.answer.append(h('p', { class: 'muted', text: finishReason === 'abort' ? 'Stopped before the first word.' : '(no answer)' }));
  }

  /** The stream failed; the explanation is shown elsewhere. */
  fail(message) {
    this.finish(null, null);
    this.root.classList.add('failed');
    this.stats.textContent = message;
  }
}
