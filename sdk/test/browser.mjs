// The SDK's scenarios (scenarios.mjs) in a browser, with the browser's own WebSocket and fetch.
// e2e/tests/sdk.rs opens browser.html?registry=URL from its control server (the page's origin) and
// reads `window.sdkResults` once `window.sdkDone` is set.
import { bounded, scenarios } from './scenarios.mjs';

/** One scenario's bound (each takes a few seconds). */
const SCENARIO_MS = 45000;

const registry = new URLSearchParams(window.location.search).get('registry');
const env = { registry, control: window.location.origin };
window.sdkResults = [];
window.sdkDone = false;

for (const [title, scenario] of scenarios) {
  const li = document.createElement('li');
  document.getElementById('results').append(li);
  try {
    const figures = await bounded(scenario, env, SCENARIO_MS);
    window.sdkResults.push({ title, ok: true, figures });
    li.textContent = `ok: ${title} ${JSON.stringify(figures)}`;
  } catch (err) {
    window.sdkResults.push({ title, ok: false, error: String((err && err.stack) || err) });
    li.textContent = `FAILED: ${title}: ${err}`;
  }
}
window.sdkDone = true;
