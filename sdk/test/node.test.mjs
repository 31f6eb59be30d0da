// The SDK's scenarios (scenarios.mjs) in Node with node:test, against the cluster that
// e2e/tests/sdk.rs starts. Node 20 has no global WebSocket: the client gets the `ws` package's.
import test from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { backoffDelay } from '../dist/index.js';
import { bounded, scenarios } from './scenarios.mjs';

test('backoff is full jitter under a doubling ceiling with a cap', () => {
  assert.equal(backoffDelay(0, { baseMs: 250, maxMs: 10000 }, () => 0), 0);
  assert.equal(backoffDelay(0, { baseMs: 250, maxMs: 10000 }, () => 1), 250);
  assert.equal(backoffDelay(3, { baseMs: 250, maxMs: 10000 }, () => 1), 2000);
  assert.equal(backoffDelay(50, { baseMs: 250, maxMs: 10000 }, () => 1), 10000);
  assert.equal(backoffDelay(50, { baseMs: 250, maxMs: 10000 }, () => 0.5), 5000);
});

/** One scenario's bound (each takes a few seconds). */
const SCENARIO_MS = 45000;

const env = {
  registry: process.env.SWITCHBOARD_REGISTRY,
  control: process.env.SWITCHBOARD_CONTROL,
  WebSocket,
};

for (const [title, scenario] of scenarios) {
  test(title, async (t) => {
    if (!env.registry || !env.control) {
      throw new Error('SWITCHBOARD_REGISTRY and SWITCHBOARD_CONTROL are unset: run these through `cargo test -p e2e --test sdk`');
    }
    const figures = await bounded(scenario, env, SCENARIO_MS);
    t.diagnostic(`figures ${title}: ${JSON.stringify(figures)}`);
  });
}
