// Unit tests of the SDK's attachment uploads (src/upload.ts) and of how the client applies attachment
// states, against a small local stand-in of a chat-node written here: its HTTP side keeps the upload
// rules of PROTOCOL.md section 10 (Content-Range, START = offset, chunks a multiple of the chunk size,
// HEAD → Upload-Offset, 409 offset_mismatch) and can be told to fail; its WebSocket side speaks just
// enough of the protocol (welcome, joined, ack with upload URLs, attachment updates, history).
// The real node is tested by e2e/tests/sdk.rs and e2e/tests/browser_attachments.rs.
import test from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import { SwitchboardClient, fetchRequest, uploadAttachment } from '../dist/index.js';

const CHUNK = 1000;

/** Bytes 0..n-1 of a fixed pattern (so a misplaced chunk shows as a wrong byte). */
function pattern(n) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 8)) & 0xff;
  return b;
}

/**
 * The stand-in node. `uploads` maps an id to {size, data: Buffer[], state}. `faults` is a queue of
 * what to do to the next PUT requests: 'drop' (close the socket mid-body), or answer 503, 429, 415,
 * 409 (upload_in_progress) or 400 (incomplete).
 */
async function standIn() {
  const uploads = new Map();
  const log = [];
  const faults = [];
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const m = /^\/v1\/uploads\/([^/]+)$/.exec(url.pathname);
    if (url.pathname === '/v1/assign') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ node: 'stand-in', url: `ws://127.0.0.1:${server.address().port}/ws` }));
      return;
    }
    const json = (status, body, headers = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    if (!m || url.searchParams.get('sig') !== 'ok') return json(m ? 403 : 404, { error: m ? 'forbidden' : 'not_found', message: 'no' });
    const up = uploads.get(m[1]);
    if (!up) return json(404, { error: 'not_found', message: 'no such upload' });
    const offset = () => up.data.reduce((n, b) => n + b.length, 0);
    const state = () => ({ id: m[1], offset: offset(), size: up.size, state: up.state });
    if (req.method === 'HEAD') {
      log.push(`HEAD ${offset()}`);
      res.writeHead(200, { 'upload-offset': String(offset()), 'upload-length': String(up.size) });
      res.end();
      return;
    }
    if (req.method === 'GET') return json(200, state());
    if (req.method !== 'PUT') return json(405, { error: 'method', message: req.method });
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(req.headers['content-range'] ?? '');
    log.push(`PUT ${req.headers['content-range']}`);
    const fault = faults.shift();
    if (fault === 'drop') {
      // Read a little of the body, then cut the connection: the chunk is lost.
      req.once('data', () => req.socket.destroy());
      return;
    }
    if (typeof fault === 'number') {
      const error = { 503: 'unavailable', 429: 'busy', 415: 'wrong_type', 409: 'upload_in_progress', 400: 'incomplete' }[fault];
      return json(fault, { error, message: `told to answer ${fault}`, offset: offset() }, fault === 429 ? { 'retry-after': '0' } : {});
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (up.state !== 'pending') return json(409, { error: 'already_complete', message: 'done' });
      if (!range) return json(400, { error: 'bad_range', message: 'no Content-Range' });
      const [start, end, total] = range.slice(1).map(Number);
      if (total !== up.size) return json(400, { error: 'size_mismatch', message: 'total' });
      if (start !== offset()) return json(409, { error: 'offset_mismatch', message: 'offset', offset: offset() });
      if (body.length !== end - start + 1) return json(400, { error: 'bad_range', message: 'length' });
      if (end + 1 < total && body.length % CHUNK !== 0) return json(400, { error: 'bad_chunk', message: 'not a multiple' });
      up.data.push(body);
      if (offset() === up.size) {
        up.state = 'ready';
        return json(200, { ...state(), attachment: { id: m[1], name: up.name, size: up.size, type: 'image/png', state: 'ready', url: `/v1/attachments/${m[1]}/x.png?exp=1&sig=ok` } });
      }
      return json(200, state());
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    uploads,
    log,
    faults,
    wss,
    add(id, size, name = 'cat.png') {
      uploads.set(id, { size, data: [], state: 'pending', name });
      return `${base}/v1/uploads/${id}?exp=${Date.now() + 3600000}&sig=ok`;
    },
    bytes(id) {
      return Buffer.concat(uploads.get(id).data);
    },
    close() {
      for (const c of wss.clients) c.terminate();
      for (const s of sockets) s.destroy();
      wss.close();
      return new Promise((r) => server.close(r));
    },
  };
}

const request = fetchRequest(fetch);
const fast = { baseMs: 5, maxMs: 20 };

test('a file goes up in chunks of the node size, the last one shorter, with progress to the end', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const data = pattern(2 * CHUNK + 500);
  const url = node.add('m-1.0', data.length);
  const progress = [];
  const out = await uploadAttachment({
    source: new Blob([data], { type: 'image/png' }),
    url: () => url,
    chunkBytes: CHUNK,
    request,
    startAt: 0,
    onProgress: (sent, total) => progress.push([sent, total]),
  });
  assert.equal(out.state, 'ready');
  assert.equal(out.attachment.url, '/v1/attachments/m-1.0/x.png?exp=1&sig=ok');
  assert.deepEqual(node.log, ['PUT bytes 0-999/2500', 'PUT bytes 1000-1999/2500', 'PUT bytes 2000-2499/2500']);
  assert.ok(node.bytes('m-1.0').equals(Buffer.from(data)), 'the node holds other bytes than were sent');
  assert.deepEqual(progress.at(-1), [2500, 2500]);
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i][0] >= progress[i - 1][0], `progress went back: ${JSON.stringify(progress)}`);
});

test('a file of exactly one chunk is one request', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const url = node.add('m-2.0', CHUNK);
  const out = await uploadAttachment({ source: new Blob([pattern(CHUNK)]), url: () => url, chunkBytes: CHUNK, request, startAt: 0 });
  assert.equal(out.state, 'ready');
  assert.deepEqual(node.log, ['PUT bytes 0-999/1000']);
});

test('after a dropped connection and a 503 the upload asks the offset and resumes there', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const data = pattern(3 * CHUNK + 1);
  const url = node.add('m-3.0', data.length);
  // The first chunk is stored; the second is cut off mid-body, then refused once with 503.
  node.faults.push(undefined, 'drop', 503);
  const out = await uploadAttachment({ source: new Blob([data]), url: () => url, chunkBytes: CHUNK, request, backoff: fast, startAt: 0 });
  assert.equal(out.state, 'ready', JSON.stringify(out));
  assert.ok(node.bytes('m-3.0').equals(Buffer.from(data)), 'resumed upload stored other bytes');
  assert.deepEqual(node.log, [
    'PUT bytes 0-999/3001',
    'PUT bytes 1000-1999/3001', // dropped
    'HEAD 1000',
    'PUT bytes 1000-1999/3001', // 503
    'HEAD 1000',
    'PUT bytes 1000-1999/3001',
    'PUT bytes 2000-2999/3001',
    'PUT bytes 3000-3000/3001',
  ]);
});

test('a node that already holds part of the file (offset_mismatch) is continued from its offset', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const data = pattern(2 * CHUNK + 10);
  const url = node.add('m-4.0', data.length);
  node.uploads.get('m-4.0').data.push(Buffer.from(data.subarray(0, CHUNK)));
  const out = await uploadAttachment({ source: new Blob([data]), url: () => url, chunkBytes: CHUNK, request, startAt: 0 });
  assert.equal(out.state, 'ready');
  assert.deepEqual(node.log, ['PUT bytes 0-999/2010', 'PUT bytes 1000-1999/2010', 'PUT bytes 2000-2009/2010']);
  assert.ok(node.bytes('m-4.0').equals(Buffer.from(data)));
});

test('without a known start the upload asks the node first (HEAD) and sends only what is missing', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const data = pattern(2 * CHUNK);
  const url = node.add('m-5.0', data.length);
  node.uploads.get('m-5.0').data.push(Buffer.from(data.subarray(0, CHUNK)));
  const out = await uploadAttachment({ source: new Blob([data]), url: () => url, chunkBytes: CHUNK, request });
  assert.equal(out.state, 'ready');
  assert.deepEqual(node.log, ['HEAD 1000', 'PUT bytes 1000-1999/2000']);
});

test('busy (429 with Retry-After) is waited out; a wrong type (415) ends the upload as failed at once', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const url = node.add('m-6.0', 10);
  node.faults.push(429);
  assert.equal((await uploadAttachment({ source: new Blob([pattern(10)]), url: () => url, chunkBytes: CHUNK, request, startAt: 0 })).state, 'ready');
  const bad = node.add('m-6.1', 10);
  node.faults.push(415, 415);
  const out = await uploadAttachment({ source: new Blob([pattern(10)]), url: () => bad, chunkBytes: CHUNK, request, backoff: fast, startAt: 0 });
  assert.equal(out.state, 'failed');
  assert.equal(out.code, 'wrong_type');
  assert.equal(node.log.filter((l) => l.startsWith('PUT bytes 0-9/10')).length, 3, 'a 415 must not be retried');
});

test('another request still uploading (409 upload_in_progress) and a cut-off body (400 incomplete) are waited out', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const data = pattern(2 * CHUNK);
  const url = node.add('m-9.0', data.length);
  node.faults.push(409, 400);
  const out = await uploadAttachment({ source: new Blob([data]), url: () => url, chunkBytes: CHUNK, request, backoff: fast, startAt: 0 });
  assert.equal(out.state, 'ready', JSON.stringify(out));
  assert.deepEqual(node.log, ['PUT bytes 0-999/2000', 'HEAD 0', 'PUT bytes 0-999/2000', 'HEAD 0', 'PUT bytes 0-999/2000', 'PUT bytes 1000-1999/2000']);
  assert.ok(node.bytes('m-9.0').equals(Buffer.from(data)));
});

test('retries are bounded: a node that keeps failing ends the upload as unavailable', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const url = node.add('m-7.0', 10);
  node.faults.push(503, 503, 503, 503, 503, 503, 503, 503);
  const out = await uploadAttachment({ source: new Blob([pattern(10)]), url: () => url, chunkBytes: CHUNK, request, backoff: fast, maxRetries: 3 });
  assert.equal(out.state, 'failed');
  assert.equal(out.code, 'unavailable');
  assert.equal(node.log.filter((l) => l.startsWith('PUT')).length, 4, `one try and 3 retries, got ${node.log}`);
});

test('an aborted upload stops and says cancelled', async (t) => {
  const node = await standIn();
  t.after(() => node.close());
  const url = node.add('m-8.0', 5 * CHUNK);
  const abort = new AbortController();
  const out = await uploadAttachment({
    source: new Blob([pattern(5 * CHUNK)]),
    url: () => url,
    chunkBytes: CHUNK,
    request,
    startAt: 0,
    signal: abort.signal,
    onProgress: (sent) => {
      if (sent >= 2 * CHUNK) abort.abort();
    },
  });
  assert.equal(out.state, 'cancelled');
  assert.equal(node.log.length, 2, `stopped after the second chunk, got ${node.log}`);
});

/** A client of the stand-in: the node's WebSocket side is `onFrame(frame, ws)`. */
async function clientOf(node, onFrame) {
  node.wss.on('connection', (ws) => {
    ws.on('message', (raw) => {
      const f = JSON.parse(String(raw));
      if (f.type === 'hello') {
        const limits = { max_frame_bytes: 65536, max_body_chars: 4000, rate_per_sec: 50, rate_burst: 50, history_page_max: 200, max_rooms: 10, idle_timeout_ms: 60000, attachments: true, max_attachment_bytes: 100000, max_attachments: 10, attachment_quota_bytes: 1e9, upload_chunk_bytes: CHUNK, attachment_types: ['image/png', 'text/plain'] };
        ws.send(JSON.stringify({ type: 'welcome', user: f.user, node: 'stand-in', session: 's', server_time: Date.now(), dm_seq: 0, auth: 'open', limits }));
      } else if (f.type === 'join') {
        ws.send(JSON.stringify({ type: 'joined', room: f.room, members: ['ann'], members_total: 1, last_seq: 0, first_seq: 0, read: {}, req: f.req }));
      } else onFrame(f, ws);
    });
  });
  const c = new SwitchboardClient({ registry: node.base, user: 'ann', WebSocket, fetch, backoff: fast });
  c.connect();
  await c.join('lobby');
  return c;
}

test('a send with files declares them, uploads each from its ack URL and applies updates once', async (t) => {
  const node = await standIn();
  const png = pattern(CHUNK + 200);
  const sends = [];
  let socket;
  const c = await clientOf(node, (f, ws) => {
    socket = ws;
    if (f.type === 'send') {
      sends.push(f);
      const id = 'lobby-1-a';
      const tickets = f.attachments.map((_, i) => ({ id: `${id}.${i}`, upload_url: node.add(`${id}.${i}`, f.attachments[i].size).replace(node.base, '') }));
      ws.send(JSON.stringify({ type: 'ack', room: 'lobby', seq: 1, id, ts: 1, client_id: f.client_id, duplicate: false, attachments: tickets, req: f.req }));
    } else if (f.type === 'history') {
      // A page fetched before the update: the attachment is still pending in it.
      ws.send(JSON.stringify({ type: 'history', room: 'lobby', has_more: false, req: f.req, messages: [{ room: 'lobby', seq: 1, id: 'lobby-1-a', from: 'ann', ts: 1, body: '', client_id: 'x', attachments: [{ id: 'lobby-1-a.0', name: 'cat.png', size: png.length, type: 'image/png', state: 'pending' }] }] }));
    }
  });
  t.after(async () => {
    c.close();
    await node.close();
  });
  const events = [];
  const progress = [];
  c.on('attachment', (e) => events.push(e));
  const refused = await c.send('lobby', '', { files: [new File([png], 'x.exe', { type: 'application/x-msdownload' })] }).result;
  assert.equal(refused.code, 'unsupported_type', 'a type off the allow list is refused before it is sent');
  const h = c.send('lobby', '', { files: [new File([png], 'cat/../.png', { type: 'image/png' })], onProgress: (p) => progress.push(p.sent) });
  const sent = await h.result;
  assert.equal(sent.ok, true);
  assert.deepEqual(sends[0].attachments, [{ name: 'cat/../.png', size: png.length, type: 'image/png' }]);
  assert.equal(sends[0].body, '');
  assert.deepEqual(sent.attachments.map((a) => [a.id, a.name, a.state]), [['lobby-1-a.0', 'png', 'pending']]);
  const [done] = await h.uploads;
  assert.equal(done.state, 'ready');
  assert.ok(node.bytes('lobby-1-a.0').equals(Buffer.from(png)));
  assert.deepEqual(progress.slice(-1), [png.length]);
  assert.equal(events.length, 1, 'the upload answer makes the attachment ready once');
  assert.equal(events[0].seq, 1);
  // The node's update repeats the state (twice): no new event.
  const update = { type: 'attachment', room: 'lobby', seq: 1, message_id: 'lobby-1-a', attachment: { ...done.attachment } };
  socket.send(JSON.stringify(update));
  socket.send(JSON.stringify(update));
  // An older history page does not undo the ready state.
  const page = await c.history('lobby');
  assert.equal(page.messages[0].attachments[0].state, 'ready');
  assert.equal(events.length, 1, `updates are applied once: ${JSON.stringify(events)}`);
  assert.equal(c.attachment('lobby-1-a.0').state, 'ready');
  assert.equal(c.resolveUrl('/v1/x?y=1'), `${node.base}/v1/x?y=1`);
});

test('after a reconnect, files last seen pending are looked up again in history', async (t) => {
  const node = await standIn();
  const pending = { id: 'lobby-1-b.0', name: 'dog.png', size: 10, type: 'image/png', state: 'pending' };
  const message = { type: 'message', room: 'lobby', seq: 1, id: 'lobby-1-b', from: 'bob', ts: 1, body: '', client_id: 'b-1' };
  const asked = [];
  let sockets = 0;
  node.wss.on('connection', (ws) => {
    sockets += 1;
    // The first connection hears the message with its file pending, then drops.
    if (sockets === 1) {
      ws.on('message', (raw) => {
        if (JSON.parse(String(raw)).type === 'join') {
          setTimeout(() => {
            ws.send(JSON.stringify({ ...message, attachments: [pending] }));
            setTimeout(() => ws.terminate(), 50);
          }, 50);
        }
      });
    }
  });
  const c = await clientOf(node, (f, ws) => {
    if (f.type === 'history') {
      asked.push([f.before, f.limit]);
      const ready = { ...pending, state: 'ready', url: '/v1/attachments/lobby-1-b.0/dog.png?exp=1&sig=ok' };
      ws.send(JSON.stringify({ type: 'history', room: 'lobby', has_more: false, req: f.req, messages: [{ ...message, attachments: [ready] }] }));
    }
  });
  t.after(async () => {
    c.close();
    await node.close();
  });
  const events = [];
  c.on('attachment', (e) => events.push(e));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no update after the reconnect; history asked: ${JSON.stringify(asked)}`)), 10000);
    c.on('attachment', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  assert.deepEqual(asked, [[2, 1]], 'one history page covering the pending message');
  assert.equal(events.length, 1);
  assert.equal(events[0].seq, 1);
  assert.equal(events[0].attachment.state, 'ready');
  assert.equal(c.attachment('lobby-1-b.0').state, 'ready');
});
