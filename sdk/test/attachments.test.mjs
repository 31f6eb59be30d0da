// The SDK's files against a real standalone node (its default store: a local directory), started by
// e2e/tests/sdk.rs: a message with an image and a file larger than one upload chunk, uploaded with
// progress and downloaded back byte for byte by the other member; a file whose bytes are not its
// declared type, failed for both; a direct message with a file; and history with the current states.
import test from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { WebSocket } from 'ws';
import { SwitchboardClient } from '../dist/index.js';

const registry = process.env.SWITCHBOARD_REGISTRY;
/** CRC-32 (PNG chunks). */
function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A real PNG of `w`×`h` RGB pixels (a gradient), so the node finds an image and makes a thumbnail. */
function png(w, h) {
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'latin1');
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const rows = Buffer.alloc(h * (1 + 3 * w));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) rows.set([(x * 255) / w, (y * 255) / h, 128], y * (1 + 3 * w) + 1 + 3 * x);
  }
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

const PNG = png(40, 30);

async function until(what, probe, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function pair(t) {
  assert.ok(registry, 'SWITCHBOARD_REGISTRY is unset: run this through `cargo test -p e2e --test sdk`');
  const tag = Math.random().toString(16).slice(2, 8);
  const [ann, ben] = [`ann-${tag}`, `ben-${tag}`].map((user) => new SwitchboardClient({ registry, user, WebSocket }));
  t.after(() => {
    ann.close();
    ben.close();
  });
  const seen = { ann: [], ben: [], benMessages: [], benDms: [] };
  ann.on('attachment', (e) => seen.ann.push(e));
  ben.on('attachment', (e) => seen.ben.push(e));
  ben.on('message', (e) => seen.benMessages.push(e.message));
  ben.on('dm', (d) => seen.benDms.push(d));
  ann.connect();
  ben.connect();
  return { ann, ben, seen, room: `files-${tag}` };
}

test('files go up in chunks with progress, become ready for every member and download intact', async (t) => {
  const { ann, ben, seen, room } = pair(t);
  await ann.join(room);
  await ben.join(room);
  const chunk = ann.limits.upload_chunk_bytes;
  assert.equal(ann.limits.attachments, true, 'a standalone node stores files by default');
  assert.equal(chunk, 8 * 1024 * 1024);
  const big = Buffer.alloc(chunk + 12345, 'standalone notes\n');
  const progress = new Map();
  const h = ann.send(room, 'two files', {
    files: [new File([PNG], 'dot.png', { type: 'image/png' }), new File([big], 'notes.txt', { type: 'text/plain' })],
    onProgress: (p) => progress.set(p.index, [...(progress.get(p.index) ?? []), p.sent]),
  });
  const sent = await h.result;
  assert.equal(sent.ok, true, JSON.stringify(sent));
  const uploads = await h.uploads;
  assert.deepEqual(uploads.map((u) => u.state), ['ready', 'ready'], JSON.stringify(uploads));
  assert.deepEqual(progress.get(1).at(-1), big.length);
  assert.ok(progress.get(1).some((s) => s === chunk), `no progress at the chunk boundary: ${progress.get(1)}`);
  // Ben hears both files become ready, once each.
  await until('ben to hear both files ready', () => seen.ben.filter((e) => e.attachment.state === 'ready').length === 2);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(seen.ben.length, 2, `updates are reported once: ${JSON.stringify(seen.ben)}`);
  const image = seen.ben.find((e) => e.attachment.name === 'dot.png').attachment;
  assert.equal(image.type, 'image/png');
  assert.equal(image.width, 40);
  assert.equal(image.height, 30);
  assert.ok(image.thumbnail_url, 'an image has a thumbnail');
  const thumb = await fetch(ben.resolveUrl(image.thumbnail_url));
  assert.equal(thumb.status, 200);
  assert.equal(thumb.headers.get('content-type'), 'image/jpeg');
  const notes = seen.ben.find((e) => e.attachment.name === 'notes.txt');
  assert.equal(notes.room, room);
  assert.equal(notes.seq, sent.seq);
  const got = await fetch(ben.resolveUrl(notes.attachment.url));
  assert.equal(got.status, 200);
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(big), 'the downloaded file differs from the sent one');
  // The live message came with the files pending (or already ready); history has them ready.
  const live = seen.benMessages.find((m) => m.seq === sent.seq);
  assert.deepEqual(live.attachments.map((a) => a.name), ['dot.png', 'notes.txt']);
  const page = await ben.history(room);
  const stored = page.messages.find((m) => m.seq === sent.seq);
  assert.deepEqual(stored.attachments.map((a) => a.state), ['ready', 'ready']);
  assert.ok(stored.attachments.every((a) => typeof a.url === 'string'));
});

test('a file that is not what it declares fails for both members, with the reason', async (t) => {
  const { ann, ben, seen, room } = pair(t);
  await ann.join(room);
  await ben.join(room);
  const h = ann.send(room, '', { files: [new File(['just words, no pixels'], 'fake.png', { type: 'image/png' })] });
  assert.equal((await h.result).ok, true);
  const [up] = await h.uploads;
  assert.equal(up.state, 'failed');
  assert.equal(up.code, 'wrong_type');
  const failed = await until('ben to hear the file failed', () => seen.ben.find((e) => e.attachment.state === 'failed'));
  assert.equal(failed.attachment.error, 'wrong_type');
  assert.ok(failed.attachment.reason, 'a failed file says why');
  await until('ann to hear it too', () => seen.ann.some((e) => e.attachment.state === 'failed'));
});

test('a direct message carries a file to the other user, with its update', async (t) => {
  const { ann, ben, seen } = pair(t);
  await until('both to connect', () => ann.state === 'connected' && ben.state === 'connected');
  const h = ann.dm(ben.user, 'for you', { files: [new File(['a small note\n'], 'note.txt', { type: 'text/plain' })] });
  const sent = await h.result;
  assert.equal(sent.ok, true, JSON.stringify(sent));
  assert.equal(sent.attachments.length, 1);
  assert.equal((await h.uploads)[0].state, 'ready');
  const dm = await until('ben to get the direct message', () => seen.benDms.find((d) => d.id === sent.id));
  assert.equal(dm.attachments[0].name, 'note.txt');
  const update = await until('ben to hear the file ready', () => seen.ben.find((e) => e.messageId === sent.id && e.attachment.state === 'ready'));
  assert.equal(update.from, ann.user);
  assert.equal(update.to, ben.user);
  const got = await fetch(ben.resolveUrl(update.attachment.url));
  assert.equal(await got.text(), 'a small note\n');
});
