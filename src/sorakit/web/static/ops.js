// Building on a finished draft: Remix, Extend and Share, each a small form inside the draft's card.
//
// A remix (POST /backend/nf/create with remix_target_id) or an extension (POST .../drafts/{id}/
// long_video_extension) is a task like any create: it goes to "In progress", and its draft comes
// to the top of the Library when it is done. A share (POST /backend/project_y/post) answers a
// public permalink. No endpoint lists a user's posts, so the page knows only those it made: they
// are kept here, in memory, until sign-out, each with its Unshare button.

import { api, SignedOut } from './api.js';
import { explain } from './create.js';
import { h, safeUrl, seconds, uid } from './dom.js';

const EXTEND_SECONDS = [5, 10, 15];
const DEFAULT_STRENGTH = 0.4;
const OPERATION_NAMES = { remix: 'Remix', extend: 'Extension', storyboard: 'Storyboard' };

// draft id -> the post this tab made of it
const posts = new Map();

export const forgetPosts = () => posts.clear();
export const forgetPost = (draftId) => posts.delete(draftId);

// "Remix", "Extension": what a task in progress is making (nothing for a plain create).
export const operationName = (operation) => OPERATION_NAMES[operation] || null;

// The small badges a draft card shows for what is not a plain video: "Remix", "Extended +5 s",
// "Storyboard", "Variation 2/3".
export function draftTags(draft) {
  const config = draft.creation_config || {};
  const tags = [];
  switch (draft.generation_type) {
    case 'remix': {
      const from = draft.remix_target_post?.id || draft.source_generation_id;
      const strength = typeof config.remix_strength === 'number' ? `, strength ${config.remix_strength}` : '';
      tags.push({ type: 'remix', text: 'Remix', title: from ? `A remix of ${from}${strength}` : null });
      break;
    }
    case 'extension': {
      const added = seconds(config.extension_duration_s);
      tags.push({ type: 'extension', text: added ? `Extended +${added}` : 'Extended',
        title: draft.source_generation_id ? `${draft.source_generation_id}, then more` : null });
      break;
    }
    case 'storyboard':
      tags.push({ type: 'storyboard', text: 'Storyboard' });
      break;
    default:
  }
  if (Number.isInteger(draft.variant_index)) {
    const n = config.n_variants;
    const text = `Variation ${draft.variant_index + 1}${n > 1 ? `/${n}` : ''}`;
    tags.push({ type: 'variation', text });
  }
  return tags;
}

export function tagList(draft) {
  const tags = draftTags(draft);
  if (!tags.length) return null;
  return h('p', { class: 'tags' },
    tags.map((t) => h('span', { class: 'tag', 'data-type': t.type, title: t.title || null }, t.text)));
}

function field(label, control, note) {
  const id = control.id || uid('op');
  control.id = id;
  return h('div', { class: 'field' },
    h('label', { for: id }, ...label), control, note || null);
}

// POST with an Idempotency-Key that is kept for the same request after a lost answer (no status:
// the network failed), so a second click cannot start the work twice.
async function post(state, path, json) {
  const same = state.unanswered && state.unanswered.path === path
    && JSON.stringify(state.unanswered.json) === JSON.stringify(json);
  const key = same ? state.unanswered.key : crypto.randomUUID();
  state.unanswered = { path, json, key };
  try {
    const answer = await api(path, { method: 'POST', json, headers: { 'Idempotency-Key': key } });
    state.unanswered = null;
    return answer;
  } catch (error) {
    if (error.status) state.unanswered = null;
    throw error;
  }
}

// The three buttons, their forms and what they leave behind (a status line, the shared link),
// for one finished draft. `onCreated(task)` hands a new task to "In progress".
export class DraftOps {
  constructor(draft, { onCreated }) {
    this.draft = draft;
    this.onCreated = onCreated;
    this.state = {};
    this.panels = {};
    this.buttons = {};
    this.status = h('p', { class: 'op-status small', role: 'status', 'aria-live': 'polite' });
    this.shared = h('div', { class: 'shared', role: 'group', 'aria-label': 'Shared link', hidden: true });
    const specs = [['remix', 'Remix', () => this.remixForm()], ['extend', 'Extend', () => this.extendForm()],
      ['share', 'Share', () => this.shareForm()]];
    this.builders = {};
    for (const [name, label, build] of specs) {
      // the form is built when first opened: a page of cards holds no forms nobody asked for
      const panel = h('div', { class: 'op-slot', id: uid(`${name}-panel`), hidden: true });
      this.builders[name] = build;
      panel.addEventListener('keydown', (e) => {
        if (e.key === 'Escape') this.close(name, true);
      });
      this.panels[name] = panel;
      this.buttons[name] = h('button', {
        type: 'button', class: `secondary op ${name}`, 'aria-expanded': 'false', 'aria-controls': panel.id,
        onclick: () => this.toggle(name),
      }, label);
    }
    this.bar = h('div', { class: 'ops', role: 'group', 'aria-label': 'Build on this video' },
      Object.values(this.buttons));
    const known = posts.get(draft.id);
    if (known) this.showShared(known, false);
  }

  nodes() {
    return [this.bar, ...Object.values(this.panels), this.status, this.shared];
  }

  toggle(name) {
    if (this.panels[name].hidden) this.open(name);
    else this.close(name, true);
  }

  open(name) {
    for (const other of Object.keys(this.panels)) if (other !== name) this.close(other, false);
    if (!this.panels[name].firstChild) this.panels[name].append(this.builders[name]());
    this.panels[name].hidden = false;
    this.buttons[name].setAttribute('aria-expanded', 'true');
    this.panels[name].querySelector('textarea, select, input')?.focus();
  }

  close(name, refocus) {
    this.panels[name].hidden = true;
    this.buttons[name].setAttribute('aria-expanded', 'false');
    if (refocus && !this.buttons[name].hidden) this.buttons[name].focus();
  }

  // One form: its fields, an inline error, the submit and a Cancel. `run` does the request and
  // answers true when the form is done (it then closes).
  form(name, label, fields, submitText, busyText, run) {
    const error = h('p', { class: 'error', role: 'alert' });
    const submit = h('button', { type: 'submit' }, submitText);
    const cancel = h('button', { type: 'button', class: 'secondary', onclick: () => this.close(name, true) },
      'Cancel');
    const form = h('form', { class: `op-panel ${name}-form stack`, 'aria-label': label, novalidate: true },
      ...fields, error, h('div', { class: 'actions' }, submit, cancel));
    const showError = (message, control) => {
      error.textContent = message;
      for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
      if (control) {
        control.setAttribute('aria-invalid', 'true');
        control.focus();
      }
    };
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (submit.disabled) return;
      showError('');
      submit.disabled = true;
      form.setAttribute('aria-busy', 'true');
      submit.textContent = busyText;
      try {
        if (await run(showError)) this.close(name, true);
      } catch (err) {
        if (!(err instanceof SignedOut)) showError(explain(err, { labelled: false }), form.controlFor?.(err.param));
      } finally {
        submit.disabled = false;
        form.setAttribute('aria-busy', 'false');
        submit.textContent = submitText;
      }
    });
    return form;
  }

  started(task, what) {
    this.status.replaceChildren(`${what} started. `, h('a', { href: '#create' }, 'See it in progress'),
      ' — its video comes to the top of the Library when ready.');
    this.onCreated(task);
  }

  remixForm() {
    const prompt = h('textarea', { rows: '3', required: true, placeholder: 'The same scene, at night in the snow' });
    const slider = h('input', { type: 'range', min: '0', max: '1', step: '0.05', value: String(DEFAULT_STRENGTH) });
    const shown = h('output', { class: 'strength', 'aria-hidden': 'true' }, DEFAULT_STRENGTH.toFixed(2));
    const note = uid('strength-note');
    slider.setAttribute('aria-describedby', note);
    slider.addEventListener('input', () => {
      shown.textContent = Number(slider.value).toFixed(2);
    });
    const strength = h('div', { class: 'field' },
      h('label', { for: (slider.id = uid('strength')) }, 'How far from the original'),
      h('div', { class: 'slider' }, slider, shown),
      h('p', { class: 'muted small', id: note }, '0 keeps the original video, 1 ignores it.'));
    const form = this.form('remix', 'Remix this video', [field(['New prompt'], prompt), strength],
      'Remix', 'Remixing…', async (showError) => {
        const text = prompt.value.trim();
        if (!text) {
          showError('Write the new prompt: what the remix should show.', prompt);
          return false;
        }
        const json = { kind: 'video', prompt: text, remix_target_id: this.draft.id,
          remix_strength: Number(slider.value), inpaint_items: [] };
        const task = await post(this.state, '/backend/nf/create', json);
        prompt.value = '';
        this.started({ ...task, prompt: text, operation: 'remix', status: task.status || 'preprocessing' },
          'Remix');
        return true;
      });
    form.controlFor = (param) => ({ prompt, remix_strength: slider })[param];
    return form;
  }

  extendForm() {
    const secs = h('select', {}, EXTEND_SECONDS.map((s) => h('option', { value: String(s) }, `${s} s`)));
    const prompt = h('textarea', { rows: '2', placeholder: 'Leave empty to carry on with the same prompt' });
    const form = this.form('extend', 'Extend this video', [
      field(['Seconds to add'], secs),
      field(['What happens next ', h('span', { class: 'muted' }, '(optional)')], prompt),
    ], 'Extend', 'Extending…', async () => {
      const json = { user_prompt: prompt.value.trim(), extension_duration_s: Number(secs.value),
        enable_rewrite: false };
      const path = `/backend/project_y/profile/drafts/${encodeURIComponent(this.draft.id)}/long_video_extension`;
      const task = await post(this.state, path, json);
      prompt.value = '';
      this.started({ ...task, operation: 'extend', status: task.status || 'preprocessing' }, 'Extension');
      return true;
    });
    form.controlFor = (param) => ({ extension_duration_s: secs, user_prompt: prompt, prompt })[param];
    return form;
  }

  shareForm() {
    const text = h('textarea', { rows: '2', placeholder: 'A line to go with it' });
    const form = this.form('share', 'Share this video', [
      field(['Text ', h('span', { class: 'muted' }, '(optional)')], text),
      h('p', { class: 'muted small' }, 'Anyone with the link can watch the video, without signing in.'),
    ], 'Share', 'Sharing…', async () => {
      const json = { attachments_to_create: [{ generation_id: this.draft.id, kind: 'sora' }],
        post_text: text.value.trim() };
      const answer = await post(this.state, '/backend/project_y/post', json);
      text.value = '';
      this.close('share', false);
      this.showShared(answer.post, true);
      return false; // closed already: focus went to the link's Copy button
    });
    form.controlFor = (param) => ({ post_text: text })[param];
    return form;
  }

  showShared(postData, focus) {
    const href = safeUrl(postData.permalink);
    posts.set(this.draft.id, postData);
    const said = h('span', { class: 'copied', role: 'status', 'aria-live': 'polite' });
    const copy = h('button', { type: 'button', class: 'secondary small copy' }, 'Copy link');
    const unshare = h('button', { type: 'button', class: 'secondary small unshare' }, 'Unshare');
    const link = h('a', { class: 'permalink', href, target: '_blank', rel: 'noopener' }, postData.permalink);
    copy.addEventListener('click', () => this.copy(link, said));
    unshare.addEventListener('click', () => this.unshare(postData, unshare));
    this.shared.replaceChildren(
      h('p', { class: 'small' }, h('strong', {}, 'Shared. '), 'Anyone with this link can watch it:'),
      link, h('div', { class: 'actions' }, copy, unshare, said), h('p', { class: 'error', role: 'alert' }));
    this.shared.hidden = false;
    this.buttons.share.hidden = true;
    this.status.textContent = '';
    if (focus) copy.focus();
  }

  async copy(link, said) {
    try {
      if (!navigator.clipboard) throw new Error('no clipboard');
      await navigator.clipboard.writeText(link.href);
      said.textContent = 'Copied.';
    } catch {
      // no clipboard here (an http page on another host): select the link for Ctrl+C
      const range = document.createRange();
      range.selectNodeContents(link);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      said.textContent = 'Selected: press Ctrl+C to copy.';
    }
  }

  async unshare(postData, button) {
    button.disabled = true;
    try {
      await api(`/backend/project_y/post/${encodeURIComponent(postData.id)}`, { method: 'DELETE' });
    } catch (error) {
      if (error instanceof SignedOut) return;
      if (error.status !== 404) { // 404: already gone, which is what was asked
        button.disabled = false;
        this.shared.querySelector('.error').textContent = explain(error, { labelled: false });
        return;
      }
    }
    posts.delete(this.draft.id);
    this.shared.hidden = true;
    this.shared.replaceChildren();
    this.buttons.share.hidden = false;
    this.status.textContent = 'Unshared: the link no longer works.';
    this.buttons.share.focus();
  }
}
