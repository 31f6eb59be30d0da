// Switchboard web chat client: the user interface over the TypeScript client SDK (sdk/, served here
// as /assets/sdk/index.js), which owns the wire protocol: assignment through the registry, reconnects
// with backoff, re-joins with `since`, resends with the same `client_id`, DM catch-up, typing, read
// markers, last-seen and history (chat-node/PROTOCOL.md). This page only draws what the client reports.
//
// Identity (PROTOCOL.md section 2): a token from the embedding application (`window.SWITCHBOARD_TOKEN`
// or the URL fragment `#token=...`, never a query string) is given to the client, which sends it in
// `hello` and renews it with `refresh`. Without one, the page asks `GET /v1/auth`: where a development
// token issuer runs it mints a short-lived token for the typed name (`POST /v1/dev-token`), otherwise
// (open mode) the client sends the name.
//
// Files (PROTOCOL.md section 10): picked with the attach button, dropped on the conversation or pasted, shown
// in a tray (images as previews) until sent; the client declares them in the send and uploads them
// from the node's upload URLs. Every message shows its files in their current state: pending (with
// the sender's upload progress), ready (images as thumbnails that open the full image, other files as
// cards with a download link) or failed (with the reason). The client applies the node's `attachment`
// updates and reports them once; an expired URL (410) fetches the message again for fresh ones.
//
// All user content reaches the DOM through textContent (see `h`); no string is ever parsed as markup,
// and URLs from the node are only ever set as `src`/`href` of images and links, resolved against the
// node's HTTP base.
import { SwitchboardClient, USER_NAME, ROOM_NAME } from '/assets/sdk/index.js';

const TYPING_SHOW_FOR_MS = 3500;
const HISTORY_PAGE = 50;
const SEEN_NAMES_SHOWN = 3;
/** Mint a development token again this long before the current one expires. */
const REFRESH_BEFORE_MS = 60000;

const ERROR_TEXT = {
  rate_limited: 'You are sending messages too fast.',
  too_large: 'That message is too long.',
  invalid_name: 'That name is not allowed (1–32 letters, digits, _ . -, starting with a letter or digit).',
  invalid_body: 'That message is empty or malformed.',
  not_joined: 'You are not in that room.',
  too_many_rooms: 'You have joined too many rooms on this connection.',
  unavailable: 'The server could not confirm that right now; it is sent again (never stored twice).',
  internal: 'The server hit an unexpected error; the message is sent again (it is never stored twice).',
  bad_frame: 'The server could not read a frame this page sent.',
  unknown_type: 'The server does not know a frame this page sent.',
  already_identified: 'The server says this connection already has a user.',
  auth_failed: 'The server refused the renewed token.',
  forbidden: 'You are not allowed to do that.',
  closed: 'The connection was closed.',
  cancelled: 'The send was cancelled.',
  attachments_disabled: 'This server does not accept files.',
  invalid_attachment: 'A file could not be attached (empty, of no known type, or more than 10 files).',
  unsupported_type: 'That kind of file is not accepted here.',
  quota_exceeded: 'You have uploaded too much in the last 24 hours; try again later.',
};

/** Why a file failed (the node's `error` codes, and the upload's own). */
const ATTACHMENT_ERROR_TEXT = {
  wrong_type: 'the file is not what its type says',
  size_mismatch: 'the file size did not match',
  expired: 'the upload did not finish in time',
  store_failed: 'the server could not store it',
  too_large: 'the file is larger than declared',
  forbidden: 'the upload link was refused',
  not_found: 'the upload is gone',
  unavailable: 'the server could not be reached',
  cancelled: 'the upload was cancelled',
  failed: 'the server had already given it up',
  busy: 'the server was too busy to take it',
  timeout: 'the upload stalled',
  offset_mismatch: 'the upload got out of step with the server',
  no_upload_url: 'the server sent no upload link',
};

const CLOSE_TEXT = {
  1000: 'the connection was closed',
  1001: 'the node went away',
  1006: 'the connection dropped',
  1009: 'a message was larger than the node accepts',
  1011: 'the node hit an error',
  1012: 'the node is restarting',
  1013: 'the node is full or draining',
  4001: 'the node refused the identity',
  4011: 'the session token expired',
  4002: 'the node did not get a hello in time',
  4003: 'the connection was idle for too long',
  4008: 'the connection fell behind (slow consumer)',
  4029: 'too many messages were refused (flooding)',
};

const $ = (id) => document.getElementById(id);

/** Builds an element; strings among `children` become text nodes, never markup. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'data') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return el;
}

const S = {
  client: null,
  user: null,
  token: null, // the last token handed to the client (token mode)
  tokenSource: null, // 'embed' (from the application) | 'dev' (development issuer) | null (open mode)
  tokenExp: 0, // ms since the epoch
  room: null,
  joined: false,
  haveBase: false,
  firstSeq: 0,
  msgs: new Map(), // seq -> {el, m}
  pendingEls: new Map(), // client_id -> li
  members: new Set(),
  membersUnlisted: 0, // members of a big room the node did not list (joined.members_total)
  away: new Map(), // user -> {online, last_seen}
  reads: new Map(), // user -> seq
  readTimer: null,
  typing: new Map(), // user -> timeout
  dms: new Map(), // peer -> {log, ids, unread}
  active: 'room',
  outage: null, // {el, from}
  recoveryEl: null,
  retryAt: 0,
  countdownTimer: null,
  visible: new Set(),
  seenShown: new Map(), // seq -> text
  tray: [], // files picked for the next send: {file, preview}
  previews: new Map(), // client_id -> [object URL | null] of the files of an own send (shown while pending)
  progress: new Map(), // attachment id -> {sent, total} of this page's uploads
  refreshed: new Set(), // attachment ids whose URLs were fetched again after a 410
  handles: new Map(), // client_id -> send handle, while its files upload (to cancel them)
  uploadOf: new Map(), // attachment id -> client_id of this page's upload
};

// ---------------------------------------------------------------- small helpers

function fmtTime(ts) {
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function ago(ts) {
  if (!ts) return 'a while ago';
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (s < 45) return 'just now';
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const hrs = Math.round(m / 60);
  if (hrs < 24) return `${hrs} h ago`;
  return new Date(ts).toLocaleDateString();
}

function hue(name) {
  let x = 0;
  for (const ch of name) x = (x * 31 + ch.codePointAt(0)) % 360;
  return x;
}

function avatar(name) {
  const el = h('span', { class: 'avatar', 'aria-hidden': 'true', text: name.slice(0, 1).toUpperCase() });
  el.dataset.hue = String(hue(name) % 12);
  return el;
}

function joinNames(names) {
  if (names.length <= 1) return names.join('');
  if (names.length <= SEEN_NAMES_SHOWN) return `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
  return `${names.slice(0, SEEN_NAMES_SHOWN).join(', ')} and ${names.length - SEEN_NAMES_SHOWN} others`;
}

const toasts = new Map(); // text -> {el, timer}

/** Shows `text` for a few seconds; the same text again only extends the one already shown. */
function toast(text, code) {
  let t = toasts.get(text);
  if (!t) {
    t = { el: h('div', { class: 'toast', data: { code: code || 'info' } }, text), timer: null };
    toasts.set(text, t);
    $('toasts').append(t.el);
  }
  clearTimeout(t.timer);
  t.timer = setTimeout(
    () => {
      t.el.remove();
      toasts.delete(text);
    },
    code === 'dm' || code === 'info' ? 4000 : 7000,
  );
}

function setConn(state, text) {
  $('conn').dataset.state = state;
  $('conn-text').textContent = text;
  const pill = $('node-pill');
  const node = S.client && S.client.node;
  if (state === 'connected' && node) {
    $('node-name').textContent = node;
    pill.hidden = false;
  } else {
    pill.hidden = true;
  }
}

function showBanner(text, retry) {
  $('banner-text').textContent = text;
  $('banner-retry').hidden = !retry;
  $('banner').hidden = false;
}

function hideBanner() {
  $('banner').hidden = true;
  clearInterval(S.countdownTimer);
}

// ---------------------------------------------------------------- identity

/** The token the embedding application gives: `window.SWITCHBOARD_TOKEN`, else `#token=` (read once
 * and removed from the address bar, so it is not left in history or bookmarks). */
function embeddedToken() {
  if (typeof window.SWITCHBOARD_TOKEN === 'string' && window.SWITCHBOARD_TOKEN) return window.SWITCHBOARD_TOKEN;
  const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!m) return null;
  window.SWITCHBOARD_TOKEN = decodeURIComponent(m[1]);
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
  return window.SWITCHBOARD_TOKEN;
}

/** `sub` and `exp` (ms) of a JWT, read for display and timing only (the node verifies it). */
function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const c = JSON.parse(atob(part));
    return { sub: typeof c.sub === 'string' ? c.sub : null, exp: Number(c.exp) * 1000 || 0 };
  } catch {
    return { sub: null, exp: 0 };
  }
}

/** The client's token source: the embedding application's token, or one minted by the development issuer. */
async function pageToken(reason) {
  if (S.tokenSource === 'embed') {
    S.token = embeddedToken() || S.token;
    return S.token;
  }
  if (reason !== 'connect' || !S.token || S.tokenExp - Date.now() < REFRESH_BEFORE_MS) {
    const res = await fetch('/v1/dev-token', {
      method: 'POST',
      cache: 'no-store',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ user: S.user }),
    });
    if (!res.ok) throw new Error(`the development token issuer answered ${res.status}`);
    const minted = await res.json();
    S.token = minted.token;
    S.tokenExp = minted.expires_at;
  }
  return S.token;
}

// ---------------------------------------------------------------- what the client reports

function wire(c) {
  c.on('state', ({ state }) => {
    if (state === 'connecting') setConn('connecting', 'Finding a node…');
    else if (state === 'connected') {
      // The development issuer signs any name: say so, so nobody mistakes it for a real sign-in.
      setConn('connected', S.tokenSource === 'dev' ? 'Connected · development sign-in (any name works)' : 'Connected');
    } else if (state === 'reconnecting') setConn('reconnecting', 'Reconnecting…');
  });
  c.on('welcome', (w) => {
    S.user = w.user;
    const l = w.limits || {};
    $('file-input').accept = Array.isArray(l.attachment_types) ? l.attachment_types.join(',') : '';
    $('attach-btn').disabled = l.attachments === false;
    $('attach-btn').title = l.attachments === false ? ERROR_TEXT.attachments_disabled : 'Attach files (or drop them on the conversation)';
    $('node-pill').title = w.url;
    document.body.dataset.node = w.node;
    updateConvHead();
  });
  c.on('disconnected', onDisconnected);
  c.on('reconnectNotice', (f) => {
    const name = S.client.node || 'This node';
    showBanner(`${name} is going away (${f.reason || 'draining'}); moving to another node…`, false);
  });
  c.on('joined', ({ joined, rejoin }) => onJoined(joined, rejoin));
  c.on('recovered', onRecovered);
  c.on('message', onMessage);
  c.on('sent', onSent);
  c.on('sendState', onSendState);
  c.on('sendFailed', showSendFailure);
  c.on('dm', onDm);
  c.on('attachment', onAttachment);
  c.on('uploadProgress', onUploadProgress);
  c.on('uploadDone', onUploadDone);
  c.on('presence', onPresence);
  c.on('typing', onTyping);
  c.on('read', (f) => onRead(f.user, f.seq));
  c.on('left', (f) => {
    if (f.room === S.room && S.client === c && !S.leaving) backToLogin(`You were removed from ${f.room}.`);
  });
  c.on('error', (f) => {
    if (f.code === 'rate_limited') return; // a typing or read frame was dropped: harmless
    toast(`${ERROR_TEXT[f.code] || `The server reported an error (${f.code}).`}${f.message ? ` ${f.message}` : ''}`, f.code);
  });
  c.on('closed', ({ code, reason }) => {
    if (code !== 4001 || S.client !== c) return;
    const who = S.tokenSource ? 'the sign-in token' : `the name “${S.user}”`;
    backToLogin(`The server refused ${who}${reason ? `: ${reason}` : '.'}`);
  });
}

function onDisconnected({ code, reason, retryInMs, attempt, node }) {
  S.joined = false;
  const why = (code && CLOSE_TEXT[code]) || reason || `the connection closed (code ${code})`;
  if (S.haveBase) {
    if (!S.outage) {
      const el = h('li', { class: 'notice warn', data: { kind: 'reconnect', state: 'lost' } });
      S.outage = { el, from: node };
      appendNotice(el);
    }
    S.outage.el.textContent = `Lost connection to ${S.outage.from || 'the node'}: ${why}. Reconnecting…`;
    if (code) S.outage.el.dataset.code = String(code);
  }
  clearInterval(S.countdownTimer);
  S.retryAt = Date.now() + retryInMs;
  const tick = () => {
    const left = Math.max(0, S.retryAt - Date.now());
    showBanner(`Disconnected from ${node || 'the node'}: ${why} — reconnecting in ${(left / 1000).toFixed(1)} s (attempt ${attempt})`, true);
  };
  tick();
  S.countdownTimer = setInterval(tick, 200);
}

function onJoined(f, rejoin) {
  if (f.room !== S.room) return;
  S.joined = true;
  hideBanner();
  S.firstSeq = f.first_seq || 0;
  const before = new Set(S.members);
  S.members = new Set(f.members || []);
  // A big room lists only its first members (sorted); the rest are counted, not named.
  S.membersUnlisted = Math.max(0, (f.members_total || 0) - S.members.size);
  for (const u of before) if (!S.members.has(u) && u !== S.user && !S.membersUnlisted) markAway(u, Date.now());
  for (const u of S.members) S.away.delete(u);
  for (const [u, seq] of Object.entries(f.read || {})) bumpRead(u, seq);
  if (!rejoin) {
    S.haveBase = true;
    if (f.last_seq > 0) loadHistory(f.last_seq + 1, { initial: true });
  } else {
    const el = S.outage ? S.outage.el : h('li', { class: 'notice', data: { kind: 'reconnect' } });
    if (!S.outage) appendNotice(el);
    S.outage = null;
    el.className = 'notice ok';
    el.dataset.state = 'recovering';
    S.recoveryEl = el;
  }
  renderMembers();
  renderSeen();
  updateConvHead();
  requestLastSeen();
  scheduleRead();
}

function onRecovered(r) {
  const el = S.recoveryEl;
  if (!el || r.room !== S.room) return;
  S.recoveryEl = null;
  const where = r.previousNode && r.previousNode !== r.node ? `${r.node} (was ${r.previousNode})` : r.node;
  let what = r.target <= r.since ? 'no messages were missed' : `recovered ${r.count} missed message${r.count === 1 ? '' : 's'}`;
  if (r.gone) what += '; older ones are no longer kept';
  el.textContent = `Reconnected to ${where} — ${what}`;
  el.dataset.recovered = String(r.count);
  el.dataset.state = 'done';
}

// ---------------------------------------------------------------- room messages

function messageEl(m) {
  const mine = m.from === S.user;
  const d = new Date(m.ts);
  const el = h(
    'li',
    { class: `msg${mine ? ' mine' : ''}`, data: { seq: String(m.seq), from: m.from } },
    avatar(m.from),
    h(
      'div',
      { class: 'bubble' },
      h(
        'div',
        { class: 'meta' },
        h('span', { class: 'from', text: mine ? `${m.from} (you)` : m.from }),
        h('time', { datetime: d.toISOString(), title: d.toLocaleString(), text: fmtTime(m.ts) }),
      ),
      h('div', { class: 'body', text: m.body, hidden: !m.body }),
      attachmentsEl(m),
      h('div', { class: 'seen', hidden: true }),
    ),
  );
  markAllFailed(el, m);
  return el;
}

/** Puts `el` after the last message with a lower sequence (and after notices that follow it). */
function placeBySeq(list, el, seq) {
  let anchor = list.lastElementChild;
  while (anchor && !(anchor.classList.contains('msg') && Number(anchor.dataset.seq) < seq)) {
    anchor = anchor.previousElementSibling;
  }
  if (!anchor) {
    const firstMsg = list.querySelector(':scope > .msg');
    if (firstMsg) list.insertBefore(el, firstMsg);
    else list.append(el);
    return;
  }
  let next = anchor.nextElementSibling;
  while (next && !next.classList.contains('msg')) next = next.nextElementSibling;
  if (next) list.insertBefore(el, next);
  else list.append(el);
}

/** Shows a room message once per sequence; returns whether it was new. */
function upsertRoomMessage(m) {
  const known = S.msgs.get(m.seq);
  if (known) {
    // A history page (or recovery) may bring newer attachment states or fresh URLs.
    for (const a of m.attachments || []) updateAttachment(known, a);
    return false;
  }
  const list = $('messages');
  const stick = nearBottom();
  const el = messageEl(m);
  placeBySeq(list, el, m.seq);
  S.msgs.set(m.seq, { el, m });
  observer.observe(el);
  if (stick || m.from === S.user) scrollToBottom();
  if (m.from !== S.user && !S.members.has(m.from) && !S.away.has(m.from)) {
    S.away.set(m.from, { online: false, last_seen: null, unknown: true });
    requestLastSeenSoon();
  }
  return true;
}

function onMessage({ message: m, recovered, own }) {
  if (m.room !== S.room) return;
  if (own && m.client_id) dropPendingEl(m.client_id);
  if (upsertRoomMessage(m) && recovered) S.msgs.get(m.seq).el.classList.add('recovered');
  clearTyping(m.from);
  renderSeen();
  scheduleRead();
}

/** Asks the client for a page of history and shows it (`initial`: the newest page after the first join). */
async function loadHistory(before, { initial = false, older = false } = {}) {
  const client = S.client;
  let page;
  try {
    page = await client.history(S.room, { before, limit: HISTORY_PAGE });
  } catch (err) {
    if (err.code !== 'disconnected' && S.client === client) toast(`Could not load history: ${err.message}`, err.code);
    return;
  }
  if (S.client !== client) return;
  const scroller = $('scroller');
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const stick = nearBottom();
  for (const m of page.messages || []) upsertRoomMessage(m);
  if (older) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  else if (stick || initial) scrollToBottom();
  if (S.msgs.size) {
    const oldest = Math.min(...S.msgs.keys());
    $('older-btn').hidden = S.active !== 'room' || !(page.has_more || oldest > Math.max(1, S.firstSeq));
  }
  renderSeen();
  scheduleRead();
}

function loadOlder() {
  if (!S.msgs.size) return;
  loadHistory(Math.min(...S.msgs.keys()), { older: true });
}

// ---------------------------------------------------------------- sending

function onSent(s) {
  dropPendingEl(s.clientId);
  if (s.kind === 'dm') {
    const d = { id: s.id, from: S.user, to: s.to, ts: s.ts, body: s.body, client_id: s.clientId };
    if (s.attachments) d.attachments = s.attachments;
    addDm(s.to, d);
    scrollToBottom();
  }
}

/** A send failed for good (refused by the node, or by the client's own checks before it went out). */
function showSendFailure(f) {
  const withFiles = S.previews.has(f.clientId);
  let base = ERROR_TEXT[f.code] || `The server reported an error (${f.code}).`;
  if (withFiles && f.code === 'too_large') {
    const max = S.client && S.client.limits && S.client.limits.max_attachment_bytes;
    base = `A file is too large${max ? ` (the limit is ${fmtSize(max)})` : ''}.`;
  }
  failPending(f.clientId, `${base} ${f.message || ''}`.trim(), f.code);
  if (f.code !== 'cancelled') toast(`Not sent: ${base}`, f.code);
}

function onSendState({ clientId, state, retryInMs, code }) {
  const el = S.pendingEls.get(clientId);
  const st = el && el.querySelector('.state > span');
  if (!st) return;
  if (state === 'sent') st.textContent = 'Sending…';
  else if (state === 'paused' || state === 'retrying') {
    st.textContent = `${ERROR_TEXT[code] || ''} Sending again in ${(retryInMs / 1000).toFixed(1)} s…`.trim();
    if (state === 'paused') toast(`${ERROR_TEXT[code]} Your messages are queued and go out in order.`, code);
  }
}

function dropPendingEl(cid) {
  const el = S.pendingEls.get(cid);
  if (!el) return;
  el.remove();
  S.pendingEls.delete(cid);
}

function failPending(cid, text, code) {
  const el = S.pendingEls.get(cid);
  if (!el) return;
  S.pendingEls.delete(cid);
  el.classList.add('failed');
  el.dataset.error = code || 'error';
  const st = el.querySelector('.state');
  st.replaceChildren(`Not sent: ${text} `);
  st.append(h('button', { type: 'button', class: 'link', text: 'Dismiss', onclick: () => el.remove() }));
}

function pendingEl(body, cid, handle, files) {
  // Until the ack names them, a send's files are drawn as pending under made-up ids (client_id#index).
  const atts = files.map((f, i) => ({ id: `${cid}#${i}`, name: f.name || 'file', size: f.size, type: f.type, state: 'pending' }));
  return h(
    'li',
    { class: 'msg mine pending', data: { clientId: cid, from: S.user } },
    avatar(S.user),
    h(
      'div',
      { class: 'bubble' },
      h('div', { class: 'meta' }, h('span', { class: 'from', text: `${S.user} (you)` })),
      h('div', { class: 'body', text: body, hidden: !body }),
      atts.length ? attachmentsEl({ attachments: atts, client_id: cid }) : null,
      h(
        'div',
        { class: 'state' },
        h('span', { text: S.client.state === 'connected' ? 'Sending…' : 'Waiting for a connection…' }),
        files.length ? ' ' : null,
        files.length ? h('button', { type: 'button', class: 'link cancel-send', text: 'Cancel', onclick: () => handle.cancel() }) : null,
      ),
    ),
  );
}

function submitComposer() {
  const input = $('composer-input');
  const files = S.tray.map((t) => t.file);
  const body = input.value.trim() || !files.length ? input.value : '';
  if (!body.trim() && !files.length) return;
  const max = (S.client.limits && S.client.limits.max_body_chars) || 4000;
  if ([...body].length > max) {
    toast(`${ERROR_TEXT.too_large} The limit is ${max} characters.`, 'too_large');
    return;
  }
  const options = files.length ? { files } : {};
  let handle;
  let list;
  if (S.active === 'room') {
    handle = S.client.send(S.room, body, options);
    list = $('messages');
  } else {
    const peer = S.active.slice(3);
    handle = S.client.dm(peer, body, options);
    list = dmConv(peer).log;
  }
  if (files.length) {
    // The local previews stand in for the images until their thumbnails are ready.
    const previews = S.tray.map((t) => t.preview);
    S.previews.set(handle.clientId, previews);
    S.handles.set(handle.clientId, handle);
    clearTray(false);
    handle.uploads.then(() => S.handles.delete(handle.clientId));
    handle.uploads.then(() =>
      setTimeout(() => {
        S.previews.delete(handle.clientId);
        for (const url of previews) if (url) URL.revokeObjectURL(url);
      }, 60000),
    );
  }
  // An acknowledgement can only come later (over the network), so the element is in place for it.
  const el = pendingEl(body, handle.clientId, handle, files);
  S.pendingEls.set(handle.clientId, el);
  list.append(el);
  // A send the client refuses itself (a file too large, of a type the node does not take) resolves
  // without a `sendFailed` event.
  handle.result.then((r) => {
    if (!r.ok && S.pendingEls.get(r.clientId) === el) showSendFailure(r);
  });
  input.value = '';
  autosize();
  updateCounter();
  scrollToBottom();
}

function onComposerInput() {
  autosize();
  updateCounter();
  if (S.active === 'room' && $('composer-input').value) S.client.typing(S.room);
}

function autosize() {
  const t = $('composer-input');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

function updateCounter() {
  const max = (S.client && S.client.limits && S.client.limits.max_body_chars) || 4000;
  const n = [...$('composer-input').value].length;
  const hint = $('composer-hint');
  if (n > max * 0.8) {
    hint.textContent = `${n} / ${max} characters`;
    hint.classList.toggle('over', n > max);
  } else {
    hint.textContent = 'Enter sends, Shift+Enter adds a line';
    hint.classList.remove('over');
  }
}


// ---------------------------------------------------------------- files

function fmtSize(n) {
  if (!(n >= 0)) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Images a browser shows inline (SVG is served as a download, never inline). */
function isImage(type) {
  return /^image\/(png|jpeg|gif|webp)$/i.test(type || '');
}

/** A short label for a file card: its extension, else the subtype. */
function fileLabel(name, type) {
  const ext = /\.([A-Za-z0-9]{1,5})$/.exec(name || '');
  return (ext ? ext[1] : (type || 'file').split('/').pop()).slice(0, 5);
}

function attachmentText(a) {
  return ATTACHMENT_ERROR_TEXT[a.error] || a.reason || a.error || 'the upload failed';
}

/** "Uploading 40%" for this page's own uploads, else "Waiting for the upload…". */
function pendingText(id) {
  const p = S.progress.get(id);
  if (!p || !p.total) return 'Waiting for the upload…';
  return `Uploading ${Math.floor((100 * p.sent) / p.total)}%`;
}

function progressBar(id) {
  const p = S.progress.get(id);
  return p ? h('progress', { max: String(p.total), value: String(p.sent), 'aria-label': 'Upload progress' }) : null;
}

/** "Cancel" on a file this page is uploading: stops every upload of its message. */
function cancelButton(id) {
  const handle = S.handles.get(S.uploadOf.get(id));
  if (!handle) return null;
  return h('button', { type: 'button', class: 'link cancel-upload', text: 'Cancel upload', onclick: () => handle.cancel() });
}

/** Resolves a node URL (relative to the node's HTTP base) for an `src` or `href`. */
function nodeUrl(url) {
  try {
    return S.client.resolveUrl(url);
  } catch {
    return null;
  }
}

/** One file of a message, drawn for its state; `preview` is the sender's local image while pending. */
function attachmentEl(a, preview) {
  const wrap = h('div', { class: 'att', data: { attId: a.id, state: a.state, type: a.type || '' } });
  const href = a.state === 'ready' && a.url ? nodeUrl(a.url) : null;
  const thumb = a.state === 'ready' && a.thumbnail_url ? nodeUrl(a.thumbnail_url) : null;
  if (href && thumb) {
    // Shown at most 320 px on the long side, with the image's own proportions reserved.
    const scale = a.width && a.height ? Math.min(1, 320 / Math.max(a.width, a.height)) : 0;
    const img = h('img', {
      src: thumb,
      alt: a.name,
      width: scale ? Math.round(a.width * scale) : null,
      height: scale ? Math.round(a.height * scale) : null,
    });
    img.addEventListener('error', () => refreshUrls(a.id));
    wrap.addEventListener('click', (ev) => checkLink(ev, a.id));
    wrap.append(h('a', { class: 'att-thumb', href, target: '_blank', rel: 'noopener', title: `${a.name} · ${fmtSize(a.size)} — open the full image` }, img));
    return wrap;
  }
  if (a.state === 'pending' && preview) {
    wrap.append(
      h('img', { class: 'att-preview', src: preview, alt: a.name }),
      h('div', { class: 'att-overlay' }, h('span', { class: 'att-status', text: pendingText(a.id) }), progressBar(a.id), cancelButton(a.id)),
    );
    return wrap;
  }
  let sub;
  if (a.state === 'failed') sub = h('span', { class: 'att-sub att-error', text: `Upload failed: ${attachmentText(a)}` });
  else if (a.state === 'pending') sub = h('span', { class: 'att-sub' }, `${fmtSize(a.size)} · `, h('span', { class: 'att-status', text: pendingText(a.id) }));
  else sub = h('span', { class: 'att-sub', text: `${fmtSize(a.size)} · ${a.type}` });
  wrap.append(
    h(
      'div',
      { class: 'att-card' },
      h('span', { class: 'file-icon', 'aria-hidden': 'true', text: fileLabel(a.name, a.type) }),
      h(
        'span',
        { class: 'att-info' },
        h('span', { class: 'att-name', title: a.name, text: a.name }),
        sub,
        a.state === 'pending' ? progressBar(a.id) : null,
        a.state === 'pending' ? cancelButton(a.id) : null,
      ),
      href ? h('a', { class: 'download', href, download: a.name, target: '_blank', rel: 'noopener', text: 'Download' }) : null,
    ),
  );
  if (href) wrap.addEventListener('click', (ev) => ev.target.closest('a') && checkLink(ev, a.id));
  return wrap;
}

/** The files of message `m` (null without any). */
function attachmentsEl(m) {
  const list = Array.isArray(m.attachments) ? m.attachments : [];
  if (!list.length) return null;
  // Local previews only for this user's own sends (client ids are not unique across users).
  const own = m.from === undefined || m.from === S.user;
  const previews = (own && m.client_id && S.previews.get(m.client_id)) || [];
  return h('div', { class: 'atts' }, list.map((a, i) => attachmentEl(a, previews[i] || null)));
}

/** A message whose files all failed is shown as failed. */
function markAllFailed(el, m) {
  const list = Array.isArray(m.attachments) ? m.attachments : [];
  const failed = list.length > 0 && list.every((a) => a.state === 'failed');
  el.classList.toggle('att-failed', failed);
  if (failed) el.dataset.failed = 'attachments';
  else delete el.dataset.failed;
}

/** Shows attachment state `a` in a shown message (`entry`: {el, m}); an older `pending` never undoes a final state. */
function updateAttachment(entry, a) {
  const list = entry.m.attachments || [];
  const i = list.findIndex((x) => x.id === a.id);
  if (i < 0) return;
  const old = list[i];
  if (old.state !== 'pending' && a.state === 'pending') return;
  if (old.state === a.state && old.url === a.url && old.thumbnail_url === a.thumbnail_url) return;
  list[i] = a;
  if (a.state !== 'pending') S.progress.delete(a.id);
  const own = entry.m.from === S.user;
  const previews = (own && entry.m.client_id && S.previews.get(entry.m.client_id)) || [];
  const shown = entry.el.querySelector(`.att[data-att-id="${CSS.escape(a.id)}"]`);
  const stick = nearBottom();
  if (shown) shown.replaceWith(attachmentEl(a, previews[i] || null));
  markAllFailed(entry.el, entry.m);
  if (stick) scrollToBottom();
}

/** The shown message (room or direct) that has attachment `id`. */
function entryOf(id) {
  for (const entry of S.msgs.values()) if ((entry.m.attachments || []).some((a) => a.id === id)) return entry;
  for (const c of S.dms.values()) {
    for (const entry of c.msgs.values()) if ((entry.m.attachments || []).some((a) => a.id === id)) return entry;
  }
  return null;
}

function onAttachment(e) {
  let entry = null;
  if (e.room !== undefined) entry = e.room === S.room ? S.msgs.get(e.seq) : null;
  else {
    const peer = e.from === S.user ? e.to : e.from;
    const c = S.dms.get(peer);
    entry = c ? c.msgs.get(e.messageId) : null;
  }
  entry = entry || entryOf(e.attachment.id);
  if (entry) updateAttachment(entry, e.attachment);
}

function onUploadProgress(p) {
  const id = p.id || `${p.clientId}#${p.index}`;
  S.progress.set(id, { sent: p.sent, total: p.total });
  if (p.id) S.uploadOf.set(p.id, p.clientId);
  for (const el of document.querySelectorAll(`.att[data-att-id="${CSS.escape(id)}"][data-state="pending"]`)) {
    const box = el.querySelector('.att-info') || el.querySelector('.att-overlay') || el;
    if (p.id && !el.querySelector('.cancel-upload')) {
      const cancel = cancelButton(p.id);
      if (cancel) box.append(cancel);
    }
    const status = el.querySelector('.att-status');
    if (status) status.textContent = pendingText(id);
    let bar = el.querySelector('progress');
    if (!bar) {
      bar = progressBar(id);
      box.insertBefore(bar, el.querySelector('.cancel-upload'));
    }
    bar.max = p.total;
    bar.value = p.sent;
  }
}

/** An upload of this page ended; one that failed here (network, cancelled) shows so at once. */
function onUploadDone(r) {
  if (!r.id) return;
  S.progress.delete(r.id);
  S.uploadOf.delete(r.id);
  for (const b of document.querySelectorAll(`.att[data-att-id="${CSS.escape(r.id)}"] .cancel-upload`)) b.remove();
  if (r.state === 'ready') return;
  const entry = entryOf(r.id);
  if (!entry) return;
  const a = (entry.m.attachments || []).find((x) => x.id === r.id);
  if (a && a.state === 'pending') {
    updateAttachment(entry, r.attachment && r.attachment.state === 'failed' ? r.attachment : { ...a, state: 'failed', error: r.code || r.state, reason: r.message });
  }
}

/** A thumbnail that did not load may have an expired URL (410): fetch the message once for fresh ones. */
async function refreshUrls(id) {
  if (S.refreshed.has(id) || !S.client) return;
  S.refreshed.add(id);
  const entry = entryOf(id);
  if (!entry || entry.m.seq === undefined || entry.m.room !== S.room) return;
  try {
    const m = await S.client.refreshMessage(S.room, entry.m.seq);
    for (const a of (m && m.attachments) || []) updateAttachment(entry, a);
  } catch {
    // disconnected: the image stays broken until the next page load
  }
}

/** A download link past its expiry is fetched again before the browser follows it. */
function checkLink(ev, id) {
  const entry = entryOf(id);
  const a = entry && (entry.m.attachments || []).find((x) => x.id === id);
  const exp = a && a.url ? Number(new URL(a.url, window.location.href).searchParams.get('exp')) : 0;
  if (!exp || exp > Date.now() + 5000) return;
  ev.preventDefault();
  S.refreshed.delete(id);
  refreshUrls(id);
  toast('That link had expired; it is renewed — click again.', 'info');
}

// The tray: files picked for the next send.

function addFiles(list) {
  const files = [...(list || [])];
  if (!files.length) return;
  const most = (S.client && S.client.limits && S.client.limits.max_attachments) || 10;
  for (const file of files) {
    if (S.tray.length >= most) {
      toast(`At most ${most} files per message.`, 'invalid_attachment');
      break;
    }
    S.tray.push({ file, preview: isImage(file.type) ? URL.createObjectURL(file) : null });
  }
  renderTray();
  $('composer-input').focus();
}

function removeFromTray(i) {
  const [t] = S.tray.splice(i, 1);
  if (t && t.preview) URL.revokeObjectURL(t.preview);
  renderTray();
}

function renderTray() {
  const ul = $('attach-tray');
  ul.replaceChildren(
    ...S.tray.map((t, i) =>
      h(
        'li',
        { data: { name: t.file.name } },
        t.preview ? h('img', { src: t.preview, alt: '' }) : h('span', { class: 'file-icon', 'aria-hidden': 'true', text: fileLabel(t.file.name, t.file.type) }),
        h('span', { class: 'att-info' }, h('span', { class: 'name', title: t.file.name, text: t.file.name }), h('span', { class: 'att-sub', text: fmtSize(t.file.size) })),
        h('button', { type: 'button', 'aria-label': `Remove ${t.file.name}`, title: 'Remove', text: '×', onclick: () => removeFromTray(i) }),
      ),
    ),
  );
  ul.hidden = S.tray.length === 0;
}

function clearTray(revoke) {
  if (revoke) for (const t of S.tray) if (t.preview) URL.revokeObjectURL(t.preview);
  S.tray = [];
  renderTray();
}

function wireDrop() {
  const zone = document.querySelector('.conversation');
  let depth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes('Files');
  zone.addEventListener('dragenter', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth += 1;
    $('drop-zone').hidden = false;
  });
  zone.addEventListener('dragover', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) $('drop-zone').hidden = true;
  });
  zone.addEventListener('drop', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth = 0;
    $('drop-zone').hidden = true;
    addFiles(ev.dataTransfer.files);
  });
}

// ---------------------------------------------------------------- presence, typing, read markers

function markAway(user, ts) {
  S.away.set(user, { online: false, last_seen: ts });
}

function onPresence(f) {
  if (f.room !== S.room) return;
  if (f.event === 'join') {
    S.members.add(f.user);
    S.away.delete(f.user);
    if (f.user !== S.user) appendNotice(h('li', { class: 'notice', data: { kind: 'presence' } }, `${f.user} joined`));
  } else if (f.event === 'leave') {
    S.members.delete(f.user);
    clearTyping(f.user);
    if (f.user !== S.user) {
      markAway(f.user, f.ts);
      appendNotice(h('li', { class: 'notice', data: { kind: 'presence' } }, `${f.user} left`));
      requestLastSeenSoon();
    }
  }
  renderMembers();
  updateConvHead();
}

function onTyping(f) {
  if (f.room !== S.room || f.user === S.user) return;
  clearTimeout(S.typing.get(f.user));
  S.typing.set(
    f.user,
    setTimeout(() => clearTyping(f.user), TYPING_SHOW_FOR_MS),
  );
  renderTyping();
}

function clearTyping(user) {
  if (!S.typing.has(user)) return;
  clearTimeout(S.typing.get(user));
  S.typing.delete(user);
  renderTyping();
}

function renderTyping() {
  const names = [...S.typing.keys()].sort();
  const el = $('typing');
  if (S.active !== 'room' || names.length === 0) el.textContent = '';
  else if (names.length === 1) el.textContent = `${names[0]} is typing…`;
  else if (names.length <= 3) el.textContent = `${joinNames(names)} are typing…`;
  else el.textContent = 'Several people are typing…';
}

function bumpRead(user, seq) {
  if ((S.reads.get(user) || 0) < seq) S.reads.set(user, seq);
}

function onRead(user, seq) {
  bumpRead(user, seq);
  renderSeen();
}

function renderSeen() {
  const seqs = [...S.msgs.keys()].sort((a, b) => a - b);
  const groups = new Map();
  for (const [user, marker] of S.reads) {
    if (user === S.user) continue;
    let lo = 0;
    let hi = seqs.length - 1;
    let idx = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (seqs[mid] <= marker) {
        idx = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    // "Seen by bob" belongs under the last message bob has read that someone else wrote.
    while (idx >= 0 && S.msgs.get(seqs[idx]).m.from === user) idx -= 1;
    if (idx < 0) continue;
    const at = seqs[idx];
    if (!groups.has(at)) groups.set(at, []);
    groups.get(at).push(user);
  }
  const next = new Map();
  for (const [seq, users] of groups) next.set(seq, `Seen by ${joinNames(users.sort())}`);
  for (const seq of new Set([...S.seenShown.keys(), ...next.keys()])) {
    const text = next.get(seq);
    if (S.seenShown.get(seq) === text) continue;
    const entry = S.msgs.get(seq);
    if (!entry) continue;
    const seen = entry.el.querySelector('.seen');
    seen.textContent = text || '';
    seen.hidden = !text;
  }
  S.seenShown = next;
}

const observer = new IntersectionObserver(
  (entries) => {
    for (const e of entries) {
      const seq = Number(e.target.dataset.seq);
      if (e.isIntersecting) S.visible.add(seq);
      else S.visible.delete(seq);
    }
    scheduleRead();
  },
  { threshold: 0.6 },
);

function scheduleRead() {
  clearTimeout(S.readTimer);
  S.readTimer = setTimeout(sendRead, 300);
}

function sendRead() {
  if (!S.joined || document.visibilityState !== 'visible' || S.active !== 'room') return;
  let top = 0;
  for (const seq of S.visible) if (seq > top && S.msgs.has(seq)) top = seq;
  if (top > 0) S.client.markRead(S.room, top);
}

// ---------------------------------------------------------------- last seen

let lastSeenTimer = null;

function requestLastSeenSoon() {
  clearTimeout(lastSeenTimer);
  lastSeenTimer = setTimeout(requestLastSeen, 400);
}

async function requestLastSeen() {
  const users = [...new Set([...S.away.keys(), ...S.dms.keys()])].filter((u) => !S.members.has(u)).slice(0, 100);
  if (!users.length || !S.client) return;
  let f;
  try {
    f = await S.client.lastSeen(users);
  } catch {
    return; // asked again on the next join or timer
  }
  for (const [user, info] of Object.entries(f.users || {})) {
    if (S.members.has(user)) continue;
    S.away.set(user, { online: !!info.online, last_seen: info.last_seen ?? null });
  }
  renderMembers();
  updateConvHead();
}

function awayText(info) {
  if (info.online) return 'online, not in this room';
  if (info.last_seen) return `last seen ${ago(info.last_seen)}`;
  return 'not seen recently';
}

// ---------------------------------------------------------------- direct messages

function dmConv(peer) {
  let c = S.dms.get(peer);
  if (!c) {
    const log = h('ol', { class: 'messages dm-log', role: 'log', 'aria-live': 'polite', 'aria-label': `Direct messages with ${peer}`, data: { peer }, hidden: true });
    $('scroller').append(log);
    c = { log, ids: new Set(), unread: 0, msgs: new Map() };
    S.dms.set(peer, c);
    renderConversations();
  }
  return c;
}

function addDm(peer, d) {
  const c = dmConv(peer);
  if (c.ids.has(d.id)) return false;
  c.ids.add(d.id);
  const mine = d.from === S.user;
  const when = new Date(d.ts);
  const el = h(
    'li',
    { class: `msg${mine ? ' mine' : ''}`, data: { dmId: d.id, from: d.from } },
    avatar(d.from),
    h(
      'div',
      { class: 'bubble' },
      h(
        'div',
        { class: 'meta' },
        h('span', { class: 'from', text: mine ? `${d.from} (you)` : d.from }),
        h('time', { datetime: when.toISOString(), title: when.toLocaleString(), text: fmtTime(d.ts) }),
      ),
      h('div', { class: 'body', text: d.body, hidden: !d.body }),
      attachmentsEl(d),
    ),
  );
  markAllFailed(el, d);
  c.log.append(el);
  c.msgs.set(d.id, { el, m: d });
  if (c.msgs.size > 1000) c.msgs.delete(c.msgs.keys().next().value);
  return true;
}

function onDm(d) {
  const peer = d.from === S.user ? d.to : d.from;
  if (!addDm(peer, d)) return;
  if (S.active !== `dm:${peer}`) {
    dmConv(peer).unread += 1;
    renderConversations();
    toast(`New direct message from ${d.from}`, 'dm');
  } else scrollToBottom();
}

function openConversation(key) {
  S.active = key;
  if (key.startsWith('dm:')) {
    const t = toasts.get(`New direct message from ${key.slice(3)}`);
    if (t) {
      clearTimeout(t.timer);
      t.el.remove();
      toasts.delete(`New direct message from ${key.slice(3)}`);
    }
  }
  $('messages').hidden = key !== 'room';
  for (const [peer, c] of S.dms) {
    c.log.hidden = key !== `dm:${peer}`;
    if (key === `dm:${peer}`) c.unread = 0;
  }
  $('older-btn').hidden = key !== 'room' || !S.msgs.size || Math.min(...S.msgs.keys()) <= Math.max(1, S.firstSeq);
  const label = key === 'room' ? `Message #${S.room}` : `Message ${key.slice(3)} directly`;
  $('composer-input').placeholder = label;
  $('composer-label').textContent = label;
  renderConversations();
  renderTyping();
  updateConvHead();
  scrollToBottom();
  $('composer-input').focus();
  scheduleRead();
}

function openDm(peer) {
  dmConv(peer);
  openConversation(`dm:${peer}`);
}

// ---------------------------------------------------------------- rendering of side panels

function renderConversations() {
  const ul = $('conversations');
  const items = [
    h(
      'li',
      {},
      h('button', { type: 'button', class: 'conv', 'aria-current': S.active === 'room' ? 'true' : null, data: { conv: 'room' }, onclick: () => openConversation('room') }, h('span', { class: 'hash', 'aria-hidden': 'true', text: '#' }), S.room || ''),
    ),
  ];
  for (const [peer, c] of S.dms) {
    const key = `dm:${peer}`;
    items.push(
      h(
        'li',
        {},
        h(
          'button',
          { type: 'button', class: 'conv', 'aria-current': S.active === key ? 'true' : null, data: { conv: key }, onclick: () => openConversation(key) },
          h('span', { class: 'hash', 'aria-hidden': 'true', text: '@' }),
          peer,
          c.unread ? h('span', { class: 'badge', 'aria-label': `${c.unread} unread`, text: String(c.unread) }) : null,
        ),
      ),
    );
  }
  ul.replaceChildren(...items);
}

function memberButton(user, extra) {
  const me = user === S.user;
  return h(
    'li',
    { data: { user } },
    h(
      'button',
      {
        type: 'button',
        class: 'member',
        disabled: me,
        title: me ? 'You' : `Send ${user} a direct message`,
        onclick: me ? null : () => openDm(user),
      },
      avatar(user),
      h('span', { class: 'name', text: me ? `${user} (you)` : user }),
      extra ? h('span', { class: 'sub', text: extra }) : null,
    ),
  );
}

function renderMembers() {
  const names = [...S.members].sort();
  const more = S.membersUnlisted ? [h('li', { class: 'sub', text: `and ${S.membersUnlisted} more` })] : [];
  $('members').replaceChildren(...names.map((u) => memberButton(u)), ...more);
  $('member-count').textContent = String(names.length + S.membersUnlisted);
  const away = [...S.away.entries()].filter(([u]) => !S.members.has(u) && u !== S.user).sort(([a], [b]) => a.localeCompare(b));
  $('away').replaceChildren(...away.map(([u, info]) => memberButton(u, awayText(info))));
  $('away-section').hidden = away.length === 0;
}

function updateConvHead() {
  if (S.active === 'room') {
    $('conv-title').textContent = `#${S.room}`;
    const n = S.members.size + S.membersUnlisted;
    $('conv-sub').textContent = `${n} member${n === 1 ? '' : 's'} here`;
  } else {
    const peer = S.active.slice(3);
    $('conv-title').textContent = `@${peer}`;
    const info = S.away.get(peer);
    $('conv-sub').textContent = S.members.has(peer) ? 'Direct message · in this room' : info ? `Direct message · ${awayText(info)}` : 'Direct message';
  }
}

function appendNotice(el) {
  const stick = nearBottom();
  $('messages').append(el);
  if (stick) scrollToBottom();
}

function nearBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToBottom() {
  const s = $('scroller');
  s.scrollTop = s.scrollHeight;
}

// ---------------------------------------------------------------- login / leave

function showLoginError(text) {
  const el = $('login-error');
  el.textContent = text;
  el.hidden = !text;
}

function backToLogin(error) {
  const client = S.client;
  S.client = null;
  if (client) client.close();
  hideBanner();
  $('chat-view').hidden = true;
  $('login-view').hidden = false;
  setConn('idle', 'Not connected');
  showLoginError(error || '');
  $('login-user').focus();
}

function resetRoomState() {
  for (const t of S.typing.values()) clearTimeout(t);
  Object.assign(S, {
    joined: false,
    leaving: false,
    haveBase: false,
    firstSeq: 0,
    msgs: new Map(),
    pendingEls: new Map(),
    members: new Set(),
    membersUnlisted: 0,
    away: new Map(),
    reads: new Map(),
    typing: new Map(),
    dms: new Map(),
    active: 'room',
    outage: null,
    recoveryEl: null,
    visible: new Set(),
    seenShown: new Map(),
    progress: new Map(),
    refreshed: new Set(),
    handles: new Map(),
    uploadOf: new Map(),
  });
  clearTray(true);
  observer.disconnect();
  $('messages').replaceChildren();
  for (const el of document.querySelectorAll('.dm-log')) el.remove();
}

function start(user, room) {
  resetRoomState();
  S.user = user;
  S.room = room;
  const url = new URL(window.location.href);
  url.searchParams.set('user', user);
  url.searchParams.set('room', room);
  window.history.replaceState(null, '', url);
  document.title = `#${room} · Switchboard`;
  $('login-view').hidden = true;
  $('chat-view').hidden = false;
  hideBanner();
  showLoginError('');
  const client = new SwitchboardClient(
    S.tokenSource ? { registry: window.location.origin, token: pageToken } : { registry: window.location.origin, user },
  );
  S.client = client;
  wire(client);
  renderConversations();
  renderMembers();
  openConversation('room');
  client.connect();
  client.join(room).catch((err) => {
    if (S.client !== client) return;
    if (err.code === 'invalid_name') backToLogin(`The server refused the room name “${room}”. ${err.message}`);
    else if (err.code !== 'closed') backToLogin(`${ERROR_TEXT[err.code] || 'Could not join.'} ${err.message}`);
  });
}

async function onLogin(ev) {
  ev.preventDefault();
  if (!S.tokenSource) {
    if (embeddedToken()) S.tokenSource = 'embed';
    else {
      try {
        const res = await fetch('/v1/auth', { cache: 'no-store', headers: { accept: 'application/json' } });
        if (res.ok && (await res.json()).dev_token_issuer === true) S.tokenSource = 'dev';
      } catch {
        // an older server without /v1/auth: open mode
      }
    }
  }
  if (S.tokenSource === 'dev') S.token = null;
  S.tokenExp = 0;
  const user = $('login-user').value.trim();
  const room = $('login-room').value.trim();
  if (!USER_NAME.test(user)) {
    showLoginError(`“${user}” is not a valid name: use 1–32 letters, digits, _ . -, starting with a letter or digit.`);
    $('login-user').focus();
    return;
  }
  if (!ROOM_NAME.test(room)) {
    showLoginError(`“${room}” is not a valid room: 1–64 letters, digits, _ . - :, starting with a letter or digit.`);
    $('login-room').focus();
    return;
  }
  start(user, room);
}

function leave() {
  S.leaving = true;
  backToLogin('');
}

// ---------------------------------------------------------------- wiring

function init() {
  $('login-form').addEventListener('submit', onLogin);
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitComposer();
  });
  const input = $('composer-input');
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submitComposer();
    }
  });
  input.addEventListener('input', onComposerInput);
  input.addEventListener('paste', (ev) => {
    // A pasted image (a screenshot) goes to the tray like a picked file.
    const files = ev.clipboardData ? [...ev.clipboardData.files] : [];
    if (!files.length) return;
    ev.preventDefault();
    addFiles(files);
  });
  $('leave-btn').addEventListener('click', leave);
  $('attach-btn').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', (ev) => {
    addFiles(ev.target.files);
    ev.target.value = '';
  });
  wireDrop();
  $('older-btn').addEventListener('click', loadOlder);
  $('banner-retry').addEventListener('click', () => S.client && S.client.reconnectNow());
  document.addEventListener('visibilitychange', scheduleRead);
  setInterval(() => {
    if (S.joined) requestLastSeen();
  }, 60000);
  setInterval(renderMembers, 30000);

  const q = new URLSearchParams(window.location.search);
  const embedded = embeddedToken();
  if (embedded) {
    // The application decides who this is; the name field only shows it.
    S.tokenSource = 'embed';
    $('login-user').value = tokenClaims(embedded).sub || '';
    $('login-user').readOnly = true;
  } else if (q.get('user')) $('login-user').value = q.get('user');
  if (q.get('room')) $('login-room').value = q.get('room');
  if (q.get('user') && q.get('room') && q.get('autojoin') === '1') $('login-form').requestSubmit();
  else $(q.get('user') ? 'login-room' : 'login-user').focus();
}

init();
