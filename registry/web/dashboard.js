// Switchboard cluster dashboard: polls GET /v1/nodes every second and shows the load set live.
//
// Nodes that appear are flashed as "new"; nodes that disappear stay listed as "gone" for a while so a
// person watching sees the change. All values reach the DOM through textContent.
'use strict';

(() => {
  const POLL_MS = 1000;
  const HISTORY_POINTS = 120; // two minutes at one sample a second
  const GONE_KEEP_MS = 15000;
  const NEW_MARK_MS = 5000;
  const EVENTS_KEPT = 30;

  const $ = (id) => document.getElementById(id);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const rows = new Map(); // id -> {tr, cells, since, goneAt}
  const samples = { nodes: [], conns: [] };
  let first = true;
  let failures = 0;

  function td(cls) {
    const el = document.createElement('td');
    if (cls) el.className = cls;
    return el;
  }

  function event(kind, text) {
    const li = document.createElement('li');
    li.dataset.kind = kind;
    const t = document.createElement('time');
    const now = new Date();
    t.dateTime = now.toISOString();
    t.textContent = now.toLocaleTimeString();
    const s = document.createElement('span');
    s.textContent = text;
    li.append(t, s);
    const list = $('events');
    list.prepend(li);
    while (list.children.length > EVENTS_KEPT) list.lastElementChild.remove();
  }

  function rowFor(id) {
    let r = rows.get(id);
    if (r) return r;
    const tr = document.createElement('tr');
    tr.dataset.node = id;
    const cells = { id: td('id'), conns: td('conns'), load: td('load'), accepting: td('accepting'), rooms: td('rooms'), rate: td('rate'), url: td('url') };
    cells.id.textContent = id;
    const bar = document.createElement('span');
    bar.className = 'bar';
    const fill = document.createElement('span');
    bar.append(fill);
    const pct = document.createElement('span');
    cells.load.append(bar, pct);
    tr.append(cells.id, cells.conns, cells.load, cells.accepting, cells.rooms, cells.rate, cells.url);
    r = { tr, cells, fill, pct, since: Date.now(), goneAt: 0, msgs: null };
    rows.set(id, r);
    return r;
  }

  function render(nodes) {
    const now = Date.now();
    const seen = new Set();
    for (const n of nodes) {
      seen.add(n.id);
      const known = rows.has(n.id) && !rows.get(n.id).goneAt;
      const r = rowFor(n.id);
      if (!known) {
        r.since = now;
        r.goneAt = 0;
        if (!first) {
          r.tr.dataset.state = 'new';
          event('up', `${n.id} joined the load set`);
        } else r.tr.dataset.state = 'present';
      } else if (r.tr.dataset.state === 'new' && now - r.since > NEW_MARK_MS) {
        r.tr.dataset.state = 'present';
      }
      const cap = Number(n.capacity) || 0;
      const conns = Number(n.connections) || 0;
      r.cells.conns.textContent = cap ? `${conns.toLocaleString()} / ${cap.toLocaleString()}` : conns.toLocaleString();
      const ratio = cap ? Math.min(1, conns / cap) : 0;
      r.fill.style.width = `${(ratio * 100).toFixed(1)}%`;
      r.fill.dataset.level = ratio >= 1 ? 'full' : ratio >= 0.8 ? 'high' : 'ok';
      r.pct.textContent = ratio > 0 && ratio < 0.001 ? '<0.1%' : `${(ratio * 100).toFixed(ratio < 0.1 ? 1 : 0)}%`;
      const acc = n.accepting !== false;
      // A member whose heartbeat expired stays listed until the operator removes it; it is never assigned.
      const dead = n.live === false;
      const state = dead ? 'dead' : String(acc);
      if (r.cells.accepting.dataset.value !== state) {
        r.cells.accepting.dataset.value = state;
        const pill = document.createElement('span');
        pill.className = `pill ${acc ? 'yes' : 'no'}`;
        pill.textContent = dead ? 'no heartbeat' : acc ? 'accepting' : 'not accepting';
        r.cells.accepting.replaceChildren(pill);
        if (known) {
          const what = dead ? 'stopped beating' : acc ? 'is accepting again' : 'stopped accepting';
          event(acc ? 'up' : 'down', `${n.id} ${what}`);
        }
      }
      // Nodes report rooms and a running message count every couple of seconds; the rate is the
      // difference between two reports.
      const stats = n.stats || {};
      r.cells.rooms.textContent = Number(stats.rooms || 0).toLocaleString();
      const msgs = Number(stats.messages || 0);
      if (!r.msgs || msgs < r.msgs.count) {
        r.msgs = { count: msgs, at: now, rate: null };
      } else if (msgs !== r.msgs.count) {
        r.msgs = { count: msgs, at: now, rate: ((msgs - r.msgs.count) * 1000) / Math.max(1, now - r.msgs.at) };
      } else if (now - r.msgs.at > 5000) {
        r.msgs = { count: msgs, at: now, rate: 0 };
      }
      r.cells.rate.textContent = r.msgs.rate === null ? '–' : r.msgs.rate.toFixed(r.msgs.rate < 10 ? 1 : 0);
      r.cells.url.textContent = n.url || '';
    }
    for (const [id, r] of rows) {
      if (seen.has(id)) continue;
      if (!r.goneAt) {
        r.goneAt = now;
        r.tr.dataset.state = 'gone';
        const pill = document.createElement('span');
        pill.className = 'pill no';
        pill.textContent = 'left the load set';
        r.cells.accepting.replaceChildren(pill);
        r.cells.accepting.dataset.value = 'gone';
        event('down', `${id} left the load set`);
      } else if (now - r.goneAt > GONE_KEEP_MS) {
        r.tr.remove();
        rows.delete(id);
      }
    }
    const order = [...rows.keys()].sort();
    $('node-rows').replaceChildren(...order.map((id) => rows.get(id).tr));
    $('no-nodes').hidden = nodes.length > 0;

    const accepting = nodes.filter((n) => n.accepting !== false);
    const total = nodes.reduce((s, n) => s + (Number(n.connections) || 0), 0);
    const cap = nodes.reduce((s, n) => s + (Number(n.capacity) || 0), 0);
    $('node-count').textContent = String(nodes.length);
    $('accepting-count').textContent = `${accepting.length} accepting`;
    $('conn-total').textContent = total.toLocaleString();
    $('capacity-total').textContent = `capacity ${cap.toLocaleString()}`;
    $('util').textContent = cap ? `${((100 * total) / cap).toFixed(total && total / cap < 0.01 ? 2 : 1)}%` : '–';
    push(samples.nodes, nodes.length);
    push(samples.conns, total);
    spark($('spark-nodes'), samples.nodes);
    spark($('spark-conns'), samples.conns);
    if (first) event('info', `Watching ${nodes.length} node${nodes.length === 1 ? '' : 's'} in the load set`);
    first = false;
  }

  function push(arr, v) {
    arr.push(v);
    if (arr.length > HISTORY_POINTS) arr.shift();
  }

  function spark(svg, data) {
    const w = 300;
    const hgt = 40;
    const max = Math.max(1, ...data);
    // Few samples still span a third of the chart, so a fresh page shows a readable line.
    const step = w / (Math.max(data.length, HISTORY_POINTS / 3) - 1);
    const x0 = w - (data.length - 1) * step;
    const pts = data.map((v, i) => `${(x0 + i * step).toFixed(1)},${(hgt - 3 - (v / max) * (hgt - 6)).toFixed(1)}`);
    let line = svg.querySelector('polyline');
    let area = svg.querySelector('polygon');
    if (!line) {
      area = document.createElementNS(SVG_NS, 'polygon');
      area.setAttribute('class', 'area');
      line = document.createElementNS(SVG_NS, 'polyline');
      svg.append(area, line);
    }
    line.setAttribute('points', pts.join(' '));
    area.setAttribute('points', data.length ? `${x0.toFixed(1)},${hgt} ${pts.join(' ')} ${w},${hgt}` : '');
  }

  function live(ok, text) {
    $('live').dataset.state = ok ? 'up' : 'down';
    $('live-text').textContent = text;
  }

  async function poll() {
    try {
      const res = await fetch('/v1/nodes', { cache: 'no-store', headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`the registry answered ${res.status}`);
      const body = await res.json();
      render(Array.isArray(body.nodes) ? body.nodes : []);
      failures = 0;
      live(true, `Live · updated ${new Date().toLocaleTimeString()}`);
    } catch (err) {
      failures += 1;
      live(false, `Registry unreachable (${err.message}); retrying…`);
    } finally {
      setTimeout(poll, failures ? Math.min(5000, POLL_MS * 2 ** Math.min(failures, 3)) : POLL_MS);
    }
  }

  poll();
})();
