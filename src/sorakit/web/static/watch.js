// "In progress": follows the user's tasks by polling /backend/nf/pending/v2.
//
// One request per cycle serves every task: every 2-3 s (jittered) while something is being made,
// every 20 s when idle (to notice tasks started elsewhere, by a script or the CLI), never sooner
// than a Retry-After allows, and not at all while the tab is hidden.

import { api, SignedOut } from './api.js';
import { $, framesToSeconds, h, inWords, orientationName } from './dom.js';
import { operationName } from './ops.js';

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
const ACTIVE_MS = 2000;
const JITTER_MS = 1000;
const IDLE_MS = 20000;
const ERROR_MS = 5000;

export function failureText(task) {
  const gen = (task.generations || [])[0];
  const reason = (gen && gen.reason_str) || task.failure_reason || 'no reason given';
  if (gen && gen.kind === 'sora_content_violation') return `Refused: ${reason}`;
  return `Failed: ${reason}`;
}

function queuedText(task) {
  if (!task.progress_pos_in_queue) return 'Queued';
  const wait = task.estimated_queue_wait_time;
  return `Queued: position ${task.progress_pos_in_queue}${wait ? `, about ${inWords(wait)} to start` : ''}`;
}

function statusText(task) {
  const pct = Math.round((task.progress_pct || 0) * 100);
  switch (task.status) {
    case 'preprocessing':
    case 'pending':
      return 'Preparing…';
    case 'queued':
      return queuedText(task);
    case 'running':
      return `Making the video: ${pct} %`;
    case 'processing':
      return 'Encoding…';
    case 'succeeded':
      return task.n_variants > 1 ? `Finished: all ${task.n_variants} are in your Library.`
        : 'Finished: it is in your Library.';
    case 'cancelled':
      return 'Cancelled.';
    case 'failed':
      return failureText(task);
    default:
      return task.status;
  }
}

export class Watch {
  constructor({ onFinished, onCount, onError }) {
    this.list = $('#tasks');
    this.empty = $('#watch-empty');
    this.clearButton = $('#clear-finished');
    this.cards = new Map(); // task id -> {node, task}
    this.onFinished = onFinished;
    this.onCount = onCount;
    this.onError = onError;
    this.running = false;
    this.timer = null;
    this.inFlight = false;
    this.again = false;
    this.notBefore = 0; // epoch ms before which Retry-After forbids another poll
    this.clearButton.addEventListener('click', () => this.clearFinished());
    document.addEventListener('visibilitychange', () => this.visibilityChanged());
  }

  start() {
    this.running = true;
    this.schedule(0);
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
    this.cards.clear();
    this.list.replaceChildren();
    this.refreshChrome();
  }

  // A task the form just created: shown at once, before the next poll lists it.
  async add(task) {
    this.show(task);
    this.schedule(0);
    // A refused prompt fails inside create itself, so it never finishes later; create's short
    // answer has no reason in it: the whole task has.
    if (TERMINAL.has(task.status)) {
      await this.lookUp(task.id).catch(() => null);
      const card = this.cards.get(task.id);
      if (card) this.onFinished(card.task);
    }
  }

  visibilityChanged() {
    if (document.hidden) {
      clearTimeout(this.timer);
      this.timer = null;
    } else if (this.running) {
      this.schedule(0);
    }
  }

  schedule(ms) {
    if (!this.running || document.hidden) return;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    const wait = Math.max(ms, this.notBefore - Date.now());
    this.timer = setTimeout(() => this.poll(), wait);
  }

  activeCount() {
    return [...this.cards.values()].filter((c) => !TERMINAL.has(c.task.status)).length;
  }

  async poll() {
    this.timer = null;
    this.inFlight = true;
    let next = ERROR_MS;
    try {
      await this.update(await api('/backend/nf/pending/v2'));
      next = this.activeCount() ? ACTIVE_MS + Math.random() * JITTER_MS : IDLE_MS;
      this.onError(null);
    } catch (error) {
      if (error instanceof SignedOut) return;
      if (error.retryAfter) this.notBefore = Date.now() + error.retryAfter * 1000;
      this.onError(error);
    } finally {
      this.inFlight = false;
    }
    if (this.again) {
      this.again = false;
      next = 0;
    }
    this.schedule(next);
  }

  async update(tasks) {
    const listed = new Set();
    for (const task of tasks) {
      listed.add(task.id);
      // a task that finished before we looked is already in the library: no card for it
      if (this.cards.has(task.id) || !TERMINAL.has(task.status)) this.show(task);
    }
    // Unfinished cards missing from the list: the live service dropped finished tasks at once.
    for (const [id, card] of this.cards) {
      if (!listed.has(id) && !TERMINAL.has(card.task.status)) await this.lookUp(id);
    }
  }

  async lookUp(id) {
    try {
      this.show(await api(`/backend/nf/tasks/${encodeURIComponent(id)}/v2`));
    } catch (error) {
      if (error.status === 404) this.forget(id);
      else throw error;
    }
  }

  show(task) {
    const card = this.cards.get(task.id);
    const wasActive = card && !TERMINAL.has(card.task.status);
    if (card) {
      card.task = task;
      this.fill(card.node, task);
    } else {
      const node = this.build(task);
      this.cards.set(task.id, { node, task });
      this.list.prepend(node);
    }
    if (wasActive && TERMINAL.has(task.status)) this.onFinished(task);
    this.refreshChrome();
  }

  build(task) {
    const node = h('li', { class: 'task card', 'data-task-id': task.id },
      h('p', { class: 'prompt' }),
      h('p', { class: 'meta muted small' }),
      h('progress', { max: '100', 'aria-label': 'Progress of this video' }),
      h('p', { class: 'status', 'aria-live': 'polite' }),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary cancel', onclick: () => this.cancel(task.id) },
          'Cancel'),
        h('a', { href: '#library', class: 'open', hidden: true }, 'Open the Library')));
    this.fill(node, task);
    return node;
  }

  fill(node, task) {
    node.querySelector('.prompt').textContent = task.prompt || '';
    const secs = framesToSeconds(task.n_frames);
    node.querySelector('.meta').textContent = [operationName(task.operation),
      task.n_variants > 1 && `${task.n_variants} variations`, orientationName(task.orientation),
      secs && `${secs} s`, task.model].filter(Boolean).join(' · ');
    node.querySelector('.status').textContent = statusText(task);
    node.dataset.status = task.status;
    this.fillProgress(node.querySelector('progress'), task);
    node.querySelector('.cancel').hidden = isDone(task);
    node.querySelector('.open').hidden = task.status !== 'succeeded';
  }

  fillProgress(bar, task) {
    const known = typeof task.progress_pct === 'number';
    bar.hidden = isDone(task) && task.status !== 'succeeded';
    if (known || task.status === 'succeeded') {
      bar.value = Math.round((known ? task.progress_pct : 1) * 100);
    } else {
      bar.removeAttribute('value'); // indeterminate while preparing or queued
    }
  }

  async cancel(id) {
    const card = this.cards.get(id);
    const button = card && card.node.querySelector('.cancel');
    if (button) button.disabled = true;
    try {
      this.show(await api(`/backend/nf/tasks/${encodeURIComponent(id)}/cancel`, { method: 'POST' }));
      this.schedule(0);
    } catch (error) {
      if (!(error instanceof SignedOut)) this.onError(error);
    } finally {
      if (button) button.disabled = false;
    }
  }

  forget(id) {
    const card = this.cards.get(id);
    if (card) card.node.remove();
    this.cards.delete(id);
    this.refreshChrome();
  }

  clearFinished() {
    for (const [id, card] of this.cards) if (TERMINAL.has(card.task.status)) this.forget(id);
    $('#watch-title').focus(); // the button that had focus is gone
  }

  refreshChrome() {
    const active = this.activeCount();
    this.empty.hidden = this.cards.size > 0;
    this.clearButton.hidden = this.cards.size === active;
    this.onCount(active);
  }
}

function isDone(task) {
  return TERMINAL.has(task.status);
}
