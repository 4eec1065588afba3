// Small helpers shared by the views: building elements and saying numbers in words.
//
// Elements are built from data without ever parsing HTML: strings become text nodes and
// attributes are set one by one, so a prompt like `<img src=x onerror=...>` stays inert text.

export const $ = (selector, root = document) => root.querySelector(selector);

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// Links come from the server; still, only http(s) ones may become an href or a src.
export function safeUrl(url) {
  if (!url) return null;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}

// "45 s", "12 min", "3 h 12 min": how long until a limit frees up.
export function inWords(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.ceil(s / 60)} min`;
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  return minutes ? `${hours} h ${minutes} min` : `${hours} h`;
}

export function clockTime(secondsFromNow) {
  const at = new Date(Date.now() + secondsFromNow * 1000);
  return at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// Frames at 30 fps, as the web API counts them.
export function framesToSeconds(nFrames) {
  return nFrames ? Math.round((nFrames / 30) * 10) / 10 : null;
}

export function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return null;
  return `${Math.round(value * 10) / 10} s`;
}

export function when(epochSeconds) {
  if (!epochSeconds) return '';
  return new Date(epochSeconds * 1000).toLocaleString([], {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
  });
}

const TITLES = { portrait: 'Portrait', landscape: 'Landscape', square: 'Square' };
export const orientationName = (value) => TITLES[value] || value || '';

// Names of request fields as the form labels them, for errors that name a `param`.
export const FIELD_LABELS = {
  prompt: 'Prompt', orientation: 'Orientation', n_frames: 'Duration', size: 'Resolution',
  model: 'Model', style_id: 'Style', inpaint_items: 'Image', file: 'Image', seed: 'Seed',
  nsamples: 'Variations',
};

// Element ids unique on the page, for labels of fields built per card.
let lastId = 0;
export const uid = (prefix) => `${prefix}-${(lastId += 1)}`;
