// "Library": the user's drafts, newest first, a page at a time (the listing's opaque cursor).

import { api, SignedOut } from './api.js';
import { $, framesToSeconds, h, safeUrl, seconds, when } from './dom.js';
import { DraftOps, forgetPost, forgetPosts, tagList } from './ops.js';

const PAGE = 12;

function engineText(engine) {
  if (!engine || !engine.name) return null;
  return engine.placeholder ? `${engine.name} (placeholder)` : engine.name;
}

// A variation's creation_config carries its own seed (the task's plus its index): the one that
// makes it again.
function seedOf(draft, config) {
  return config.seed;
}

function params(draft) {
  const config = draft.creation_config || {};
  const requested = framesToSeconds(config.n_frames || draft.n_frames);
  const rows = [
    ['Size', draft.width && draft.height ? `${draft.width}×${draft.height}` : null],
    ['Duration', requested && `${requested} s`],
    ['Model', config.model],
    ['Style', config.style_id],
    ['Seed', seedOf(draft, config)],
    ['Engine', engineText(draft.engine)],
    ['Made', when(draft.created_at)],
  ];
  return h('dl', { class: 'params small' },
    rows.filter(([, value]) => value !== null && value !== undefined && value !== '')
      .map(([name, value]) => h('div', { 'data-param': name.toLowerCase() },
        h('dt', {}, name), h('dd', {}, String(value)))));
}

function media(draft) {
  const src = safeUrl(draft.url);
  if (draft.kind !== 'sora_draft' || !src) {
    const refused = draft.kind === 'sora_content_violation';
    return h('div', { class: `media problem ${refused ? 'refused' : 'failed'}` },
      h('p', { class: 'problem-title' }, refused ? 'Refused' : 'Failed'),
      h('p', { class: 'reason' }, draft.reason_str || draft.error_reason || 'No reason was given.'));
  }
  const video = h('video', {
    controls: true, preload: 'metadata', playsinline: true, src,
    poster: safeUrl(draft.thumbnail_url || (draft.encodings?.thumbnail || {}).path),
    'aria-label': `Video: ${draft.prompt || draft.id}`,
  });
  // The file knows its real length (a model's own fps may differ from the 30 of the request).
  video.addEventListener('loadedmetadata', () => {
    const dd = video.closest('.draft')?.querySelector('[data-param="duration"] dd');
    if (dd && Number.isFinite(video.duration)) dd.textContent = seconds(video.duration);
  });
  return h('div', { class: 'media' }, video);
}

// The seed script's name for a video: sora_<task id>.mp4
const fileName = (draft) => `sora_${draft.task_id || draft.id}.mp4`;

export class Library {
  constructor({ notify, onChange, onCreated }) {
    this.list = $('#drafts');
    this.more = $('#more');
    this.empty = $('#library-empty');
    this.error = $('#library-error');
    this.notify = notify;
    this.onChange = onChange;
    this.onCreated = onCreated; // a remix or an extension started here: a task for "In progress"
    this.cursor = null;
    this.loaded = false;
    this.more.addEventListener('click', () => this.loadMore());
  }

  reset() {
    this.list.replaceChildren();
    this.cursor = null;
    this.loaded = false;
    this.more.hidden = true;
    this.empty.hidden = true;
    this.error.textContent = '';
    forgetPosts(); // the next user to sign in here made none of them
  }

  async fetchPage(cursor) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (cursor) query.set('cursor', cursor);
    return api(`/backend/project_y/profile/drafts?${query}`);
  }

  async guard(work) {
    try {
      this.error.textContent = '';
      await work();
    } catch (error) {
      if (!(error instanceof SignedOut)) this.error.textContent = error.message;
    }
  }

  load() {
    return this.guard(async () => {
      const page = await this.fetchPage(null);
      this.list.replaceChildren(...page.items.map((d) => this.card(d)));
      this.setCursor(page.cursor);
      this.loaded = true;
    });
  }

  loadMore() {
    return this.guard(async () => {
      this.more.disabled = true;
      try {
        const page = await this.fetchPage(this.cursor);
        const nodes = page.items.filter((d) => !this.has(d.id)).map((d) => this.card(d));
        this.list.append(...nodes);
        this.setCursor(page.cursor);
        // the last page hides the button that had focus: hand focus to what it brought
        if (this.more.hidden && nodes[0]) nodes[0].querySelector('video, a, button')?.focus();
      } finally {
        this.more.disabled = false;
      }
    });
  }

  // New drafts (a task just finished) go on top; pages already shown stay as they are.
  refreshHead() {
    if (!this.loaded) return this.load();
    return this.guard(async () => {
      const page = await this.fetchPage(null);
      const fresh = page.items.filter((d) => !this.has(d.id));
      this.list.prepend(...fresh.map((d) => this.card(d)));
      this.refreshEmpty();
    });
  }

  has(id) {
    return [...this.list.children].some((node) => node.dataset.genId === id);
  }

  setCursor(cursor) {
    this.cursor = cursor;
    this.more.hidden = !cursor;
    this.refreshEmpty();
  }

  refreshEmpty() {
    this.empty.hidden = this.list.children.length > 0;
  }

  card(draft) {
    const finished = draft.kind === 'sora_draft' && safeUrl(draft.url);
    const ops = finished ? new DraftOps(draft, { onCreated: this.onCreated }) : null;
    const node = h('li', { class: 'draft card', 'data-gen-id': draft.id, 'data-kind': draft.kind,
      'data-type': draft.generation_type || null },
    media(draft),
    tagList(draft),
    h('p', { class: 'prompt' }, draft.prompt || ''),
    params(draft),
    draft.engine?.placeholder
      ? h('p', { class: 'placeholder small', title: draft.engine.note || null },
        'A placeholder drawn by the preview engine, not a video model.')
      : null,
    ops ? ops.nodes() : null,
    this.actions(draft));
    return node;
  }

  actions(draft) {
    const href = draft.kind === 'sora_draft' && safeUrl(draft.downloadable_url || draft.url);
    const ask = h('button', { type: 'button', class: 'secondary delete' }, 'Delete');
    const confirm = h('span', { class: 'confirm', role: 'group', 'aria-label': 'Confirm delete',
      hidden: true },
      h('span', { class: 'small' }, 'Delete for good?'),
      h('button', { type: 'button', class: 'danger confirm-delete' }, 'Yes, delete'),
      h('button', { type: 'button', class: 'secondary keep' }, 'Keep'));
    const bar = h('div', { class: 'actions' },
      href ? h('a', { class: 'button', href, download: fileName(draft) }, 'Download') : null,
      ask, confirm);
    const showConfirm = (on) => {
      ask.hidden = on;
      confirm.hidden = !on;
      (on ? confirm.querySelector('.keep') : ask).focus();
    };
    ask.addEventListener('click', () => showConfirm(true));
    confirm.querySelector('.keep').addEventListener('click', () => showConfirm(false));
    confirm.addEventListener('keydown', (e) => e.key === 'Escape' && showConfirm(false));
    confirm.querySelector('.confirm-delete').addEventListener('click', () => this.remove(draft));
    return bar;
  }

  remove(draft) {
    return this.guard(async () => {
      await api(`/backend/project_y/profile/drafts/${encodeURIComponent(draft.id)}`, { method: 'DELETE' });
      forgetPost(draft.id); // its posts went with it
      const node = [...this.list.children].find((n) => n.dataset.genId === draft.id);
      const next = node && (node.nextElementSibling || node.previousElementSibling);
      node?.remove();
      this.refreshEmpty();
      this.notify('Deleted.');
      (next?.querySelector('button, a, video') || $('#library-title')).focus();
      this.onChange();
    });
  }
}
