// The SDK's scenarios against a real cluster (Redis, two chat-nodes, a registry), written once and run
// both in Node (test/node.test.mjs, node:test) and in headless Chromium (test/browser.html), started by
// e2e/tests/sdk.rs. The environment gives:
//   registry   the registry's base URL
//   control    the test's control server: GET /token/USER mints a token, POST /kill/NODE SIGKILLs a
//              node, POST /drain/NODE stops one with SIGTERM (a graceful drain) and starts it again
//   WebSocket  the WebSocket constructor (Node: the `ws` package; browsers: their own)
// Every wait is bounded; a scenario throws with what it saw when something does not happen.

import { SwitchboardClient } from '../dist/index.js';

/** How long one expected event may take. */
const WITHIN_MS = 20000;

function fail(message) {
  throw new Error(message);
}

function check(ok, message) {
  if (!ok) fail(message);
}

/** A unique name with a readable prefix. */
function name(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2, 10)}`;
}

/** Polls `probe` until it returns something truthy (and returns that), or fails after `ms`. */
async function until(what, probe, ms = WITHIN_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Every client a scenario opened, so a failed or timed-out scenario leaves nothing running. */
const live = new Set();

/** Closes every client the scenarios opened (their pending sends resolve as failed). */
export function closeAll() {
  for (const c of live) c.close();
  live.clear();
}

/** Runs `scenario`, failing it after `ms` and closing its clients either way. */
export async function bounded(scenario, env, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the scenario did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([scenario(env), timeout]);
  } finally {
    clearTimeout(timer);
    closeAll();
  }
}

/** One user's client, with every room message and direct message it emitted recorded. */
async function mint(env, user, query = '') {
  const res = await fetch(`${env.control}/token/${user}${query}`);
  if (!res.ok) fail(`the control server minted no token for ${user}: ${res.status}`);
  return res.text();
}

function client(env, user, extra = {}) {
  const seen = { messages: [], dms: [], typing: [], reads: [], recovered: [], nodes: [], assigns: [] };
  const c = new SwitchboardClient({
    registry: env.registry,
    token: () => mint(env, user),
    ...(env.WebSocket ? { WebSocket: env.WebSocket } : {}),
    backoff: { baseMs: 100, maxMs: 2000 },
    // The real fetch, with every assignment URL written down.
    fetch: (url, init) => {
      if (String(url).includes('/v1/assign')) seen.assigns.push(new URL(String(url)));
      return fetch(url, init);
    },
    ...extra,
  });
  c.on('message', (e) => seen.messages.push(e));
  c.on('dm', (d) => seen.dms.push(d));
  c.on('typing', (t) => seen.typing.push(t));
  c.on('read', (r) => seen.reads.push(r));
  c.on('recovered', (r) => seen.recovered.push(r));
  c.on('welcome', (w) => seen.nodes.push(w.node));
  c.seen = seen;
  live.add(c);
  c.connect();
  return c;
}

async function connected(c, who) {
  await until(`${who} to connect`, () => c.state === 'connected');
  return c.node;
}

async function nodeConnections(env, node) {
  const res = await fetch(`${env.registry}/v1/nodes`);
  const body = await res.json();
  return (body.nodes || []).find((n) => n.id === node)?.connections ?? 0;
}

/** Two users on two different nodes (the registry hands out the least loaded one). */
async function onTwoNodes(env, userA, userB) {
  const a = client(env, userA);
  const nodeA = await connected(a, userA);
  await until(`${nodeA} to report ${userA}'s connection`, async () => (await nodeConnections(env, nodeA)) >= 1);
  for (let tries = 0; tries < 5; tries += 1) {
    const b = client(env, userB);
    const nodeB = await connected(b, userB);
    if (nodeB !== nodeA) return [a, b];
    b.close();
    await new Promise((r) => setTimeout(r, 500));
  }
  fail(`${userA} and ${userB} both landed on ${nodeA}`);
}

/** Room messages a client emitted, checked to be one per sequence. */
function bodiesBySeq(c, who, room) {
  const bySeq = new Map();
  for (const { message: m } of c.seen.messages) {
    if (m.room !== room) continue;
    check(!bySeq.has(m.seq), `${who} got seq ${m.seq} twice`);
    bySeq.set(m.seq, m.body);
  }
  return bySeq;
}

/** Room chat across two nodes: every message once, in one order, on both sides. */
export async function roomChatAcrossTwoNodes(env) {
  const room = name('chat');
  const [alice, bob] = await onTwoNodes(env, name('alice'), name('bob'));
  await alice.join(room);
  await bob.join(room);
  const sends = [];
  for (let i = 0; i < 5; i += 1) {
    sends.push(alice.send(room, `a${i}`).result, bob.send(room, `b${i}`).result);
  }
  const results = await Promise.all(sends);
  for (const r of results) check(r.ok && !r.duplicate, `a send failed: ${JSON.stringify(r)}`);
  for (const [c, who] of [[alice, 'alice'], [bob, 'bob']]) {
    await until(`${who} to get all 10 messages`, () => bodiesBySeq(c, who, room).size === 10);
  }
  const a = [...bodiesBySeq(alice, 'alice', room)].sort((x, y) => x[0] - y[0]);
  const b = [...bodiesBySeq(bob, 'bob', room)].sort((x, y) => x[0] - y[0]);
  check(JSON.stringify(a) === JSON.stringify(b), `alice and bob saw different orders: ${JSON.stringify(a)} / ${JSON.stringify(b)}`);
  check(a.map((x) => x[0]).join() === '1,2,3,4,5,6,7,8,9,10', `sequences ${a.map((x) => x[0])}`);
  check(alice.seen.messages.filter((e) => e.own).length === 5, 'alice does not see her 5 messages as her own');
  alice.close();
  bob.close();
  return { nodes: [alice.node, bob.node].join(' and ') };
}

/** Direct messages reach an offline user on connect, and `dmSince` gives exactly the newer ones. */
export async function dmsWithCatchUp(env) {
  const carolName = name('carol');
  const daveName = name('dave');
  const carol = client(env, carolName);
  await connected(carol, 'carol');
  for (const body of ['one', 'two', 'three']) {
    const r = await carol.dm(daveName, body).result;
    check(r.ok, `dm failed: ${JSON.stringify(r)}`);
  }
  const dave = client(env, daveName);
  await until('dave to get the three waiting messages', () => dave.seen.dms.length >= 3);
  check(dave.seen.dms.map((d) => d.body).join() === 'one,two,three', `dave got ${dave.seen.dms.map((d) => d.body)}`);
  const seq = dave.dmSeq;
  check(seq === 3, `dave's dmSeq is ${seq}`);
  dave.close();
  for (const body of ['four', 'five']) await carol.dm(daveName, body).result;
  const again = client(env, daveName, { dmSince: seq });
  await until('dave\'s second device to catch up', () => again.seen.dms.length >= 2);
  await new Promise((r) => setTimeout(r, 300));
  check(again.seen.dms.map((d) => `${d.seq}:${d.body}`).join() === '4:four,5:five', `caught up ${again.seen.dms.map((d) => `${d.seq}:${d.body}`)}`);
  carol.close();
  again.close();
  return { caughtUp: again.seen.dms.length };
}

/** History pages backwards without a gap or an overlap. */
export async function historyPaging(env) {
  const room = name('hist');
  const erin = client(env, name('erin'));
  await erin.join(room);
  const total = 60;
  const results = await Promise.all(Array.from({ length: total }, (_, i) => erin.send(room, `m${i + 1}`).result));
  check(results.every((r) => r.ok), 'a send failed');
  const frank = client(env, name('frank'));
  const joined = await frank.join(room);
  check(joined.last_seq === total, `last_seq ${joined.last_seq}`);
  const seqs = [];
  let before = joined.last_seq + 1;
  let pages = 0;
  for (;;) {
    const page = await frank.history(room, { before, limit: 25 });
    pages += 1;
    check(page.messages.length > 0, 'an empty page');
    seqs.unshift(...page.messages.map((m) => m.seq));
    for (const m of page.messages) check(m.body === `m${m.seq}`, `seq ${m.seq} holds ${m.body}`);
    if (!page.has_more) break;
    before = page.messages[0].seq;
    check(pages < 10, 'too many pages');
  }
  check(seqs.join() === Array.from({ length: total }, (_, i) => i + 1).join(), `paged ${seqs}`);
  check(pages === 3, `${pages} pages of 25 for 60 messages`);
  erin.close();
  frank.close();
  return { pages };
}

/** Typing is relayed (and throttled), read markers move forward only, last-seen follows a disconnect. */
export async function typingReadMarkersLastSeen(env) {
  const room = name('tr');
  const ginaName = name('gina');
  const hankName = name('hank');
  const [gina, hank] = await onTwoNodes(env, ginaName, hankName);
  await gina.join(room);
  await hank.join(room);
  check(gina.typing(room), 'the first typing frame was not sent');
  check(!gina.typing(room), 'a second typing frame within 2 s was sent');
  await until('hank to see gina typing', () => hank.seen.typing.some((t) => t.user === ginaName && t.room === room));
  const r = await gina.send(room, 'read me').result;
  check(r.ok, 'send failed');
  await until('hank to get the message', () => hank.seen.messages.length === 1);
  check(hank.markRead(room, r.seq), 'the read marker was not sent');
  check(!hank.markRead(room, r.seq - 1), 'a read marker moved backwards');
  await until('gina to see hank\'s read marker', () => gina.seen.reads.some((x) => x.user === hankName && x.seq === r.seq));
  const online = await gina.lastSeen([hankName]);
  check(online.users[hankName]?.online === true, `hank is not online: ${JSON.stringify(online)}`);
  hank.close();
  const stranger = name('nobody');
  const seen = await until('hank to be seen offline', async () => {
    const ls = await gina.lastSeen([hankName, stranger]);
    const h = ls.users[hankName];
    return h && !h.online && typeof h.last_seen === 'number' ? ls : null;
  });
  check((seen.hidden || []).includes(stranger), `a stranger was not hidden: ${JSON.stringify(seen)}`);
  gina.close();
  return { lastSeen: seen.users[hankName].last_seen };
}

/** The client renews its token before it expires (`refresh`) and keeps its session and rooms. */
export async function tokenRefresh(env) {
  const room = name('refresh');
  const user = name('ivy');
  const asked = [];
  // A 120 s token renewed 119.5 s before it expires: the renewal is due at once (after the 1 s floor).
  const ivy = client(env, user, {
    token: (reason) => {
      asked.push(reason);
      return mint(env, user, reason === 'refresh' ? '?ttl=600' : '?ttl=120');
    },
    refreshBeforeMs: 119500,
  });
  let refreshed = null;
  ivy.on('refreshed', (r) => {
    refreshed = r;
  });
  await ivy.join(room);
  const node = ivy.node;
  await until('the session to be renewed', () => refreshed);
  check(refreshed.expiresAt > Date.now() + 300000, `renewed until ${new Date(refreshed.expiresAt).toISOString()}`);
  check(asked[0] === 'connect' && asked.includes('refresh'), `tokens asked for: ${asked}`);
  const r = await ivy.send(room, 'still here').result;
  check(r.ok && ivy.node === node && ivy.seen.nodes.length === 1, 'the session did not survive its renewal');
  return { renewedForSeconds: Math.round((refreshed.expiresAt - Date.now()) / 1000) };
}

/**
 * Alice (on one node) and Bob (on the other) each send `perUser` messages to `room`; once a third
 * of them are acknowledged, `disrupt(bob's node)` runs (a kill or a drain). Returns the counts, after
 * checking that every message was acknowledged and delivered to both exactly once, with no gap.
 */
async function countedConversation(env, disrupt) {
  const room = name('count');
  const [alice, bob] = await onTwoNodes(env, name('alice'), name('bob'));
  await alice.join(room);
  await bob.join(room);
  const target = bob.node;
  const perUser = 40;
  const results = [];
  let acked = 0;
  const sendAll = async (c, who) => {
    for (let i = 0; i < perUser; i += 1) {
      const r = c.send(room, `${who}-${i}`).result.then((x) => {
        if (x.ok) acked += 1;
        return x;
      });
      results.push(r);
      await new Promise((res) => setTimeout(res, 15));
    }
  };
  const disruption = (async () => {
    await until('a third of the messages to be acknowledged', () => acked >= (2 * perUser) / 3);
    await disrupt(target, bob);
  })();
  await Promise.all([sendAll(alice, 'alice'), sendAll(bob, 'bob'), disruption]);
  const outcomes = await Promise.all(results);
  const failed = outcomes.filter((o) => !o.ok);
  check(failed.length === 0, `sends failed: ${JSON.stringify(failed.slice(0, 3))}`);
  const sent = 2 * perUser;
  const wanted = new Set([...Array(perUser).keys()].flatMap((i) => [`alice-${i}`, `bob-${i}`]));
  const counts = { sent, acked: outcomes.length, resentDuplicates: outcomes.filter((o) => o.duplicate).length };
  for (const [c, who] of [[alice, 'alice'], [bob, 'bob']]) {
    await until(`${who} to have every message`, () => bodiesBySeq(c, who, room).size >= sent);
    await new Promise((r) => setTimeout(r, 300));
    const events = c.seen.messages.filter((e) => e.message.room === room);
    const bodies = events.map((e) => e.message.body);
    const seqs = events.map((e) => e.message.seq).sort((x, y) => x - y);
    const duplicated = bodies.length - new Set(bodies).size + (seqs.length - new Set(seqs).size);
    const lost = [...wanted].filter((b) => !bodies.includes(b)).length;
    const recovered = c.seen.recovered.reduce((n, r) => n + r.count, 0);
    counts[who] = { delivered: new Set(bodies).size, duplicated, lost, recovered };
    check(duplicated === 0, `${who}: ${duplicated} duplicated`);
    check(lost === 0, `${who}: ${lost} lost`);
    check(seqs.join() === Array.from({ length: sent }, (_, i) => i + 1).join(), `${who}: sequences ${seqs}`);
  }
  check(bob.node !== target && bob.seen.nodes.includes(target), `bob did not move off ${target}: ${bob.seen.nodes}`);
  const avoided = bob.seen.assigns.map((u) => u.searchParams.get('avoid'));
  check(avoided[0] === null && avoided.slice(1).includes(target), `bob's assignments did not avoid ${target}: ${avoided}`);
  check(bob.seen.recovered.length >= 1, 'bob never finished a recovery');
  return { node: target, ...counts };
}

async function control(env, action, node) {
  const res = await fetch(`${env.control}/${action}/${node}`, { method: 'POST' });
  check(res.ok, `the control server could not ${action} ${node}: ${res.status} ${await res.text()}`);
}

/** A node drains (SIGTERM) mid-conversation: its clients follow the `reconnect` notice and lose nothing. */
export async function drainMidConversation(env) {
  let notices = 0;
  const counts = await countedConversation(env, async (node, bob) => {
    bob.on('reconnectNotice', (n) => {
      check(n.reason === 'draining', `notice ${JSON.stringify(n)}`);
      notices += 1;
    });
    await control(env, 'drain', node);
  });
  check(notices === 1, `bob got ${notices} reconnect notices`);
  return { ...counts, notices };
}

/**
 * A node is SIGKILLed mid-conversation: both users keep sending, the orphaned client moves to the
 * surviving node, recovers with `since` and resends what was not acknowledged. Counted: nothing lost,
 * nothing twice.
 */
export async function nodeKillMidConversation(env) {
  return countedConversation(env, (node) => control(env, 'kill', node));
}

/** Every scenario, in the order they run (the node kill last: it leaves one node). */
export const scenarios = [
  ['room chat across two nodes', roomChatAcrossTwoNodes],
  ['direct messages with catch-up', dmsWithCatchUp],
  ['history paging', historyPaging],
  ['typing, read markers and last-seen', typingReadMarkersLastSeen],
  ['the token is renewed before it expires', tokenRefresh],
  ['a node drain mid-conversation loses and duplicates nothing', drainMidConversation],
  ['a node kill mid-conversation loses and duplicates nothing', nodeKillMidConversation],
];
