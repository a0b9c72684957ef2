// Publication filtering by tags with the official SDK: a subscription's `tagsFilter` (sent as
// `tf`) lets through only the publications whose tags pass, live and on recovery after a
// transport drop; the namespace allows it with `allow_tags_filter`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { startRotor, waitEvent, waitUntil } from './harness.mjs';

describe('tags filter', () => {
  let server;
  before(async () => {
    const tf = {
      name: 'tf',
      allow_subscribe_for_client: true,
      allow_tags_filter: true,
      history_size: 100,
      history_ttl: '300s',
      force_recovery: true,
    };
    server = await startRotor({ extra: { channel: { namespaces: [tf] } } });
  });
  after(async () => {
    await server?.stop();
  });

  async function publish(n, kind) {
    const res = await server.api('publish', { channel: 'tf:news', data: { n }, tags: { kind } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  }

  test('only matching publications arrive, live and recovered', async () => {
    const c = new Centrifuge(server.wsUrl, {
      websocket: WebSocket,
      token: server.token('filter'),
      // The reconnect waits 1.5 s: time to publish while the client is away.
      minReconnectDelay: 1500,
      maxReconnectDelay: 1500,
    });
    c.on('error', () => {});
    try {
      const connected = waitEvent(c, 'connected');
      c.connect();
      await connected;
      const tagsFilter = {
        op: 'or',
        nodes: [
          { key: 'kind', cmp: 'eq', val: 'a' },
          { key: 'kind', cmp: 'in', vals: ['c'] },
        ],
      };
      const sub = c.newSubscription('tf:news', { tagsFilter });
      sub.on('error', () => {});
      const got = [];
      sub.on('publication', (ctx) => got.push(ctx.data.n));
      const first = waitEvent(sub, 'subscribed');
      sub.subscribe();
      assert.equal((await first).recoverable, true);

      await publish(1, 'a');
      await publish(2, 'b');
      await publish(3, 'c');
      await waitUntil(() => got.length === 2, 'two matching publications');

      const again = waitEvent(sub, 'subscribed');
      const away = waitEvent(c, 'connecting');
      c._transport._transport.terminate();
      await away;
      await publish(4, 'b');
      await publish(5, 'a');
      const ctx = await again;
      assert.equal(ctx.wasRecovering, true);
      assert.equal(ctx.recovered, true);
      // A last matching one marks the end: everything before it has arrived.
      await publish(6, 'a');
      await waitUntil(() => got.includes(6), 'the last publication');
      assert.deepStrictEqual(got, [1, 3, 5, 6]);
    } finally {
      c.disconnect();
    }
  });

  test('a namespace without allow_tags_filter refuses the filter', async () => {
    const c = new Centrifuge(server.wsUrl, { websocket: WebSocket, token: server.token('nofilter') });
    c.on('error', () => {});
    try {
      const connected = waitEvent(c, 'connected');
      c.connect();
      await connected;
      const sub = c.newSubscription('news', { tagsFilter: { key: 'kind', cmp: 'eq', val: 'a' } });
      const refused = waitEvent(sub, 'unsubscribed');
      sub.subscribe();
      assert.equal((await refused).code, 107);
    } finally {
      c.disconnect();
    }
  });
});
