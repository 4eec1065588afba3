// "Create": the form that starts a video, with an optional image uploaded first.

import { api, SignedOut } from './api.js';
import { $, FIELD_LABELS, h, inWords } from './dom.js';

const FIELD_IDS = { prompt: 'prompt', n_frames: 'duration', size: 'resolution', model: 'model',
  style_id: 'style', inpaint_items: 'image', file: 'image', nsamples: 'variations' };

// An API error in words a person can act on. `labelled`: name the form field a `param` points at
// (the create form's fields); the small forms on a draft show the server's message as it is.
export function explain(error, { labelled = true } = {}) {
  const wait = error.retryAfter ? inWords(error.retryAfter) : null;
  if (error.code === 'rate_limit_exhausted') {
    return wait ? `Daily limit reached: more in ${wait}.` : 'Daily limit reached.';
  }
  if (error.status === 503) return `The server is busy: try again${wait ? ` in ${wait}` : ' soon'}.`;
  if (error.code === 'too_many_concurrent_tasks' && wait) return `${error.message} (Try again in ${wait}.)`;
  if (!labelled) return error.message;
  const label = FIELD_LABELS[error.param] || (error.param && error.param.split(/[.[]/)[0]);
  return label && error.status < 500 ? `${label}: ${error.message}` : error.message;
}

// "sy_8 · preview (placeholder)": the id a request sends, and what runs behind it.
function modelLabel(model) {
  const engine = model.engine && model.engine !== model.id ? ` · ${model.engine}` : '';
  return `${model.id}${engine}${model.placeholder ? ' (placeholder)' : ''}`;
}

export class CreateForm {
  constructor({ onCreated, onQuota }) {
    this.form = $('#create-form');
    this.error = $('#create-error');
    this.button = $('#create-button');
    this.image = $('#image');
    this.models = [];
    this.onCreated = onCreated;
    this.onQuota = onQuota;
    this.unanswered = null; // {body, key} of a create whose answer never came: retried with its key
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    this.image.addEventListener('change', () => this.showImage());
    $('#image-clear').addEventListener('click', () => this.clearImage());
    $('#model').addEventListener('change', () => this.describeModel());
  }

  async loadModels() {
    try {
      const { models } = await api('/backend/models');
      if (!models || !models.length) return;
      this.models = models;
      const select = $('#model');
      const keep = select.value;
      select.replaceChildren(...models.map((m) => h('option', { value: m.id }, modelLabel(m))));
      if (models.some((m) => m.id === keep)) select.value = keep;
    } catch (error) {
      if (error instanceof SignedOut) return;
      // an older server without /backend/models: the default model still works
    }
    this.describeModel();
  }

  selectedModel() {
    return this.models.find((m) => m.id === $('#model').value);
  }

  describeModel() {
    const model = this.selectedModel();
    const notes = [];
    if (model?.placeholder) {
      notes.push('This engine draws the prompt over a moving pattern: a placeholder, not a video model.');
    }
    if (model && this.image.files.length && model.image_to_video === false) {
      notes.push('This model cannot start from an image.');
    }
    $('#model-note').textContent = notes.join(' ');
  }

  showImage() {
    const file = this.image.files[0];
    const thumb = $('#image-thumb');
    if (thumb.src) URL.revokeObjectURL(thumb.src);
    $('#image-preview').hidden = !file;
    if (file) thumb.src = URL.createObjectURL(file);
    else thumb.removeAttribute('src');
    this.describeModel();
  }

  clearImage() {
    this.image.value = '';
    this.showImage();
    this.image.focus();
  }

  body() {
    const data = new FormData(this.form);
    return {
      kind: 'video',
      prompt: String(data.get('prompt') || '').trim(),
      orientation: data.get('orientation'),
      n_frames: Number(data.get('n_frames')),
      size: data.get('size'),
      model: data.get('model'),
      style_id: data.get('style_id') || null,
      nsamples: Number(data.get('nsamples')) || 1,
      inpaint_items: [],
    };
  }

  showError(message, field) {
    this.error.textContent = message;
    for (const el of this.form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const target = field && document.getElementById(field);
    if (target) {
      target.setAttribute('aria-invalid', 'true');
      target.focus();
    }
  }

  async submit() {
    const body = this.body();
    if (!body.prompt) return this.showError('Prompt: write what the video should show.', 'prompt');
    this.showError('');
    this.busy(true);
    try {
      const task = await this.send(body);
      // the settings stay for the next video; the prompt and image were this one's
      $('#prompt').value = '';
      this.image.value = '';
      this.showImage();
      this.onCreated(task);
      $('#prompt').focus();
    } catch (error) {
      if (!(error instanceof SignedOut)) this.showError(explain(error), FIELD_IDS[error.param]);
    } finally {
      this.busy(false);
    }
  }

  async send(body) {
    const file = this.image.files[0];
    if (file) {
      const form = new FormData();
      form.append('file', file);
      form.append('file_name', file.name);
      const upload = await api('/backend/uploads', { method: 'POST', form }).catch((error) => {
        if (!error.param) error.param = 'file';
        throw error;
      });
      body.inpaint_items = [{ kind: 'upload', upload_id: upload.id }];
    }
    // The same request after a lost answer keeps its Idempotency-Key, so it cannot make two videos.
    const same = this.unanswered && !file && JSON.stringify(this.unanswered.body) === JSON.stringify(body);
    const key = same ? this.unanswered.key : crypto.randomUUID();
    this.unanswered = { body, key };
    let task;
    try {
      const headers = { 'Idempotency-Key': key };
      task = await api('/backend/nf/create', { method: 'POST', json: body, headers });
    } catch (error) {
      if (error.status) this.unanswered = null; // the server answered: a new try is a new request
      throw error;
    }
    this.unanswered = null;
    if (task.rate_limit_and_credit_balance) this.onQuota();
    return { ...body, ...task, status: task.status || 'preprocessing', prompt: body.prompt };
  }

  busy(on) {
    this.button.disabled = on;
    this.form.setAttribute('aria-busy', String(on));
    this.button.textContent = on ? 'Creating…' : 'Create';
  }
}
