// The SDK against a standalone node in open identity mode (no tokens: the client claims a name),
// started by e2e/tests/sdk.rs. The node is its own registry.
import test from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { SwitchboardClient } from '../dist/index.js';

const registry = process.env.SWITCHBOARD_REGISTRY;

async function until(what, probe, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('two users chat and exchange a direct message by name alone', async (t) => {
  assert.ok(registry, 'SWITCHBOARD_REGISTRY is unset: run this through `cargo test -p e2e --test sdk`');
  const tag = Math.random().toString(16).slice(2, 8);
  const [ann, ben] = [`ann-${tag}`, `ben-${tag}`].map((user) => new SwitchboardClient({ registry, user, WebSocket }));
  t.after(() => {
    ann.close();
    ben.close();
  });
  const got = { ann: [], ben: [], dm: [] };
  ann.on('message', (e) => got.ann.push(e.message.body));
  ben.on('message', (e) => got.ben.push(e.message.body));
  ben.on('dm', (d) => got.dm.push(`${d.from}:${d.body}`));
  ann.connect();
  ben.connect();
  const room = `open-${tag}`;
  await ann.join(room);
  await ben.join(room);
  assert.equal(ann.user, `ann-${tag}`);
  const sent = await ann.send(room, 'hi ben').result;
  assert.equal(sent.ok, true);
  await until('both to get the message', () => got.ann.length === 1 && got.ben.length === 1);
  assert.deepEqual(got.ben, ['hi ben']);
  assert.equal((await ann.dm(`ben-${tag}`, 'psst').result).ok, true);
  await until('ben to get the direct message', () => got.dm.length === 1);
  assert.deepEqual(got.dm, [`ann-${tag}:psst`]);
});
