// Test harness for the compatibility suite: starts one rotor binary per call on an
// ephemeral port with a known config, signs HS256 connection tokens, publishes through
// the HTTP API and gives a raw protocol-level WebSocket client. It owns only the rotor
// processes it spawned: teardown signals the child's own PID, never a process by name.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Upper bound for any single wait in the suite (the brief: no wait above 10 s). */
export const WAIT_MS = 10_000;
const READY_TIMEOUT_MS = 15_000;
const READY_LINE = /^rotor listening on (.+):(\d+)\s*$/;

/** Path of the binary under test: $ROTOR_BIN, else the debug build of this repository. */
export function rotorBin() {
  const fromEnv = process.env.ROTOR_BIN;
  if (fromEnv && fromEnv.length > 0) return path.resolve(fromEnv);
  return path.resolve(HERE, '../../target/debug/rotor');
}

// Children still running when the test process exits (a crashed test, say) are killed
// here so no rotor outlives the suite; only PIDs this module spawned are in the set.
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

/** Signs `claims` as an HS256 JWT with `secret` (no library: the format is three base64url parts). */
export function makeToken(secret, claims) {
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const signingInput = `${header}.${payload}`;
  const sig = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${sig}`;
}

/** Decodes and verifies an HS256 JWT made by makeToken; returns the claims or throws. */
export function verifyToken(secret, token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error('not a JWT');
  const expected = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest('base64url');
  if (expected !== parts[2]) throw new Error('bad signature');
  const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
  if (header.alg !== 'HS256') throw new Error('unexpected alg');
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

export const nowSec = () => Math.floor(Date.now() / 1000);

/** The config every suite server runs with; `extra` is merged over the top-level sections. */
export function baseConfig({ secret, apiKey, extra = {} }) {
  const config = {
    http_server: { address: '127.0.0.1', port: 0 },
    log: { level: 'info' },
    client: {
      token: { hmac_secret_key: secret },
      // Node's `ws` sends no Origin header, and an empty list means "no origin check
      // for Origin-less requests", which is what a server-side SDK user gets.
      allowed_origins: [],
    },
    http_api: { key: apiKey },
    channel: {
      without_namespace: { allow_subscribe_for_client: true },
      namespaces: [
        // Subscribers may publish: the client publish path.
        { name: 'chat', allow_subscribe_for_client: true, allow_publish_for_subscriber: true },
        // Read-only: subscribing is fine, client publishing is denied (103).
        { name: 'ro', allow_subscribe_for_client: true },
        // Every channel feature: presence, join/leave, history with forced recovery.
        {
          name: 'room',
          allow_subscribe_for_client: true,
          allow_publish_for_subscriber: true,
          presence: true,
          join_leave: true,
          allow_presence_for_subscriber: true,
          allow_history_for_subscriber: true,
          history_size: 100,
          history_ttl: '300s',
          force_recovery: true,
        },
        // Fossil deltas for every publication, with history so recovery works too.
        {
          name: 'delta',
          allow_subscribe_for_client: true,
          allowed_delta_types: ['fossil'],
          delta_publish: true,
          history_size: 100,
          history_ttl: '300s',
          force_recovery: true,
        },
      ],
    },
    runtime: { shards: 3, placement: 'round_robin', pin_cpus: false },
  };
  for (const [k, v] of Object.entries(extra)) {
    config[k] = { ...(config[k] ?? {}), ...v };
  }
  return config;
}

/**
 * Starts rotor and resolves once it printed `rotor listening on <ip>:<port>`.
 * Returns a handle: { port, httpUrl, wsUrl, secret, apiKey, token(claims), publish(), stop(), ... }.
 */
export async function startRotor({ extra } = {}) {
  const secret = b64url(randomBytes(32));
  const apiKey = b64url(randomBytes(24));
  const dir = await mkdtemp(path.join(tmpdir(), 'rotor-compat-'));
  const configPath = path.join(dir, 'config.json');
  await writeFile(configPath, JSON.stringify(baseConfig({ secret, apiKey, extra }), null, 2));

  const bin = rotorBin();
  const child = spawn(bin, ['-c', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);

  let stdoutTail = '';
  let stderrTail = '';
  const keep = (s) => (s.length > 16384 ? s.slice(-16384) : s);
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(child);
      resolve(exitInfo);
    });
    // A binary that cannot be spawned (missing, not executable) never emits 'exit'.
    child.once('error', (err) => {
      if (child.pid === undefined) {
        exitInfo = { code: null, signal: null, spawnError: err.message };
        live.delete(child);
        resolve(exitInfo);
      }
    });
  });

  const ready = new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      reject(new Error(`rotor did not print its listening line within ${READY_TIMEOUT_MS} ms`));
    }, READY_TIMEOUT_MS);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      stdoutTail = keep(stdoutTail + chunk);
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        const m = READY_LINE.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[2]));
        }
      }
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${err.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`rotor exited before listening (code ${code}, signal ${signal})`));
    });
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderrTail = keep(stderrTail + chunk);
  });

  let port;
  try {
    port = await ready;
  } catch (err) {
    await stopChild(child, exited);
    await rm(dir, { recursive: true, force: true });
    err.message += `\n--- rotor stdout ---\n${stdoutTail}\n--- rotor stderr ---\n${stderrTail}`;
    throw err;
  }

  const httpUrl = `http://127.0.0.1:${port}`;
  const server = {
    port,
    pid: child.pid,
    httpUrl,
    wsUrl: `ws://127.0.0.1:${port}/connection/websocket`,
    secret,
    apiKey,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    logs: () => `--- rotor stdout ---\n${stdoutTail}\n--- rotor stderr ---\n${stderrTail}`,
    /** A connection token for `sub`, valid for an hour unless claims override it. */
    token: (sub = 'user1', claims = {}) => makeToken(secret, { sub, exp: nowSec() + 3600, ...claims }),
    /** POST /api/<method> with the API key; resolves { status, headers, body (parsed or text) }. */
    api: (method, payload) => apiCall(httpUrl, apiKey, method, payload),
    /** Server API publish; throws unless the reply is HTTP 200 without an `error`. */
    publish: async (channel, data) => {
      const res = await apiCall(httpUrl, apiKey, 'publish', { channel, data });
      if (res.status !== 200 || typeof res.body !== 'object' || res.body === null || res.body.error) {
        throw new Error(`publish to ${channel} failed: HTTP ${res.status} ${JSON.stringify(res.body)}`);
      }
      return res;
    },
    /** SIGTERM to this child only, then wait for it to exit; resolves { code, signal }. */
    stop: async () => {
      const info = await stopChild(child, exited);
      await rm(dir, { recursive: true, force: true });
      return info;
    },
  };
  return server;
}

async function stopChild(child, exited) {
  if (child.pid === undefined) return exited;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
  }
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, WAIT_MS, null);
  });
  const info = await Promise.race([exited, timeout]);
  clearTimeout(timer);
  if (info !== null) return info;
  // A server that ignores SIGTERM must not outlive the suite; the test that stopped it
  // sees `forced: true` and can fail on that.
  child.kill('SIGKILL');
  const killed = await exited;
  return { ...killed, forced: true };
}

async function apiCall(httpUrl, apiKey, method, payload) {
  const res = await fetch(`${httpUrl}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify(payload),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await res.text();
  let body = text;
  try {
    body = text.length > 0 ? JSON.parse(text) : text;
  } catch {
    // Not JSON: keep the text for the assertion message.
  }
  return { status: res.status, headers: res.headers, body };
}

/** Rejects after `ms` with a message naming what was awaited. */
export function withTimeout(promise, label, ms = WAIT_MS) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/** Resolves with the first `event` of `emitter` whose args satisfy `pred`. */
export function waitEvent(emitter, event, pred = () => true, ms = WAIT_MS) {
  let listener;
  const p = new Promise((resolve) => {
    listener = (ctx) => {
      if (pred(ctx)) resolve(ctx);
    };
    emitter.on(event, listener);
  });
  return withTimeout(p, `event '${event}'`, ms).finally(() => emitter.off(event, listener));
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `cond` every 10 ms until it is true or `ms` passed. */
export async function waitUntil(cond, label, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${label}`);
    await sleep(10);
  }
}

/**
 * A protocol-level client over `ws` for checks the SDK cannot express (it refuses some
 * misuse locally). Splits frames on '\n' (one frame may carry several replies) and
 * answers server pings (`{}`) with pongs so long tests are not closed with 3012.
 */
export class RawClient {
  constructor(url) {
    this.url = url;
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.ws = null;
  }

  async open() {
    this.ws = new WebSocket(this.url);
    this.closedPromise = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString('utf8') };
        resolve(this.closed);
        this._pump();
      });
    });
    this.ws.on('message', (data, isBinary) => {
      const text = isBinary ? Buffer.from(data).toString('utf8') : data.toString('utf8');
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue;
        const msg = JSON.parse(line);
        if (Object.keys(msg).length === 0) {
          this.ws.send('{}');
          continue;
        }
        this.queue.push(msg);
      }
      this._pump();
    });
    await withTimeout(
      new Promise((resolve, reject) => {
        this.ws.once('open', resolve);
        this.ws.once('error', reject);
      }),
      `raw WebSocket open ${this.url}`,
    );
  }

  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  _pump() {
    this.waiters = this.waiters.filter((w) => {
      const idx = this.queue.findIndex(w.pred);
      if (idx >= 0) {
        const [msg] = this.queue.splice(idx, 1);
        w.resolve(msg);
        return false;
      }
      if (this.closed) {
        w.reject(new Error(`connection closed (${this.closed.code} ${this.closed.reason}) before ${w.label}`));
        return false;
      }
      return true;
    });
  }

  /** Next message (reply or push) satisfying `pred`. */
  next(pred, label = 'message', ms = WAIT_MS) {
    const p = new Promise((resolve, reject) => {
      this.waiters.push({ pred, resolve, reject, label });
    });
    this._pump();
    return withTimeout(p, label, ms);
  }

  /** The reply to command `id`. */
  reply(id, ms = WAIT_MS) {
    return this.next((m) => m.id === id, `reply id=${id}`, ms);
  }

  waitClosed(ms = WAIT_MS) {
    return withTimeout(this.closedPromise, 'WebSocket close', ms);
  }

  close() {
    if (this.ws && this.ws.readyState !== WebSocket.CLOSED) this.ws.close();
  }

  async terminate() {
    if (this.ws && this.ws.readyState !== WebSocket.CLOSED) {
      this.ws.terminate();
    }
  }
}

/**
 * Starts the README's example backend (`examples/proxy_backend.py`, a separate Python
 * process) on a port it picks; resolves { url(event), stop() } once it printed that it
 * listens. Only the child it spawned is ever signalled.
 */
export async function startBackend() {
  const script = path.resolve(HERE, '../../examples/proxy_backend.py');
  const child = spawn('python3', [script, '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  const listening = new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`the example backend exited (code ${code})`)));
  });
  const port = await withTimeout(listening, 'the example backend to listen');
  return {
    url: (event) => `http://127.0.0.1:${port}/centrifugo/${event}`,
    stop: () => {
      child.kill('SIGTERM');
    },
  };
}
