// Rotor's admin UI: plain browser JavaScript, no build step, served from the binary.
// It talks to the admin routes next to this page: admin/init, admin/auth, admin/api (the
// legacy server API), admin/stats (live totals) and admin/tail (a WebSocket).
'use strict';

const TOKEN_KEY = 'rotor-admin-token';
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem(TOKEN_KEY) || '';
let insecure = false;
let timer = null;
let tail = null;

const TEMPLATES = {
  publish: { channel: 'chat:index', data: { text: 'hello' } },
  broadcast: { channels: ['chat:a', 'chat:b'], data: { text: 'hello' } },
  subscribe: { user: '42', channel: 'chat:index' },
  unsubscribe: { user: '42', channel: 'chat:index' },
  disconnect: { user: '42' },
  refresh: { user: '42' },
  presence: { channel: 'chat:index' },
  presence_stats: { channel: 'chat:index' },
  history: { channel: 'chat:index', limit: 10 },
  history_remove: { channel: 'chat:index' },
  channels: { pattern: '' },
  info: {},
};

function headers() {
  return token ? { Authorization: 'token ' + token } : {};
}

async function api(method, params) {
  const res = await fetch('admin/api', {
    method: 'POST',
    headers: { ...headers(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ method, params }),
  });
  if (res.status === 401) { logout(); throw new Error('session expired'); }
  const text = await res.text();
  try { return JSON.parse(text); } catch (_) { return { error: { message: text } }; }
}

function show(view) {
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== view;
  for (const b of document.querySelectorAll('nav button[data-view]')) {
    b.classList.toggle('active', b.dataset.view === view);
  }
  clearInterval(timer);
  if (view === 'status') { refresh(); timer = setInterval(refresh, 2000); }
}

function loggedIn() {
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = insecure;
  show('status');
}

function logout() {
  token = '';
  localStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  stopTail();
  for (const s of document.querySelectorAll('.view')) s.hidden = true;
  $('nav').hidden = true;
  $('login').hidden = false;
}

function duration(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24, m = Math.floor(secs / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${secs % 60}s`;
}

function cell(row, text, num) {
  const td = row.insertCell();
  td.textContent = text;
  if (num) td.className = 'num';
}

// The last five minutes of samples, one per refresh.
const series = { clients: [], rate: [], lastSent: null, lastAt: 0 };

async function refresh() {
  try {
    const info = await api('info', {});
    const body = $('nodes');
    body.textContent = '';
    for (const n of (info.result && info.result.nodes) || []) {
      const row = body.insertRow();
      cell(row, n.name); cell(row, n.version); cell(row, duration(n.uptime || 0));
      cell(row, n.num_clients || 0, true); cell(row, n.num_users || 0, true);
      cell(row, n.num_subs || 0, true); cell(row, n.num_channels || 0, true);
      const p = n.process || {};
      cell(row, p.cpu !== undefined ? p.cpu.toFixed(1) + ' %' : '–', true);
      cell(row, p.rss !== undefined ? (p.rss / 1048576).toFixed(1) + ' MB' : '–', true);
    }
    const res = await fetch('admin/stats', { method: 'POST', headers: headers() });
    if (res.ok) sample(await res.json());
  } catch (e) { /* shown on the next refresh */ }
}

function sample(stats) {
  const now = Date.now();
  series.clients.push(stats.clients);
  if (series.lastSent !== null) {
    series.rate.push((stats.messages_sent - series.lastSent) * 1000 / Math.max(1, now - series.lastAt));
  }
  series.lastSent = stats.messages_sent;
  series.lastAt = now;
  for (const k of ['clients', 'rate']) if (series[k].length > 150) series[k].shift();
  chart($('chart-clients'), series.clients);
  chart($('chart-messages'), series.rate);
}

function chart(canvas, points) {
  canvas.dataset.samples = points.length;
  const g = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height, pad = 24;
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points);
  g.fillStyle = '#6b7385';
  g.font = '11px system-ui';
  g.fillText(String(Math.round(max)), 4, 12);
  g.fillText('0', 4, h - 4);
  g.strokeStyle = '#dde1e8';
  g.beginPath(); g.moveTo(pad, h - pad / 2); g.lineTo(w, h - pad / 2); g.stroke();
  if (points.length < 2) return;
  g.strokeStyle = '#2f6fdf';
  g.lineWidth = 2;
  g.beginPath();
  points.forEach((v, i) => {
    const x = pad + (i * (w - pad)) / 149;
    const y = h - pad / 2 - (v / max) * (h - pad);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}

async function runAction(event) {
  event.preventDefault();
  let params;
  try { params = JSON.parse($('params').value || '{}'); } catch (e) {
    $('result').textContent = 'params: ' + e.message;
    return;
  }
  const reply = await api($('method').value, params);
  $('result').textContent = JSON.stringify(reply, null, 2);
}

async function loadChannels(event) {
  if (event) event.preventDefault();
  const reply = await api('channels', { pattern: $('pattern').value });
  const list = $('channel-list');
  list.textContent = '';
  const channels = (reply.result && reply.result.channels) || {};
  for (const name of Object.keys(channels).sort()) {
    const row = list.insertRow();
    cell(row, name); cell(row, channels[name].num_clients, true);
    row.addEventListener('click', () => channelDetail(name));
  }
  if (reply.error) $('channel-detail').textContent = JSON.stringify(reply.error);
}

async function channelDetail(channel) {
  const [stats, presence, history] = await Promise.all([
    api('presence_stats', { channel }), api('presence', { channel }), api('history', { channel, limit: 10, reverse: true }),
  ]);
  $('channel-detail').textContent = JSON.stringify({ channel, presence_stats: stats, presence, history }, null, 2);
}

function startTail(event) {
  event.preventDefault();
  stopTail();
  const channel = $('tail-channel').value.trim();
  if (!channel) return;
  const url = new URL('admin/tail', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('channel', channel);
  url.searchParams.set('token', token);
  tail = new WebSocket(url);
  $('tail-state').textContent = 'connecting…';
  $('tail-stop').disabled = false;
  tail.onmessage = (m) => {
    for (const line of String(m.data).split('\n')) {
      if (!line) continue;
      const push = JSON.parse(line);
      if (push.connect) { $('tail-state').textContent = `following ${channel}`; continue; }
      const li = document.createElement('li');
      const what = push.pub ? push.pub.data : push.join ? { join: push.join } : push.leave ? { leave: push.leave } : push;
      li.textContent = `${new Date().toLocaleTimeString()}  ${JSON.stringify(what)}`;
      $('tail-log').prepend(li);
    }
  };
  tail.onclose = (e) => {
    $('tail-state').textContent = `closed (${e.code}${e.reason ? ' ' + e.reason : ''})`;
    $('tail-stop').disabled = true;
  };
}

function stopTail() {
  if (tail) { tail.onclose = null; tail.close(); tail = null; }
  $('tail-stop').disabled = true;
  $('tail-state').textContent = '';
}

async function login(event) {
  event.preventDefault();
  const res = await fetch('admin/auth', {
    method: 'POST',
    body: new URLSearchParams({ password: $('password').value }),
  });
  if (!res.ok) { $('login-error').hidden = false; return; }
  $('login-error').hidden = true;
  token = (await res.json()).token;
  localStorage.setItem(TOKEN_KEY, token);
  loggedIn();
}

async function start() {
  for (const m of Object.keys(TEMPLATES)) $('method').add(new Option(m, m));
  const fill = () => { $('params').value = JSON.stringify(TEMPLATES[$('method').value], null, 2); };
  $('method').addEventListener('change', fill);
  fill();
  for (const b of document.querySelectorAll('nav button[data-view]')) {
    b.addEventListener('click', () => show(b.dataset.view));
  }
  $('logout').addEventListener('click', logout);
  $('login-form').addEventListener('submit', login);
  $('action-form').addEventListener('submit', runAction);
  $('channels-form').addEventListener('submit', loadChannels);
  $('tail-form').addEventListener('submit', startTail);
  $('tail-stop').addEventListener('click', stopTail);
  const init = await (await fetch('admin/init', { headers: headers() })).json();
  insecure = init.insecure;
  if (init.authenticated) loggedIn(); else logout();
}

start();
