// TLS listeners with the official SDK: the test makes a CA and a server certificate with
// the openssl command line, rotor serves `http_server.tls` with them, and the centrifuge
// client connects over wss:// trusting only that CA; publications come through the HTTP API
// over https://. A client that does not trust the CA is refused.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { WAIT_MS, startRotor, waitEvent, withTimeout } from './harness.mjs';

/** A CA and a server certificate for localhost/127.0.0.1 in a fresh directory. */
function makePki() {
  const dir = mkdtempSync(path.join(tmpdir(), 'rotor-tls-'));
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=rotor js test CA');
  run('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
  return {
    dir,
    ca: readFileSync(path.join(dir, 'ca.pem')),
    cert: path.join(dir, 'server.pem'),
    key: path.join(dir, 'server.key'),
  };
}

/** POST /api/<method> over https, trusting `ca`; resolves { status, body }. */
function apiOverTls(server, ca, method, payload) {
  const body = JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: server.port,
        servername: 'localhost',
        path: `/api/${method}`,
        method: 'POST',
        ca,
        headers: { 'X-API-Key': server.apiKey, 'Content-Type': 'application/json' },
        timeout: WAIT_MS,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(text) }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The `ws` constructor the SDK uses, trusting only `ca`. */
function websocketTrusting(ca) {
  return class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { ca, servername: 'localhost' });
    }
  };
}

describe('rotor over TLS', () => {
  let pki;
  let server;
  before(async () => {
    pki = makePki();
    server = await startRotor({
      extra: { http_server: { tls: { enabled: true, cert_pem: pki.cert, key_pem: pki.key } } },
    });
  });
  after(async () => {
    await server?.stop();
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
  });

  test('the SDK connects over wss:// and receives what the API publishes over https://', async () => {
    const client = new Centrifuge(`wss://127.0.0.1:${server.port}/connection/websocket`, {
      websocket: websocketTrusting(pki.ca),
      token: server.token('alice'),
    });
    client.on('error', () => {});
    try {
      const connected = waitEvent(client, 'connected');
      client.connect();
      const ctx = await connected;
      assert.equal(ctx.transport, 'websocket');
      const sub = client.newSubscription('news');
      sub.on('error', () => {});
      const subscribed = waitEvent(sub, 'subscribed');
      sub.subscribe();
      await subscribed;
      const got = waitEvent(sub, 'publication');
      const res = await apiOverTls(server, pki.ca, 'publish', { channel: 'news', data: { over: 'tls' } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual((await got).data, { over: 'tls' });
    } finally {
      client.disconnect();
    }
  });

  test('a client that does not trust the certificate is refused', async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${server.port}/connection/websocket`);
    const err = await withTimeout(new Promise((resolve) => ws.once('error', resolve)), 'TLS error');
    assert.match(err.message, /certificate/i);
  });
});
