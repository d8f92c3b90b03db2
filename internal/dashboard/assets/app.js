// minuted dashboard. Vanilla JavaScript, no dependency.
// Safety rules kept throughout: data is only ever written with textContent
// or setAttribute (never parsed as HTML); the admin token lives in
// sessionStorage (this tab only) and is sent as a Bearer header; no request
// for data is made without it.
'use strict';
(function () {
  const TOKEN_KEY = 'minuted.token';
  const $ = (id) => document.getElementById(id);
  const SVG = 'http://www.w3.org/2000/svg';
  const state = { token: sessionStorage.getItem(TOKEN_KEY) || '', stream: null, range: 'hour',
    project: null, series: [], seriesFrom: 0, thresholds: [], topups: new Map(), rows: new Map() };

  // ---- formatting ----
  const fmtMin = (s) => (s / 60).toFixed(2);
  function fmtDur(sec) {
    if (sec === null || sec === undefined) return '—';
    if (sec <= 0) return 'empty';
    const d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    return m + 'm ' + s + 's';
  }
  function fmtTalk(sec) {
    const h = Math.floor(sec / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    return (h > 0 ? h + ':' + String(m).padStart(2, '0') : String(m)) + ':' + String(s).padStart(2, '0');
  }
  const fmtTime = (t) => { const d = new Date(t); return isNaN(d) ? '' : d.toLocaleString(); };
  const fmtThr = (a) => (a && a.length ? a.map((t) => t + ' min').join(', ') : '—');
  function stateText(p) {
    if (p.state === 'empty') return 'empty';
    if (p.state === 'below') return 'below ' + p.below_threshold_minutes + ' min';
    return 'ok';
  }

  // ---- DOM helpers (textContent only) ----
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function setText(id, text) { const e = $(id); const t = String(text); if (e.textContent !== t) e.textContent = t; }
  function fillTable(id, items, cells) {
    const tb = $(id).tBodies[0];
    const rows = items.map((it) => {
      const tr = el('tr');
      for (const c of cells(it)) {
        const td = el('td', c.text, c.cls);
        tr.appendChild(td);
      }
      return tr;
    });
    tb.replaceChildren(...rows);
  }
  function showError(msg) { const e = $('error'); e.textContent = msg || ''; e.hidden = !msg; }
  function setLive(on, text) { const e = $('live'); e.className = 'live ' + (on ? 'on' : 'off'); setText('live-text', text); }

  // ---- requests: always with the token ----
  class Unauthorized extends Error {}
  async function request(path, opts) {
    if (!state.token) throw new Unauthorized('not signed in');
    opts = opts || {};
    const headers = Object.assign({}, opts.headers || {}, { Authorization: 'Bearer ' + state.token });
    const r = await fetch(path, Object.assign({}, opts, { headers, cache: 'no-store', credentials: 'omit' }));
    let body = {};
    try { body = await r.json(); } catch (e) { body = {}; }
    if (r.status === 401) throw new Unauthorized(body.error || 'the token was refused');
    if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
    return { status: r.status, body };
  }
  function handle(err) {
    if (err instanceof Unauthorized) { signOut(err.message); return; }
    if (err && err.name === 'AbortError') return;
    showError(String(err && err.message ? err.message : err));
  }

  // ---- event stream over fetch (EventSource cannot send the token header) ----
  function closeStream() { if (state.stream) { state.stream.abort(); state.stream = null; } }
  function openStream(url, onEvent) {
    closeStream();
    const ctl = new AbortController();
    state.stream = ctl;
    (async () => {
      let delay = 1000;
      while (!ctl.signal.aborted) {
        try {
          const r = await fetch(url, { headers: { Authorization: 'Bearer ' + state.token, Accept: 'text/event-stream' },
            signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
          if (r.status === 401) { signOut('the token was refused'); return; }
          if (!r.ok || !r.body) {
            let msg = 'HTTP ' + r.status;
            try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
            throw new Error(msg);
          }
          setLive(true, 'live'); delay = 1000;
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, i); buf = buf.slice(i + 2);
              let name = 'message'; const data = [];
              for (const line of block.split('\n')) {
                if (line.startsWith('event: ')) name = line.slice(7);
                else if (line.startsWith('data: ')) data.push(line.slice(6));
              }
              if (!data.length) continue;
              let v; try { v = JSON.parse(data.join('\n')); } catch (e) { continue; }
              if (name === 'error') { setLive(false, 'error: ' + v.error); continue; }
              setLive(true, 'live');
              onEvent(name, v);
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
          setLive(false, 'reconnecting: ' + (e.message || e));
        }
        if (ctl.signal.aborted) return;
        setLive(false, 'reconnecting');
        await new Promise((res) => setTimeout(res, delay));
        delay = Math.min(delay * 2, 15000);
      }
    })();
  }

  // ---- sign in / out ----
  function signOut(msg) {
    closeStream();
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    for (const id of ['view-projects', 'view-project', 'view-system']) $(id).hidden = true;
    $('projects').tBodies[0].replaceChildren(); state.rows.clear();
    $('nav').hidden = true; $('login').hidden = false;
    setText('login-error', msg || '');
    $('token').value = ''; $('token').focus();
  }
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    state.token = $('token').value.trim();
    try {
      await request('/ui/api/overview');
      sessionStorage.setItem(TOKEN_KEY, state.token);
      $('token').value = '';
      setText('login-error', '');
      route();
    } catch (e) {
      state.token = '';
      $('token').value = '';
      setText('login-error', e instanceof Unauthorized ? 'Wrong token: ' + e.message : String(e.message || e));
    }
  });
  $('logout').addEventListener('click', () => signOut(''));

  // ---- projects table ----
  function renderOverview(ov) {
    setText('t-projects', ov.totals.projects); setText('t-live', ov.totals.live_calls);
    setText('t-burn', ov.totals.burn_minutes_per_hour.toFixed(2)); setText('t-below', ov.totals.below); setText('t-empty', ov.totals.empty);
    setText('updated', 'updated ' + fmtTime(ov.at));
    const tb = $('projects').tBodies[0];
    const filter = $('filter').value.trim().toLowerCase();
    const seen = new Set();
    let prev = null;
    for (const p of ov.projects) {
      seen.add(p.id);
      let tr = state.rows.get(p.id);
      if (!tr) {
        tr = el('tr');
        const a = el('a', p.id); a.href = '#/p/' + encodeURIComponent(p.id);
        const first = el('td'); first.appendChild(a); tr.appendChild(first);
        for (const cls of ['num', 'num', 'num', 'num', '', '']) tr.appendChild(el('td', '', cls));
        tr.dataset.id = p.id;
        state.rows.set(p.id, tr);
      }
      const c = tr.cells;
      const vals = [fmtMin(p.balance_seconds), p.burn_minutes_per_hour.toFixed(2), fmtDur(p.time_to_empty_seconds),
        p.live_calls, p.tariff_text, stateText(p) + ' · ' + fmtThr(p.thresholds_minutes)];
      vals.forEach((v, i) => { const s = String(v); if (c[i + 1].textContent !== s) c[i + 1].textContent = s; });
      tr.className = 'st-' + p.state;
      tr.hidden = filter !== '' && !p.id.toLowerCase().includes(filter);
      const want = prev ? prev.nextSibling : tb.firstChild;
      if (want !== tr) tb.insertBefore(tr, want);
      prev = tr;
    }
    for (const [id, tr] of state.rows) if (!seen.has(id)) { tr.remove(); state.rows.delete(id); }
    $('projects-empty').hidden = ov.projects.length > 0;
  }
  $('projects').addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr');
    if (tr && tr.dataset.id && ev.target.tagName !== 'A') location.hash = '#/p/' + encodeURIComponent(tr.dataset.id);
  });
  $('filter').addEventListener('input', () => {
    const f = $('filter').value.trim().toLowerCase();
    for (const [id, tr] of state.rows) tr.hidden = f !== '' && !id.toLowerCase().includes(f);
  });

  // ---- project page ----
  function renderProjectHead(pv) {
    const p = pv.project;
    setText('p-id', p.id);
    const badge = $('p-state'); badge.className = 'badge ' + p.state; badge.textContent = stateText(p);
    setText('p-balance', fmtMin(p.balance_seconds)); setText('p-balance-seconds', p.balance_seconds);
    setText('p-burn', p.burn_minutes_per_hour.toFixed(2)); setText('p-ttz', fmtDur(p.time_to_empty_seconds));
    setText('p-live', pv.calls.length); setText('p-tariff', p.tariff_text);
    setText('p-policy', 'on exhausted: ' + (p.on_exhausted || 'allow') + ', credit ' + p.credit_limit_seconds + ' s');
    fillTable('p-calls', pv.calls, (c) => [
      { text: c.node + ' / ' + c.channel }, { text: fmtTime(c.answered_at) }, { text: fmtTalk(c.talk_seconds), cls: 'num' },
      { text: c.debited_seconds, cls: 'num' }, { text: [c.tariff.free_seconds, c.tariff.minimum_seconds, c.tariff.increment_seconds].join('/') },
      { text: [c.estimated ? 'estimated' : '', c.exhausted ? 'exhausted' : ''].filter(Boolean).join(' ') }]);
    $('p-calls-none').hidden = pv.calls.length > 0;
    for (const e of pv.topups) state.topups.set(e.id, e);
    const tops = Array.from(state.topups.values()).sort((a, b) => (a.at < b.at ? 1 : -1)).slice(0, 20);
    fillTable('p-topups', tops, (e) => [{ text: fmtTime(e.at) }, { text: e.kind }, { text: fmtMin(e.seconds), cls: 'num' },
      { text: fmtMin(e.balance_seconds), cls: 'num' }, { text: e.reference || '' }]);
    fillTable('p-alerts', pv.alerts, (a) => [{ text: fmtTime(a.at) }, { text: a.kind },
      { text: alertDetail(a) }]);
    setText('p-alerts-note', pv.alerts_error || (pv.alerts.length ? '' : 'No recent alert.'));
  }
  function alertDetail(a) {
    const parts = [];
    if (a.threshold_minutes !== undefined && a.threshold_minutes !== null) parts.push('threshold ' + a.threshold_minutes + ' min');
    if (a.project) parts.push('balance ' + fmtMin(a.balance_seconds) + ' min');
    if (a.node) parts.push('node ' + a.node);
    if (a.detail) parts.push(a.detail);
    if (a.count) parts.push('×' + a.count);
    return parts.join(', ');
  }
  async function loadProject(id) {
    const { body } = await request('/ui/api/projects/' + encodeURIComponent(id) + '?range=' + state.range);
    if (state.project !== id) return;
    state.series = body.series.map((p) => ({ t: Date.parse(p.t), b: p.b }));
    state.seriesFrom = Date.parse(body.from);
    state.thresholds = body.project.thresholds_minutes;
    setText('chart-note', body.series_truncated ? 'older history beyond the entries read is not shown' : '');
    renderProjectHead(body);
    drawChart();
    openStream('/ui/api/events?view=project&project=' + encodeURIComponent(id), (name, pv) => {
      if (name !== 'project' || state.project !== id) return;
      const now = Date.parse(pv.at);
      const spans = { hour: 3600e3, day: 86400e3, week: 7 * 86400e3 };
      state.seriesFrom = Math.max(now - spans[state.range], Date.parse(pv.created_at) || 0);
      // The last point is "now": replace it by the entries' time course.
      if (state.series.length) state.series.pop();
      const lastT = state.series.length ? state.series[state.series.length - 1].t : 0;
      for (const e of pv.entries.slice().reverse()) { const t = Date.parse(e.at); if (t > lastT) state.series.push({ t, b: e.balance_seconds }); }
      state.series.push({ t: now, b: pv.project.balance_seconds });
      while (state.series.length > 2 && state.series[1].t < state.seriesFrom) state.series.shift();
      state.thresholds = pv.project.thresholds_minutes;
      renderProjectHead(pv);
      drawChart();
    });
  }
  document.querySelectorAll('.seg button').forEach((b) => b.addEventListener('click', () => {
    state.range = b.dataset.range;
    document.querySelectorAll('.seg button').forEach((x) => x.classList.toggle('on', x === b));
    if (state.project) loadProject(state.project).catch(handle);
  }));

  // ---- chart: hand-drawn SVG, balance in minutes, thresholds as dashed lines ----
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function drawChart() {
    const W = 800, H = 260, L = 56, R = 12, T = 12, B = 26;
    const chart = $('chart');
    const pts = state.series;
    if (!pts.length) { chart.replaceChildren(svg('text', { x: L, y: H / 2 }, 'no data')); return; }
    const x0 = Math.min(state.seriesFrom, pts[0].t), x1 = Math.max(pts[pts.length - 1].t, x0 + 1);
    const ys = pts.map((p) => p.b / 60).concat(state.thresholds, [0]);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y1 - y0 < 1) y1 = y0 + 1;
    const pad = (y1 - y0) * 0.08; y0 -= y0 < 0 ? pad : 0; y1 += pad;
    const X = (t) => L + (t - x0) / (x1 - x0) * (W - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    const kids = [];
    kids.push(svg('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }));
    kids.push(svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }));
    for (const v of [y0, (y0 + y1) / 2, y1]) kids.push(svg('text', { x: L - 6, y: Y(v) + 4, 'text-anchor': 'end' }, v.toFixed(1)));
    kids.push(svg('text', { x: L, y: H - 8 }, new Date(x0).toLocaleString()));
    kids.push(svg('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, new Date(x1).toLocaleString()));
    if (y0 <= 0 && y1 >= 0) kids.push(svg('line', { class: 'zero', x1: L, y1: Y(0), x2: W - R, y2: Y(0) }));
    for (const t of state.thresholds) {
      kids.push(svg('line', { class: 'thr', x1: L, y1: Y(t), x2: W - R, y2: Y(t) }));
      kids.push(svg('text', { class: 'thr-label', x: W - R - 4, y: Y(t) - 3, 'text-anchor': 'end' }, t + ' min'));
    }
    // A step line: the balance holds until the next entry.
    let d = '';
    pts.forEach((p, i) => {
      const x = X(Math.max(p.t, x0)).toFixed(1), y = Y(p.b / 60).toFixed(1);
      if (i === 0) d += 'M' + x + ' ' + y;
      else d += 'H' + x + 'V' + y;
    });
    const area = d + 'V' + Y(Math.max(y0, Math.min(0, y1))).toFixed(1) + 'H' + X(Math.max(pts[0].t, x0)).toFixed(1) + 'Z';
    kids.push(svg('path', { class: 'area', d: area }));
    kids.push(svg('path', { class: 'line', d: d, 'data-points': pts.length }));
    chart.replaceChildren(...kids);
  }

  // ---- top-up: review, confirm, show the ledger entry ----
  function newReference() {
    const r = new Uint8Array(4); crypto.getRandomValues(r);
    return 'ui-' + new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14) + '-' + Array.from(r, (b) => b.toString(16).padStart(2, '0')).join('');
  }
  let pendingTopUp = null;
  $('topup-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setText('topup-error', '');
    const minutes = Number($('topup-minutes').value), reference = $('topup-reference').value.trim();
    if (!(minutes > 0) || !reference) { setText('topup-error', 'Give a positive number of minutes and a reference.'); return; }
    pendingTopUp = { project: state.project, minutes, reference };
    setText('topup-confirm-text', 'Add ' + minutes + ' min to project ' + state.project + ' with reference ' + reference + '?');
    $('topup-confirm').hidden = false;
    $('topup-ok').focus();
  });
  $('topup-cancel').addEventListener('click', () => { pendingTopUp = null; $('topup-confirm').hidden = true; });
  $('topup-ok').addEventListener('click', async () => {
    const t = pendingTopUp;
    if (!t) return;
    pendingTopUp = null;
    $('topup-confirm').hidden = true;
    try {
      const { body } = await request('/v1/projects/' + encodeURIComponent(t.project) + '/topups', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ minutes: t.minutes, reference: t.reference }) });
      setText('topup-result-text', (body.applied === 'now' ? 'Top-up applied' : 'This reference was applied before: nothing changed') +
        '. Balance now ' + body.balance_minutes.toFixed(2) + ' min.');
      const e = body.entry;
      fillTable('topup-entry', [['Entry', e.id], ['At', fmtTime(e.at)], ['Kind', e.kind], ['Seconds', e.seconds],
        ['Balance after (s)', e.balance_seconds], ['Reference', e.reference || '']], (kv) => [{ text: kv[0] }, { text: kv[1] }]);
      $('topup-result').hidden = false;
      state.topups.set(e.id, e);
      $('topup-minutes').value = ''; $('topup-reference').value = newReference();
    } catch (e) {
      if (e instanceof Unauthorized) { handle(e); return; }
      setText('topup-error', 'Top-up failed: ' + (e.message || e));
    }
  });

  // ---- system view ----
  function renderSystem(sv) {
    const f = sv.figures;
    setText('s-lag', f.consumer ? f.consumer.pending : '?');
    setText('s-ack', f.consumer ? ('ack pending ' + f.consumer.ack_pending + ', redelivered ' + f.consumer.redelivered + ' (' + f.consumer.name + ')') : '');
    setText('s-dlq', f.dead_letters === null || f.dead_letters === undefined ? '?' : f.dead_letters);
    fillTable('s-checks', sv.checks, (c) => [{ text: c.name }, { text: c.ok ? 'ok' : 'failing: ' + (c.error || ''), cls: c.ok ? 'ok' : 'error' }]);
    fillTable('s-nodes', f.nodes, (n) => [{ text: n.node }, { text: n.stale ? 'no snapshot (stale)' : (n.ari_connected ? 'connected' : 'disconnected'), cls: n.ari_connected ? 'ok' : 'error' },
      { text: n.live_calls, cls: 'num' }, { text: fmtTime(n.last_snapshot) }]);
    $('s-nodes-none').hidden = f.nodes.length > 0;
    fillTable('s-alerts', sv.alerts, (a) => [{ text: fmtTime(a.at) }, { text: a.kind }, { text: a.node || '' }, { text: alertDetail(a) }]);
    $('s-errors').replaceChildren(...(f.errors || []).concat(sv.alerts_error ? [sv.alerts_error] : []).map((m) => el('li', m)));
  }

  // ---- routing ----
  function show(view) {
    for (const id of ['view-projects', 'view-project', 'view-system']) $(id).hidden = id !== view;
    $('nav-projects').classList.toggle('on', view === 'view-projects');
    $('nav-system').classList.toggle('on', view === 'view-system');
  }
  function route() {
    showError('');
    if (!state.token) { signOut(''); return; }
    $('login').hidden = true; $('nav').hidden = false;
    const h = location.hash;
    closeStream();
    if (h.startsWith('#/p/')) {
      const id = decodeURIComponent(h.slice(4));
      if (state.project !== id) { state.topups = new Map(); $('topup-result').hidden = true; $('topup-confirm').hidden = true; setText('topup-error', ''); }
      state.project = id;
      show('view-project');
      if (!$('topup-reference').value) $('topup-reference').value = newReference();
      loadProject(id).catch(handle);
    } else if (h === '#/system') {
      state.project = null;
      show('view-system');
      request('/ui/api/system').then((r) => renderSystem(r.body)).catch(handle);
      openStream('/ui/api/events?view=system', (name, v) => { if (name === 'system') renderSystem(v); });
    } else {
      state.project = null;
      show('view-projects');
      request('/ui/api/overview').then((r) => renderOverview(r.body)).catch(handle);
      openStream('/ui/api/events?view=overview', (name, v) => { if (name === 'overview') renderOverview(v); });
    }
  }
  window.addEventListener('hashchange', route);
  route();
})();
