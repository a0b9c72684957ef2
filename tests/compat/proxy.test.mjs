// The official `centrifuge` JS SDK through Rotor's proxies, with the README's example backend
// (examples/proxy_backend.py) as the application: no token, a session cookie instead.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { startBackend, startRotor, waitEvent } from './harness.mjs';

/** The `ws` constructor the SDK uses, sending a session cookie as a browser would. */
function withCookie(cookie) {
  return class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { headers: { Cookie: cookie } });
    }
  };
}

describe('proxies with the centrifuge SDK', () => {
  let backend;
  let server;
  const clients = [];

  before(async () => {
    backend = await startBackend();
    const proxy = (event) => ({ endpoint: backend.url(event), timeout: '2s', http_headers: ['Cookie'] });
    const connect = { enabled: true, ...proxy('connect'), emulated_headers: ['X-Session'] };
    server = await startRotor({
      extra: {
        client: { proxy: { connect } },
        channel: {
          namespaces: [{ name: 'app', subscribe_proxy_enabled: true, publish_proxy_enabled: true }],
          proxy: { subscribe: proxy('subscribe'), publish: proxy('publish') },
        },
        rpc: { proxy: proxy('rpc'), without_namespace: { proxy_enabled: true } },
      },
    });
  });

  after(async () => {
    for (const c of clients) c.disconnect();
    await server?.stop();
    backend?.stop();
  });

  function client(cookie, opts = {}) {
    const c = new Centrifuge(server.wsUrl, { websocket: withCookie(cookie), ...opts });
    c.on('error', () => {});
    clients.push(c);
    return c;
  }

  test('connects without a token, subscribes, publishes and calls rpc through the backend', async () => {
    const c = client('session=alice');
    const connected = waitEvent(c, 'connected');
    c.connect();
    const ctx = await connected;
    assert.equal(typeof ctx.client, 'string');

    const sub = c.newSubscription('app:chat');
    sub.on('error', () => {});
    const subscribed = waitEvent(sub, 'subscribed');
    sub.subscribe();
    await subscribed;

    const got = waitEvent(sub, 'publication');
    await c.publish('app:chat', { text: 'hi' });
    const pub = await got;
    assert.deepEqual(pub.data, { text: 'hi', by: 'alice' }, 'the backend rewrote the publication');
    assert.equal(pub.info.user, 'alice');
    assert.deepEqual(pub.info.connInfo, { name: 'Alice' });

    const year = await c.rpc('getCurrentYear', {});
    assert.equal(year.data.year, new Date().getFullYear());
    await assert.rejects(c.rpc('nope', {}), (e) => e.code === 1404);
  });

  test('the SDK\'s headers option reaches the backend for a header the proxy lists', async () => {
    const c = client('other=1', { headers: { 'X-Session': 'carol', 'X-Unlisted': 'x' } });
    const connected = waitEvent(c, 'connected');
    c.connect();
    await connected;
    const sub = c.newSubscription('app:room');
    sub.on('error', () => {});
    const subscribed = waitEvent(sub, 'subscribed');
    sub.subscribe();
    await subscribed;
    const got = waitEvent(sub, 'publication');
    await c.publish('app:room', { text: 'from carol' });
    assert.equal((await got).info.user, 'carol', 'the emulated X-Session header authenticated');
  });

  test('the backend denies a subscription and a connection without a cookie', async () => {
    const c = client('session=bob');
    const connected = waitEvent(c, 'connected');
    c.connect();
    await connected;
    const sub = c.newSubscription('app:admin');
    sub.on('error', () => {});
    const refused = waitEvent(sub, 'unsubscribed');
    sub.subscribe();
    const ctx = await refused;
    assert.equal(ctx.code, 403, 'the backend\'s error code ends the subscription');

    const anon = client('other=1');
    const disconnected = waitEvent(anon, 'disconnected');
    anon.connect();
    const d = await disconnected;
    assert.equal(d.code, 4501, 'terminal disconnect from the backend');
  });
});
