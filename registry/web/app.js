// Switchboard web chat client.
//
// Written from chat-node/PROTOCOL.md alone. Flow: ask the registry (same origin) for a node with
// GET /v1/assign, open the WebSocket it names, join one room, and keep going when the node goes away:
// ask the registry again with backoff and jitter, re-join with `since` = the last contiguous sequence
// seen, merge what comes back by `seq` (so nothing shows twice) and resend unacknowledged sends with the
// same `client_id` (so nothing is stored twice).
//
// Identity (PROTOCOL.md section 2): a token from the embedding application (`window.SWITCHBOARD_TOKEN`
// or the URL fragment `#token=...`, never a query string) is sent in the first `hello` frame and renewed
// with `refresh` before it expires. Without one, the page asks `GET /v1/auth`: where a development token
// issuer runs it mints a short-lived token for the typed name (`POST /v1/dev-token`), otherwise (open
// mode) the name goes as `?user=`.
//
// All user content reaches the DOM through textContent (see `h`); no string is ever parsed as markup.
'use strict';

(() => {
  const USER_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
  const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
  // PROTOCOL.md section 1: 250 ms doubling to 10 s, +-50 % jitter.
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 10000;
  // The node relays at most one typing event per user and room every 2 s.
  const TYPING_SEND_EVERY_MS = 2000;
  const TYPING_SHOW_FOR_MS = 3500;
  // Application pings find a half-open connection long before the node's idle timeout would.
  const PING_EVERY_MS = 20000;
  const PONG_TIMEOUT_MS = 10000;
  const CONNECT_TIMEOUT_MS = 8000;
  const HISTORY_PAGE = 50;
  const SEEN_NAMES_SHOWN = 3;

  const ERROR_TEXT = {
    rate_limited: 'You are sending messages too fast.',
    too_large: 'That message is too long.',
    invalid_name: 'That name is not allowed (1–32 letters, digits, _ . -, starting with a letter or digit).',
    invalid_body: 'That message is empty or malformed.',
    not_joined: 'You are not in that room.',
    too_many_rooms: 'You have joined too many rooms on this connection.',
    unavailable: 'The server could not store that right now.',
    internal: 'The server hit an unexpected error; nothing was stored.',
    bad_frame: 'The server could not read a frame this page sent.',
    unknown_type: 'The server does not know a frame this page sent.',
    already_identified: 'The server says this connection already has a user.',
    auth_failed: 'The server refused the renewed token.',
    forbidden: 'You are not allowed to do that.',
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

  /** Renew a token this long before it expires. */
  const REFRESH_BEFORE_MS = 60000;

  const S = {
    user: null,
    token: null, // the JWT sent in hello (token mode)
    tokenSource: null, // 'embed' (from the application) | 'dev' (development issuer) | null (open mode)
    tokenExp: 0, // ms since the epoch
    refreshTimer: null,
    room: null,
    ws: null,
    epoch: 0,
    node: null,
    lastNode: null,
    nodeUrl: null,
    limits: { max_body_chars: 4000 },
    joined: false,
    leaving: false,
    attempt: 0,
    retryTimer: null,
    retryAt: 0,
    countdownTimer: null,
    pingTimer: null,
    pongTimer: null,
    connectTimer: null,
    minDelayMs: 0,
    haveBase: false,
    lastSeq: 0, // highest sequence up to which every message has been seen
    firstSeq: 0,
    msgs: new Map(), // seq -> {el, m}
    pending: new Map(), // client_id -> {kind, room|to, body, el, timer, tries}
    members: new Set(),
    membersUnlisted: 0, // members of a big room the node did not list (joined.members_total)
    away: new Map(), // user -> {online, last_seen}
    reads: new Map(), // user -> seq
    myRead: 0,
    readTimer: null,
    typing: new Map(), // user -> timeout
    lastTypingSent: 0,
    dmSeq: 0,
    dms: new Map(), // peer -> {log, ids, unread}
    active: 'room',
    outage: null, // {el, from, reason}
    recovery: null, // {el, from, since, target, count, gone, timer}
    reqN: 0,
    tokens: 1,
    tokensAt: 0,
    pausedUntil: 0,
    pumpTimer: null,
    clientN: 0,
    visible: new Set(),
    seenShown: new Map(), // seq -> text
  };

  const clientTag = Math.random().toString(36).slice(2, 8);

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

  function nextReq(prefix) {
    S.reqN += 1;
    return `${prefix}-${S.reqN}`;
  }

  function newClientId() {
    S.clientN += 1;
    return `${clientTag}-${Date.now().toString(36)}-${S.clientN}`;
  }

  function sendFrame(frame) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(frame));
    return true;
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
    if (state === 'connected' && S.node) {
      $('node-name').textContent = S.node;
      pill.title = S.nodeUrl || '';
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
  }

  // ---------------------------------------------------------------- connection lifecycle

  function backoff(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    return Math.round(base * (0.5 + Math.random()));
  }

  function scheduleReconnect(reason, minDelayMs) {
    clearTimeout(S.retryTimer);
    clearInterval(S.countdownTimer);
    const delay = Math.max(minDelayMs || 0, backoff(S.attempt));
    S.attempt += 1;
    S.retryAt = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, S.retryAt - Date.now());
      const text = `${reason} — reconnecting in ${(left / 1000).toFixed(1)} s (attempt ${S.attempt})`;
      setConn('reconnecting', 'Reconnecting…');
      showBanner(text, true);
    };
    tick();
    S.countdownTimer = setInterval(tick, 200);
    S.retryTimer = setTimeout(connect, delay);
  }

  async function connect() {
    clearTimeout(S.retryTimer);
    clearInterval(S.countdownTimer);
    const epoch = ++S.epoch;
    setConn('connecting', 'Finding a node…');
    let assign;
    try {
      await ensureToken();
      if (epoch !== S.epoch) return;
      const res = await fetch('/v1/assign', { cache: 'no-store', headers: { accept: 'application/json' } });
      if (epoch !== S.epoch) return;
      if (res.status === 503) {
        const retryAfter = Number.parseFloat(res.headers.get('retry-after') || '0');
        scheduleReconnect('No chat node is available right now', (Number.isFinite(retryAfter) ? retryAfter : 0) * 1000);
        return;
      }
      if (!res.ok) throw new Error(`the registry answered ${res.status}`);
      assign = await res.json();
      if (typeof assign.url !== 'string') throw new Error('the registry named no node');
    } catch (err) {
      if (epoch !== S.epoch) return;
      scheduleReconnect(`Cannot reach the registry (${err.message})`);
      return;
    }
    if (epoch !== S.epoch) return;
    openSocket(assign, epoch);
  }

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

  /** Makes sure `S.token` is fresh enough to connect with (token mode); nothing in open mode. */
  async function ensureToken() {
    if (S.tokenSource === 'embed') {
      S.token = embeddedToken() || S.token;
      S.tokenExp = tokenClaims(S.token).exp;
    } else if (S.tokenSource === 'dev' && (!S.token || S.tokenExp - Date.now() < REFRESH_BEFORE_MS)) {
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
  }

  /** Renews the session's token shortly before it expires (`refresh` frame, same user). */
  function scheduleRefresh() {
    clearTimeout(S.refreshTimer);
    if (!S.token || !S.tokenExp) return;
    const wait = Math.max(1000, S.tokenExp - Date.now() - REFRESH_BEFORE_MS);
    S.refreshTimer = setTimeout(async () => {
      const old = S.token;
      try {
        if (S.tokenSource === 'dev') S.tokenExp = 0;
        await ensureToken();
      } catch {
        // the node closes with 4011 at expiry; the reconnect mints again
      }
      if (S.token && S.token !== old) sendFrame({ type: 'refresh', token: S.token, req: 'refresh' });
      else scheduleRefresh();
    }, wait);
  }

  /** The registry may advertise a wildcard listen address; a browser must dial the page's host then. */
  function dialUrl(raw) {
    const u = new URL(raw, window.location.href);
    if (u.hostname === '0.0.0.0' || u.hostname === '[::]' || u.hostname === '::') u.hostname = window.location.hostname;
    if (u.protocol === 'http:') u.protocol = 'ws:';
    if (u.protocol === 'https:') u.protocol = 'wss:';
    if (!S.token) u.searchParams.set('user', S.user);
    if (S.dmSeq > 0 && !S.token) u.searchParams.set('dm_since', String(S.dmSeq));
    return u.toString();
  }

  function openSocket(assign, epoch) {
    let ws;
    try {
      ws = new WebSocket(dialUrl(assign.url));
    } catch (err) {
      scheduleReconnect(`Cannot open ${assign.url} (${err.message})`);
      return;
    }
    S.ws = ws;
    S.nodeUrl = assign.url;
    setConn('connecting', `Connecting to ${assign.node || 'a node'}…`);
    clearTimeout(S.connectTimer);
    S.connectTimer = setTimeout(() => {
      if (epoch === S.epoch && ws.readyState !== WebSocket.OPEN) dropSocket('the node did not answer in time');
    }, CONNECT_TIMEOUT_MS);
    ws.addEventListener('open', () => {
      if (epoch !== S.epoch) return;
      clearTimeout(S.connectTimer);
      if (S.token) {
        const hello = { type: 'hello', token: S.token };
        if (S.dmSeq > 0) hello.dm_since = S.dmSeq;
        ws.send(JSON.stringify(hello));
      }
    });
    ws.addEventListener('message', (ev) => {
      if (epoch !== S.epoch) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame.type === 'string') onFrame(frame);
    });
    ws.addEventListener('close', (ev) => {
      if (epoch !== S.epoch) return;
      onClosed(ev.code, ev.reason);
    });
  }

  /** Gives up on the current socket at once (its late events are ignored) and reconnects. */
  function dropSocket(why) {
    const ws = S.ws;
    S.epoch += 1;
    if (ws) {
      try {
        ws.close();
      } catch {
        // already closing
      }
    }
    lostConnection(why, 0);
  }

  function stopTimers() {
    clearInterval(S.pingTimer);
    clearTimeout(S.pongTimer);
    clearTimeout(S.connectTimer);
  }

  function onClosed(code, reason) {
    stopTimers();
    S.ws = null;
    if (S.leaving) return;
    if (code === 4001) {
      S.epoch += 1;
      const who = S.token ? 'the sign-in token' : `the name “${S.user}”`;
      backToLogin(`The server refused ${who}${reason ? `: ${reason}` : '.'}`);
      return;
    }
    if (code === 4011 && S.tokenSource === 'dev') S.tokenExp = 0;
    const why = CLOSE_TEXT[code] || `the connection closed (code ${code})`;
    let minDelay = S.minDelayMs;
    S.minDelayMs = 0;
    if (code === 4029) minDelay = Math.max(minDelay, 5000);
    lostConnection(why, minDelay, code);
  }

  function lostConnection(why, minDelay, code) {
    stopTimers();
    S.ws = null;
    S.joined = false;
    finishRecovery();
    if (S.haveBase) {
      if (!S.outage) {
        const el = h('li', { class: 'notice warn', data: { kind: 'reconnect', state: 'lost' } });
        S.outage = { el, from: S.node };
        appendNotice(el);
      }
      S.outage.el.textContent = `Lost connection to ${S.outage.from || 'the node'}: ${why}. Reconnecting…`;
      if (code) S.outage.el.dataset.code = String(code);
    }
    const name = S.node || 'the node';
    scheduleReconnect(`Disconnected from ${name}: ${why}`, minDelay);
  }

  function startPing() {
    clearInterval(S.pingTimer);
    S.pingTimer = setInterval(() => {
      if (!sendFrame({ type: 'ping', req: 'ping' })) return;
      clearTimeout(S.pongTimer);
      S.pongTimer = setTimeout(() => dropSocket('the node stopped answering'), PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  // ---------------------------------------------------------------- frames from the node

  function onFrame(f) {
    switch (f.type) {
      case 'welcome':
        return onWelcome(f);
      case 'refreshed':
        S.tokenExp = f.expires_at;
        return scheduleRefresh();
      case 'joined':
        return onJoined(f);
      case 'left':
        return undefined;
      case 'message':
        return onMessage(f, false);
      case 'ack':
        return onAck(f);
      case 'presence':
        return onPresence(f);
      case 'typing':
        return onTyping(f);
      case 'read':
        return onRead(f.user, f.seq);
      case 'dm':
        return onDm(f);
      case 'dm_ack':
        return onDmAck(f);
      case 'history':
        return onHistory(f);
      case 'last_seen':
        return onLastSeen(f);
      case 'pong':
        clearTimeout(S.pongTimer);
        return undefined;
      case 'reconnect':
        return onReconnectNotice(f);
      case 'error':
        return onError(f);
      default:
        return undefined;
    }
  }

  function onWelcome(f) {
    S.lastNode = S.node;
    S.node = f.node;
    S.limits = { ...S.limits, ...(f.limits || {}) };
    if (f.user) S.user = f.user;
    if (f.expires_at) S.tokenExp = f.expires_at;
    scheduleRefresh();
    // The development issuer signs any name: say so, so nobody mistakes it for a real sign-in.
    setConn('connected', S.tokenSource === 'dev' ? 'Connected · development sign-in (any name works)' : 'Connected');
    document.body.dataset.node = f.node;
    updateConvHead();
    const join = { type: 'join', room: S.room, req: 'join' };
    if (S.haveBase) join.since = S.lastSeq;
    sendFrame(join);
    startPing();
    S.tokens = Math.max(1, Math.floor((S.limits.rate_burst || 2) / 2));
    requeueAll();
  }

  function onJoined(f) {
    if (f.room !== S.room) return;
    S.joined = true;
    S.attempt = 0;
    hideBanner();
    clearInterval(S.countdownTimer);
    S.firstSeq = f.first_seq || 0;
    const before = new Set(S.members);
    S.members = new Set(f.members || []);
    // A big room lists only its first members (sorted); the rest are counted, not named.
    S.membersUnlisted = Math.max(0, (f.members_total || 0) - S.members.size);
    for (const u of before) if (!S.members.has(u) && u !== S.user && !S.membersUnlisted) markAway(u, Date.now());
    for (const u of S.members) S.away.delete(u);
    for (const [u, seq] of Object.entries(f.read || {})) bumpRead(u, seq);
    if (!S.haveBase) {
      S.haveBase = true;
      S.lastSeq = Math.max(S.lastSeq, f.last_seq || 0);
      if (f.last_seq > 0) requestHistory(f.last_seq + 1, HISTORY_PAGE, { initial: true });
    } else {
      startRecovery(f);
    }
    renderMembers();
    renderSeen();
    updateConvHead();
    requeueAll();
    requestLastSeen();
    scheduleRead();
  }

  function startRecovery(f) {
    const since = S.lastSeq;
    const target = f.last_seq || 0;
    let el;
    if (S.outage) {
      el = S.outage.el;
    } else {
      el = h('li', { class: 'notice', data: { kind: 'reconnect' } });
      appendNotice(el);
    }
    const from = S.outage ? S.outage.from : S.lastNode;
    S.outage = null;
    if (S.recovery) clearTimeout(S.recovery.timer);
    S.recovery = { el, from, since, target, count: 0, gone: since + 1 < S.firstSeq };
    el.className = 'notice ok';
    el.dataset.state = 'recovering';
    updateRecovery();
    if (S.lastSeq >= target) finishRecovery();
    else S.recovery.timer = setTimeout(finishRecovery, 5000);
  }

  function updateRecovery() {
    const r = S.recovery;
    if (!r) return;
    const where = r.from && r.from !== S.node ? `${S.node} (was ${r.from})` : S.node;
    const n = r.count;
    let what;
    if (r.target <= r.since) what = 'no messages were missed';
    else what = `recovered ${n} missed message${n === 1 ? '' : 's'}`;
    if (r.gone) what += '; older ones are no longer kept';
    r.el.textContent = `Reconnected to ${where} — ${what}`;
    r.el.dataset.recovered = String(n);
  }

  function finishRecovery() {
    const r = S.recovery;
    if (!r) return;
    clearTimeout(r.timer);
    updateRecovery();
    r.el.dataset.state = 'done';
    S.recovery = null;
  }

  function onReconnectNotice(f) {
    S.minDelayMs = Number(f.retry_after_ms) || 0;
    const name = S.node || 'This node';
    showBanner(`${name} is going away (${f.reason || 'draining'}); moving to another node…`, false);
    // The node closes with 1012 soon; leaving first keeps sends from landing on a draining node.
    const ws = S.ws;
    S.epoch += 1;
    if (ws) ws.close(1000, 'draining');
    lostConnection(`${name} is draining`, S.minDelayMs);
    S.minDelayMs = 0;
  }

  function onError(f) {
    const p = f.req !== undefined ? S.pending.get(String(f.req)) : undefined;
    const base = ERROR_TEXT[f.code] || `The server reported an error (${f.code}).`;
    const detail = f.message ? ` ${f.message}` : '';
    if (f.req === 'join') {
      if (f.code === 'invalid_name') {
        backToLogin(`The server refused the room name “${S.room}”.${detail}`);
        return;
      }
      toast(`${base}${detail}`, f.code);
      return;
    }
    if (p) {
      if (f.code === 'rate_limited') {
        // Our own pacing was not enough (typing and read frames count too): hold the whole outbox.
        const wait = Number(f.retry_after_ms) || 1000;
        S.pausedUntil = Math.max(S.pausedUntil, Date.now() + wait);
        p.state = 'queued';
        setPendingState(p, `${base} Sending again in ${(wait / 1000).toFixed(1)} s…`);
        toast(`${base} Your messages are queued and go out in order.`, f.code);
        pump();
        return;
      }
      if (f.code === 'unavailable' || f.code === 'internal') {
        p.tries += 1;
        if (p.tries <= 5) {
          const wait = backoff(p.tries);
          p.state = 'queued';
          p.notBefore = Date.now() + wait;
          setPendingState(p, `${base} Retrying in ${(wait / 1000).toFixed(1)} s…`);
          pump();
          return;
        }
      }
      failPending(String(f.req), p, `${base}${detail}`, f.code);
      toast(`Not sent: ${base}${detail}`, f.code);
      return;
    }
    if (f.code === 'rate_limited') {
      // A typing, read or ping frame was dropped: harmless, but hold our sends for a moment.
      S.pausedUntil = Math.max(S.pausedUntil, Date.now() + (Number(f.retry_after_ms) || 1000));
      return;
    }
    toast(`${base}${detail}`, f.code);
  }

  // ---------------------------------------------------------------- room messages

  function messageEl(m) {
    const mine = m.from === S.user;
    const d = new Date(m.ts);
    return h(
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
        h('div', { class: 'body', text: m.body }),
        h('div', { class: 'seen', hidden: true }),
      ),
    );
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
    if (S.msgs.has(m.seq)) return false;
    const list = $('messages');
    const stick = nearBottom();
    const el = messageEl(m);
    placeBySeq(list, el, m.seq);
    S.msgs.set(m.seq, { el, m });
    observer.observe(el);
    while (S.msgs.has(S.lastSeq + 1)) S.lastSeq += 1;
    if (stick || m.from === S.user) scrollToBottom();
    if (m.from !== S.user && !S.members.has(m.from) && !S.away.has(m.from)) {
      S.away.set(m.from, { online: false, last_seen: null, unknown: true });
      requestLastSeenSoon();
    }
    return true;
  }

  function onMessage(m) {
    if (m.room !== S.room) return;
    if (m.from === S.user && m.client_id && S.pending.has(m.client_id)) dropPending(m.client_id);
    const gapFrom = S.lastSeq;
    const fresh = upsertRoomMessage(m);
    if (fresh && S.recovery && m.seq > S.recovery.since && m.seq <= S.recovery.target) {
      S.recovery.count += 1;
      S.msgs.get(m.seq).el.classList.add('recovered');
      updateRecovery();
      if (S.lastSeq >= S.recovery.target) finishRecovery();
    } else if (fresh && S.haveBase && !S.recovery && m.seq > gapFrom + 1) {
      // A hole (we fell behind): fetch exactly the missing range.
      requestHistory(m.seq, Math.min(200, m.seq - gapFrom - 1), { gapTo: m.seq - 1 });
    }
    clearTyping(m.from);
    renderSeen();
    scheduleRead();
  }

  function onAck(a) {
    const p = S.pending.get(a.client_id);
    if (!p || p.kind !== 'room') return;
    dropPending(a.client_id);
    upsertRoomMessage({ room: a.room, seq: a.seq, id: a.id, from: S.user, ts: a.ts, body: p.body, client_id: a.client_id });
    if (S.recovery && S.lastSeq >= S.recovery.target) finishRecovery();
    renderSeen();
    scheduleRead();
  }

  const histReqs = new Map();

  function requestHistory(before, limit, extra) {
    const req = nextReq('hist');
    histReqs.set(req, extra || {});
    sendFrame({ type: 'history', room: S.room, before, limit: Math.max(1, Math.min(200, limit)), req });
  }

  function onHistory(f) {
    if (f.room !== S.room) return;
    const extra = histReqs.get(String(f.req)) || {};
    histReqs.delete(String(f.req));
    const scroller = $('scroller');
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    const stick = nearBottom();
    for (const m of f.messages || []) upsertRoomMessage(m);
    if (extra.gapTo) {
      // Messages no longer kept cannot be had; move past them.
      S.lastSeq = Math.max(S.lastSeq, extra.gapTo);
      while (S.msgs.has(S.lastSeq + 1)) S.lastSeq += 1;
    }
    if (extra.older) scroller.scrollTop = scroller.scrollHeight - fromBottom;
    else if (stick || extra.initial) scrollToBottom();
    if (S.msgs.size) {
      const oldest = Math.min(...S.msgs.keys());
      $('older-btn').hidden = S.active !== 'room' || !(f.has_more || oldest > Math.max(1, S.firstSeq));
    }
    renderSeen();
    scheduleRead();
  }

  function loadOlder() {
    if (!S.msgs.size) return;
    requestHistory(Math.min(...S.msgs.keys()), HISTORY_PAGE, { older: true });
  }

  // ---------------------------------------------------------------- sending

  /** Marks every unacknowledged send for (re)sending with its original client_id, in order. */
  function requeueAll() {
    for (const p of S.pending.values()) {
      if (p.state === 'sent') p.state = 'queued';
    }
    pump();
  }

  /**
   * Sends queued messages in the order they were written, paced below the node's rate limit
   * (a token bucket with the node's rate and half its burst; the rest is left for other frames).
   */
  function pump() {
    clearTimeout(S.pumpTimer);
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    const rate = S.limits.rate_per_sec || 20;
    const burst = Math.max(1, Math.floor((S.limits.rate_burst || 2) / 2));
    S.tokens = Math.min(burst, S.tokens + ((now - S.tokensAt) / 1000) * rate);
    S.tokensAt = now;
    if (now < S.pausedUntil) {
      S.pumpTimer = setTimeout(pump, S.pausedUntil - now);
      return;
    }
    for (const [cid, p] of S.pending) {
      if (p.state !== 'queued') continue;
      if (p.kind === 'room' && !S.joined) continue;
      if (p.notBefore > now) {
        S.pumpTimer = setTimeout(pump, p.notBefore - now);
        return;
      }
      if (S.tokens < 1) {
        S.pumpTimer = setTimeout(pump, Math.ceil(((1 - S.tokens) / rate) * 1000));
        return;
      }
      S.tokens -= 1;
      transmit(cid, p);
    }
  }

  function transmit(cid, p) {
    p.state = 'sent';
    setPendingState(p, 'Sending…');
    if (p.kind === 'room') sendFrame({ type: 'send', room: p.room, body: p.body, client_id: cid, req: cid });
    else sendFrame({ type: 'dm', to: p.to, body: p.body, client_id: cid, req: cid });
  }

  function setPendingState(p, text) {
    const st = p.el.querySelector('.state');
    if (st) st.textContent = text;
  }

  function dropPending(cid) {
    const p = S.pending.get(cid);
    if (!p) return;
    clearTimeout(p.timer);
    p.el.remove();
    S.pending.delete(cid);
  }

  function failPending(cid, p, text, code) {
    clearTimeout(p.timer);
    S.pending.delete(cid);
    p.el.classList.add('failed');
    p.el.dataset.error = code || 'error';
    const st = p.el.querySelector('.state');
    st.textContent = `Not sent: ${text} `;
    st.append(
      h('button', {
        type: 'button',
        class: 'link',
        text: 'Dismiss',
        onclick: () => p.el.remove(),
      }),
    );
  }

  function pendingEl(body, cid) {
    return h(
      'li',
      { class: 'msg mine pending', data: { clientId: cid, from: S.user } },
      avatar(S.user),
      h(
        'div',
        { class: 'bubble' },
        h('div', { class: 'meta' }, h('span', { class: 'from', text: `${S.user} (you)` })),
        h('div', { class: 'body', text: body }),
        h('div', { class: 'state', text: S.ws && S.ws.readyState === WebSocket.OPEN ? 'Sending…' : 'Waiting for a connection…' }),
      ),
    );
  }

  function submitComposer() {
    const input = $('composer-input');
    const body = input.value;
    if (!body.trim()) return;
    const max = S.limits.max_body_chars || 4000;
    if ([...body].length > max) {
      toast(`${ERROR_TEXT.too_large} The limit is ${max} characters.`, 'too_large');
      return;
    }
    const cid = newClientId();
    const el = pendingEl(body, cid);
    let p;
    if (S.active === 'room') {
      p = { kind: 'room', room: S.room, body, el, tries: 0, state: 'queued', notBefore: 0 };
      $('messages').append(el);
    } else {
      const peer = S.active.slice(3);
      p = { kind: 'dm', to: peer, body, el, tries: 0, state: 'queued', notBefore: 0 };
      dmConv(peer).log.append(el);
    }
    S.pending.set(cid, p);
    pump();
    input.value = '';
    autosize();
    updateCounter();
    scrollToBottom();
  }

  function onComposerInput() {
    autosize();
    updateCounter();
    const now = Date.now();
    if (S.active === 'room' && S.joined && $('composer-input').value && now - S.lastTypingSent >= TYPING_SEND_EVERY_MS) {
      S.lastTypingSent = now;
      sendFrame({ type: 'typing', room: S.room });
    }
  }

  function autosize() {
    const t = $('composer-input');
    t.style.height = 'auto';
    t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
  }

  function updateCounter() {
    const max = S.limits.max_body_chars || 4000;
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
    if (user === S.user) S.myRead = Math.max(S.myRead, seq);
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
    if (top > S.myRead) {
      S.myRead = top;
      sendFrame({ type: 'read', room: S.room, seq: top });
    }
  }

  // ---------------------------------------------------------------- last seen

  let lastSeenTimer = null;

  function requestLastSeenSoon() {
    clearTimeout(lastSeenTimer);
    lastSeenTimer = setTimeout(requestLastSeen, 400);
  }

  function requestLastSeen() {
    const users = [...new Set([...S.away.keys(), ...S.dms.keys()])].filter((u) => !S.members.has(u)).slice(0, 100);
    if (users.length) sendFrame({ type: 'last_seen', users, req: nextReq('seen') });
  }

  function onLastSeen(f) {
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
      c = { log, ids: new Set(), unread: 0 };
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
    c.log.append(
      h(
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
          h('div', { class: 'body', text: d.body }),
        ),
      ),
    );
    return true;
  }

  function onDm(d) {
    if (Number.isFinite(d.seq)) S.dmSeq = Math.max(S.dmSeq, d.seq);
    const peer = d.from === S.user ? d.to : d.from;
    if (!addDm(peer, d)) return;
    if (S.active !== `dm:${peer}`) {
      dmConv(peer).unread += 1;
      renderConversations();
      toast(`New direct message from ${d.from}`, 'dm');
    } else scrollToBottom();
  }

  function onDmAck(a) {
    const p = S.pending.get(a.client_id);
    if (!p || p.kind !== 'dm') return;
    dropPending(a.client_id);
    addDm(p.to, { id: a.id, from: S.user, to: p.to, ts: a.ts, body: p.body });
    scrollToBottom();
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
    stopTimers();
    clearTimeout(S.refreshTimer);
    clearTimeout(S.retryTimer);
    clearInterval(S.countdownTimer);
    S.epoch += 1;
    if (S.ws) {
      try {
        S.ws.close(1000, 'leaving');
      } catch {
        // already closed
      }
    }
    S.ws = null;
    $('chat-view').hidden = true;
    $('login-view').hidden = false;
    setConn('idle', 'Not connected');
    showLoginError(error || '');
    $('login-user').focus();
  }

  function resetRoomState() {
    for (const p of S.pending.values()) clearTimeout(p.timer);
    for (const t of S.typing.values()) clearTimeout(t);
    Object.assign(S, {
      node: null,
      lastNode: null,
      joined: false,
      leaving: false,
      attempt: 0,
      haveBase: false,
      lastSeq: 0,
      firstSeq: 0,
      msgs: new Map(),
      pending: new Map(),
      members: new Set(),
      membersUnlisted: 0,
      away: new Map(),
      reads: new Map(),
      myRead: 0,
      typing: new Map(),
      dmSeq: 0,
      dms: new Map(),
      active: 'room',
      outage: null,
      recovery: null,
      visible: new Set(),
      seenShown: new Map(),
      pausedUntil: 0,
    });
    clearTimeout(S.pumpTimer);
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
    renderConversations();
    renderMembers();
    openConversation('room');
    connect();
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
    S.token = null;
    S.tokenExp = 0;
    const user = $('login-user').value.trim();
    const room = $('login-room').value.trim();
    if (!USER_RE.test(user)) {
      showLoginError(`“${user}” is not a valid name: use 1–32 letters, digits, _ . -, starting with a letter or digit.`);
      $('login-user').focus();
      return;
    }
    if (!ROOM_RE.test(room)) {
      showLoginError(`“${room}” is not a valid room: 1–64 letters, digits, _ . - :, starting with a letter or digit.`);
      $('login-room').focus();
      return;
    }
    start(user, room);
  }

  function leave() {
    if (S.joined) sendFrame({ type: 'leave', room: S.room });
    S.leaving = true;
    const ws = S.ws;
    setTimeout(() => ws && ws.close(1000, 'bye'), 100);
    S.ws = null;
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
    $('leave-btn').addEventListener('click', leave);
    $('older-btn').addEventListener('click', loadOlder);
    $('banner-retry').addEventListener('click', () => {
      S.attempt = 0;
      connect();
    });
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
})();
