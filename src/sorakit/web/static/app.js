// The sorakit web app: sign in, create videos, watch them being made, keep them in a library.
// A client of /api/auth/* and /backend like any script: no private endpoints.

import { api, currentUser, loadSession, onSignedOut, signIn, signOut, SignedOut } from './api.js';
import { $, clockTime, inWords } from './dom.js';
import { CreateForm, explain } from './create.js';
import { Library } from './library.js';
import { failureText, Watch } from './watch.js';

const VIEWS = ['create', 'library'];

function notify(message) {
  $('#notice').textContent = message;
}

const library = new Library({
  notify,
  onChange: () => refreshQuota(),
  onCreated: (task) => { // a remix or an extension, started on a draft in the Library
    watch.add(task);
    refreshQuota();
  },
});
const watch = new Watch({
  onFinished: (task) => {
    library.refreshHead();
    refreshQuota();
    if (task.status === 'failed') $('#create-error').textContent = failureText(task);
  },
  onCount: (n) => {
    const badge = $('#active-count');
    badge.hidden = n === 0;
    badge.textContent = n ? `${n} in progress` : '';
  },
  onError: (error) => {
    // polling errors are passing weather (a restart, a 429): say so, the next poll clears it
    notify(error ? `Could not refresh progress: ${explain(error)}` : '');
  },
});
const create = new CreateForm({ onCreated: (task) => watch.add(task), onQuota: () => refreshQuota() });

async function refreshQuota() {
  let text;
  try {
    const check = await api('/backend/nf/check');
    const balance = check.rate_limit_and_credit_balance || {};
    const left = balance.estimated_num_videos_remaining;
    const parts = [balance.rate_limit_reached
      ? `Daily limit reached: more in ${inWords(balance.access_resets_in_seconds || 0)}`
      : `${left} ${left === 1 ? 'video' : 'videos'} left today`];
    if (check.concurrency_limit) parts.push(`${check.concurrency_limit} at a time`);
    text = parts.join(' · ');
  } catch (error) {
    if (error instanceof SignedOut) return;
    text = '';
  }
  for (const node of document.querySelectorAll('[data-quota]')) node.textContent = text;
}

function currentView() {
  const name = location.hash.slice(1);
  return VIEWS.includes(name) ? name : 'create';
}

function show(view) {
  $('#loading').hidden = true;
  const signedIn = view !== 'signin';
  $('#nav').hidden = !signedIn;
  $('#account').hidden = !signedIn;
  for (const name of ['signin', ...VIEWS]) $(`#${name}-view`).hidden = name !== view;
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function route() {
  if (!currentUser()) return;
  show(currentView());
  // videos made elsewhere (a script, the CLI) while this tab was idle show up when it is opened
  if (currentView() === 'library') library.refreshHead();
}

function enterApp() {
  const user = currentUser();
  $('#user-name').textContent = user.name || user.email || user.id || '';
  show(currentView());
  watch.start();
  library.load();
  refreshQuota();
  create.loadModels();
}

function leaveApp(message) {
  watch.stop();
  library.reset();
  $('#password').value = '';
  show('signin');
  notify(message);
  $('#username').focus();
}

function signInError(error) {
  if (error.status === 429) {
    const wait = error.retryAfter || 60;
    return `Too many attempts. Try again in ${inWords(wait)} (at ${clockTime(wait)}).`;
  }
  return error.message || 'Could not sign in.';
}

async function submitSignIn(event) {
  event.preventDefault();
  const alert = $('#signin-error');
  const button = $('#signin-button');
  const username = $('#username').value.trim();
  const password = $('#password').value;
  if (!username || !password) {
    alert.textContent = 'Enter your username and password.';
    return;
  }
  alert.textContent = '';
  button.disabled = true;
  try {
    if (!(await signIn(username, password))) throw new Error('Signed in, but the server gave no session.');
    $('#password').value = '';
    notify('');
    enterApp();
    $('#main').focus();
  } catch (error) {
    alert.textContent = signInError(error);
    $('#password').select();
  } finally {
    button.disabled = false;
  }
}

async function submitSignOut() {
  await signOut().catch(() => null);
  leaveApp('Signed out.');
}

async function start() {
  $('#signin-form').addEventListener('submit', submitSignIn);
  $('#sign-out').addEventListener('click', submitSignOut);
  window.addEventListener('hashchange', route);
  onSignedOut(() => leaveApp('Your session has ended. Please sign in again.'));
  try {
    await loadSession();
  } catch {
    // the server is unreachable: the sign-in form says so when used
  }
  if (currentUser()) enterApp();
  else leaveApp('');
}

start();
