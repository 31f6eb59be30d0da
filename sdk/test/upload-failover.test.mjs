// An upload outlives the node it started on: Redis, two chat-nodes storing files in MinIO and a
// registry, started by e2e/tests/sdk.rs. The sender's node is SIGKILLed (through the control server)
// after the first 8 MiB chunk is stored; the client moves to the other node, the upload asks that
// node how much is stored (HEAD) and goes on from there, and the other member downloads the file
// byte for byte.
import test from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { SwitchboardClient, fetchRequest } from '../dist/index.js';

const registry = process.env.SWITCHBOARD_REGISTRY;
const control = process.env.SWITCHBOARD_CONTROL;

async function until(what, probe, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function client(user, extra = {}) {
  return new SwitchboardClient({
    registry,
    WebSocket,
    token: async () => (await fetch(`${control}/token/${user}`)).text(),
    backoff: { baseMs: 100, maxMs: 2000 },
    ...extra,
  });
}

test('an upload goes on through another node when its node dies', async (t) => {
  assert.ok(registry && control, 'SWITCHBOARD_REGISTRY / SWITCHBOARD_CONTROL are unset: run this through `cargo test -p e2e --test sdk`');
  const tag = Math.random().toString(16).slice(2, 8);
  const requests = [];
  let killed = null;
  const http = fetchRequest(fetch);
  const ann = client(`ann-${tag}`, {
    // The second chunk waits until its node is dead, so the kill lands between two chunks.
    httpRequest: async (r) => {
      requests.push(`${r.method} ${new URL(r.url).port} ${r.headers['content-range'] ?? ''}`);
      if (r.method === 'PUT' && requests.filter((x) => x.startsWith('PUT')).length === 2 && !killed) {
        killed = ann.node;
        const res = await fetch(`${control}/kill/${killed}`, { method: 'POST' });
        assert.equal(res.status, 200, await res.text());
      }
      return http(r);
    },
  });
  const ben = client(`ben-${tag}`);
  t.after(() => {
    ann.close();
    ben.close();
  });
  const updates = [];
  ben.on('attachment', (e) => updates.push(e));
  ann.connect();
  ben.connect();
  const room = `failover-${tag}`;
  await ann.join(room);
  await ben.join(room);
  const chunk = ann.limits.upload_chunk_bytes;
  const data = Buffer.alloc(2 * chunk + 1000, 'failover test line\n');
  const h = ann.send(room, 'a big one', { files: [new File([data], 'big.txt', { type: 'text/plain' })] });
  const sent = await h.result;
  assert.equal(sent.ok, true, JSON.stringify(sent));
  const [done] = await h.uploads;
  assert.equal(done.state, 'ready', `${JSON.stringify(done)}; requests: ${requests.join(' | ')}`);
  assert.ok(killed, 'the node was never killed');
  assert.notEqual(ann.node, killed, 'the sender is still on the dead node');
  const puts = requests.filter((x) => x.startsWith('PUT'));
  assert.ok(puts[0].endsWith(`bytes 0-${chunk - 1}/${data.length}`), puts[0]);
  assert.ok(requests.some((x) => x.startsWith('HEAD')), `the upload never asked where to go on: ${requests.join(' | ')}`);
  assert.equal(
    requests.filter((x) => x.endsWith(`bytes 0-${chunk - 1}/${data.length}`)).length,
    1,
    `the first chunk was sent again: ${requests.join(' | ')}`,
  );
  const ready = await until("ben to hear the file ready", () => updates.find((e) => e.attachment.state === 'ready'));
  const got = await fetch(ben.resolveUrl(ready.attachment.url));
  assert.equal(got.status, 200);
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(data), 'the file ben downloads differs from the one sent');
  t.diagnostic(`figures upload failover: ${JSON.stringify({ killed, now: ann.node, requests: requests.length })}`);
});
