// The session and every call to the server.
//
// The access token lives in this module's memory only: never in storage, never in a URL. The
// HttpOnly session cookie is what survives a reload; /api/auth/session turns it into a token
// again, at start and whenever the server answers 401 (an expired or revoked token).

let session = null;
// Bumped at every sign-in and sign-out: a 401 to a call made in an earlier session (a poll in
// flight while the user signed out) must not announce that the current one ended.
let epoch = 0;
const signedOutListeners = [];

export class ApiError extends Error {
  constructor(status, message, { code = null, param = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
    this.retryAfter = retryAfter; // seconds, from the Retry-After header
  }
}

export class SignedOut extends ApiError {
  constructor() {
    super(401, 'Your session has ended. Please sign in again.', { code: 'signed_out' });
  }
}

export const currentUser = () => session && session.user;
export const onSignedOut = (listener) => signedOutListeners.push(listener);

// Retry-After is seconds or an HTTP date (RFC 9110).
function retryAfter(response) {
  const value = response.headers.get('Retry-After');
  if (!value) return null;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status says enough
  }
  const detail = (body && body.error) || {};
  const message = detail.message || `The server answered ${response.status}.`;
  return new ApiError(response.status, message, {
    code: detail.code || null, param: detail.param || null, retryAfter: retryAfter(response),
  });
}

export async function loadSession() {
  const response = await fetch('/api/auth/session', { cache: 'no-store' });
  const data = response.ok ? await response.json() : {};
  session = data && data.accessToken ? data : null;
  return session;
}

export async function signIn(username, password) {
  const response = await fetch('/api/auth/signin', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) throw await errorOf(response);
  epoch += 1;
  return loadSession();
}

export async function signOut() {
  try {
    await fetch('/api/auth/signout', { method: 'POST' });
  } finally {
    session = null;
    epoch += 1;
  }
}

function endSession(startedIn) {
  if (startedIn === epoch) {
    session = null;
    epoch += 1;
    signedOutListeners.forEach((listener) => listener());
  }
  return new SignedOut();
}

function send(path, method, token, { json, form, headers = {} }) {
  const all = { ...headers, Authorization: `Bearer ${token}` };
  if (json !== undefined) all['Content-Type'] = 'application/json';
  const body = json !== undefined ? JSON.stringify(json) : form;
  return fetch(path, { method, headers: all, body, cache: 'no-store' });
}

// A call to /backend with the bearer token. A 401 fetches the session once more: a fresh token
// means the old one had expired (retry), none means the session ended (back to sign-in).
export async function api(path, { method = 'GET', ...options } = {}) {
  if (!session) throw new SignedOut();
  const startedIn = epoch;
  const stale = session.accessToken;
  let response = await send(path, method, stale, options);
  if (response.status === 401) {
    if (startedIn !== epoch) throw new SignedOut();
    await loadSession().catch(() => null);
    if (!session || session.accessToken === stale) throw endSession(startedIn);
    response = await send(path, method, session.accessToken, options);
    if (response.status === 401) throw endSession(startedIn);
  }
  if (!response.ok) throw await errorOf(response);
  const data = await response.json();
  // an answer to a session that has ended since belongs to nobody on this page any more
  if (startedIn !== epoch) throw new SignedOut();
  return data;
}
