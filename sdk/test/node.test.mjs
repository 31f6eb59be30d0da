// The SDK's scenarios (scenarios.mjs) in Node with node:test, against the cluster that
// e2e/tests/sdk.rs starts. Node 20 has no global WebSocket: the client gets the `ws` package's.
import test from 'node:test';
import { WebSocket } from 'ws';
import { scenarios } from './scenarios.mjs';

const env = {
  registry: process.env.SWITCHBOARD_REGISTRY,
  control: process.env.SWITCHBOARD_CONTROL,
  WebSocket,
};

for (const [title, scenario] of scenarios) {
  test(title, { timeout: 90000 }, async (t) => {
    if (!env.registry || !env.control) {
      throw new Error('SWITCHBOARD_REGISTRY and SWITCHBOARD_CONTROL are unset: run these through `cargo test -p e2e --test sdk`');
    }
    const figures = await scenario(env);
    t.diagnostic(`figures ${title}: ${JSON.stringify(figures)}`);
  });
}
