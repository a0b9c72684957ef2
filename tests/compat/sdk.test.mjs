// Compatibility suite: the official `centrifuge` JavaScript SDK (and, where the SDK
// refuses to express a case, a raw protocol client) against a rotor binary.
// Every assertion is about what an SDK user or a protocol peer observes.

import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import {
  RawClient,
  WAIT_MS,
  makeToken,
  nowSec,
  sleep,
  startRotor,
  waitEvent,
  waitUntil,
  withTimeout,
} from './harness.mjs';

// Everything a test opens is closed after it, pass or fail.
const clients = [];
const raws = [];

/** A Centrifuge client for `server`; records 'error' events (an EventEmitter throws on unheard ones). */
function newClient(server, opts = {}) {
  const c = new Centrifuge(server.wsUrl, {
    websocket: WebSocket,
    token: server.token('alice'),
    ...opts,
  });
  c.errors = [];
  c.on('error', (ctx) => c.errors.push(ctx));
  clients.push(c);
  return c;
}

function newSub(client, channel, opts) {
  const sub = client.newSubscription(channel, opts);
  sub.errors = [];
  sub.on('error', (ctx) => sub.errors.push(ctx));
  return sub;
}

async function newRaw(server) {
  const raw = new RawClient(server.wsUrl);
  raws.push(raw);
  await raw.open();
  return raw;
}

async function connectedClient(server, user = 'alice') {
  const c = newClient(server, { token: server.token(user) });
  const connected = waitEvent(c, 'connected');
  c.connect();
  const ctx = await connected;
  c.clientId = ctx.client;
  return c;
}

async function subscribed(client, channel) {
  const sub = newSub(client, channel);
  const ok = waitEvent(sub, 'subscribed');
  sub.subscribe();
  await ok;
  return sub;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.disconnect();
  for (const r of raws.splice(0)) await r.terminate();
});

describe('rotor with the centrifuge SDK', () => {
  // One rotor for this group, started by the first test that needs it. Not a `before`
  // hook: a server that fails to start then fails each test with its startup error
  // (counted as failures) instead of cancelling them.
  let started = null;
  const shared = () => (started ??= startRotor());
  let server;

  beforeEach(async () => {
    server = await shared();
  });

  after(async () => {
    if (!started) return;
    const s = await started.catch(() => null);
    if (s) {
      const info = await s.stop();
      assert.equal(info.forced, undefined, 'rotor ignored SIGTERM and had to be killed');
    }
  });

  test('connect with a valid token emits connected with a client id', async () => {
    const c = newClient(server, { token: server.token('alice') });
    const connected = waitEvent(c, 'connected');
    c.connect();
    const ctx = await connected;
    assert.equal(typeof ctx.client, 'string');
    assert.ok(ctx.client.length > 0, 'client id is empty');
    assert.equal(ctx.transport, 'websocket');
    assert.equal(c.state, 'connected');

    const other = await connectedClient(server, 'bob');
    assert.notEqual(other.clientId, ctx.client, 'two connections got the same client id');
  });

  test('raw connect reply carries client id, ping and pong', async () => {
    const raw = await newRaw(server);
    raw.send({ id: 1, connect: { token: server.token('alice'), name: 'compat-raw' } });
    const reply = await raw.reply(1);
    assert.equal(reply.error, undefined, `connect failed: ${JSON.stringify(reply)}`);
    assert.equal(typeof reply.connect.client, 'string');
    assert.ok(reply.connect.client.length > 0);
    assert.equal(reply.connect.ping, 25, 'default client.ping_interval is 25s');
    assert.equal(reply.connect.pong, true);
  });

  test('HTTP API publish publication reaches a subscriber with identical data', async () => {
    const c = await connectedClient(server);
    const sub = await subscribed(c, 'news');
    const got = [];
    sub.on('publication', (ctx) => got.push(ctx));

    const payloads = [
      { text: 'hello' },
      {
        nested: { deeper: { list: [1, 2, { three: [true, false, null] }], empty: {} } },
        unicode: 'Grüße, 世界, привет, עברית',
        emoji: '🚀👍🏽',
        escapes: 'quote " backslash \\ newline \n tab \t nul-ish \u0001',
        big: '12345678901234567890123',
        maxSafe: Number.MAX_SAFE_INTEGER,
        negative: -42,
        fraction: 0.125,
      },
      ['an', 'array', 3],
      'a bare string',
      7,
    ];
    for (const data of payloads) await server.publish('news', data);
    await waitUntil(() => got.length >= payloads.length, `${payloads.length} publications`);
    await sleep(100);
    assert.equal(got.length, payloads.length, 'extra publications arrived');
    for (let i = 0; i < payloads.length; i++) {
      assert.equal(got[i].channel, 'news');
      assert.deepStrictEqual(got[i].data, payloads[i]);
    }
  });

  test('many publications arrive in publish order', async () => {
    const c = await connectedClient(server);
    const sub = await subscribed(c, 'ordered');
    const seen = [];
    sub.on('publication', (ctx) => seen.push(ctx.data.seq));
    const n = 50;
    for (let i = 0; i < n; i++) await server.publish('ordered', { seq: i });
    await waitUntil(() => seen.length >= n, `${n} publications`);
    assert.deepStrictEqual(
      seen,
      Array.from({ length: n }, (_, i) => i),
    );
  });

  test('subscriptions made before connect are all subscribed (batched frame)', async () => {
    // centrifuge-js 5.x sends the connect command and the subscribe commands of
    // subscriptions created before connect in ONE WebSocket frame, newline-separated
    // (seen on the wire: {"connect":..,"id":1}\n{"subscribe":..,"id":2}\n...), so the
    // server must run the subscribes after, and on the strength of, that connect.
    const c = newClient(server, { token: server.token('alice') });
    const channels = ['batch1', 'batch2', 'chat:batch3'];
    const subs = channels.map((ch) => newSub(c, ch));
    const ok = subs.map((s) => waitEvent(s, 'subscribed'));
    for (const s of subs) s.subscribe();
    c.connect();
    const ctxs = await Promise.all(ok);
    assert.deepStrictEqual(
      ctxs.map((x) => x.channel),
      channels,
    );
    const got = subs.map((s) => waitEvent(s, 'publication'));
    for (const ch of channels) await server.publish(ch, { ch });
    const pubs = await Promise.all(got);
    assert.deepStrictEqual(
      pubs.map((p) => p.data.ch),
      channels,
    );
  });

  test('raw: two commands in one frame get two replies', async () => {
    const raw = await newRaw(server);
    raw.send({ id: 1, connect: { token: server.token('alice') } });
    assert.equal((await raw.reply(1)).error, undefined);
    raw.ws.send(
      `${JSON.stringify({ id: 2, subscribe: { channel: 'multi1' } })}\n${JSON.stringify({
        id: 3,
        subscribe: { channel: 'multi2' },
      })}`,
    );
    const [a, b] = await Promise.all([raw.reply(2), raw.reply(3)]);
    assert.equal(a.error, undefined, JSON.stringify(a));
    assert.equal(typeof a.subscribe, 'object');
    assert.equal(b.error, undefined, JSON.stringify(b));
    assert.equal(typeof b.subscribe, 'object');
  });

  test('after unsubscribe no publications arrive; subscribing again works', async () => {
    const c = await connectedClient(server);
    const sub = await subscribed(c, 'toggle');
    const seen = [];
    sub.on('publication', (ctx) => seen.push(ctx.data));
    await server.publish('toggle', { n: 1 });
    await waitUntil(() => seen.length === 1, 'first publication');

    const gone = waitEvent(sub, 'unsubscribed');
    sub.unsubscribe();
    await gone;
    // Round-trip the connection so the unsubscribe command has surely been processed.
    const other = await subscribed(c, 'toggle-sync');
    other.unsubscribe();
    await server.publish('toggle', { n: 2 });
    await sleep(300);
    assert.deepStrictEqual(seen, [{ n: 1 }], 'publication delivered after unsubscribe');

    const again = waitEvent(sub, 'subscribed');
    sub.subscribe();
    await again;
    await server.publish('toggle', { n: 3 });
    await waitUntil(() => seen.length === 2, 'publication after resubscribe');
    assert.deepStrictEqual(seen, [{ n: 1 }, { n: 3 }]);
  });

  test('HTTP API broadcast reaches every listed channel', async () => {
    const c = await connectedClient(server);
    const s1 = await subscribed(c, 'bc1');
    const s2 = await subscribed(c, 'chat:bc2');
    const got = [waitEvent(s1, 'publication'), waitEvent(s2, 'publication')];
    const res = await server.api('broadcast', { channels: ['bc1', 'chat:bc2'], data: { b: 'ü' } });
    assert.equal(res.status, 200);
    assert.equal(res.body?.error, undefined, JSON.stringify(res.body));
    const responses = res.body?.result?.responses;
    assert.ok(Array.isArray(responses), `no responses array: ${JSON.stringify(res.body)}`);
    assert.equal(responses.length, 2);
    for (const r of responses) assert.equal(r.error, undefined, JSON.stringify(r));
    const [p1, p2] = await Promise.all(got);
    assert.deepStrictEqual(p1.data, { b: 'ü' });
    assert.deepStrictEqual(p2.data, { b: 'ü' });
  });

  test('one publication reaches subscribers on every shard', async () => {
    // round_robin placement hands consecutive connections to consecutive shards, so
    // three clients cover the three shards.
    const subs = [];
    for (const user of ['u0', 'u1', 'u2']) {
      const c = await connectedClient(server, user);
      subs.push(await subscribed(c, 'fanout'));
    }
    const received = subs.map((s) => waitEvent(s, 'publication'));
    await server.publish('fanout', { hello: 'everyone' });
    const ctxs = await Promise.all(received);
    for (const ctx of ctxs) assert.deepStrictEqual(ctx.data, { hello: 'everyone' });
  });

  test('client publish as a subscriber is delivered and resolves', async () => {
    const alice = await connectedClient(server, 'alice');
    const bob = await connectedClient(server, 'bob');
    const subA = await subscribed(alice, 'chat:room');
    const subB = await subscribed(bob, 'chat:room');

    const atAlice = waitEvent(subA, 'publication');
    const atBob = waitEvent(subB, 'publication');
    const data = { text: 'hi from bob', n: 1, tags: ['x', 'ü'] };
    const result = await withTimeout(subB.publish(data), 'publish promise');
    assert.deepStrictEqual(result, {});

    const ctx = await atAlice;
    assert.equal(ctx.channel, 'chat:room');
    assert.deepStrictEqual(ctx.data, data);
    assert.ok(ctx.info, 'client publication carries the publisher info');
    assert.equal(ctx.info.user, 'bob');
    assert.equal(ctx.info.client, bob.clientId);
    assert.deepStrictEqual((await atBob).data, data, 'publisher also receives its own publication');
  });

  test('client publish without permission is rejected with 103', async () => {
    const c = await connectedClient(server);
    const sub = await subscribed(c, 'ro:news');
    await assert.rejects(withTimeout(sub.publish({ nope: true }), 'publish rejection'), (err) => {
      assert.equal(err.code, 103);
      assert.equal(err.message, 'permission denied');
      return true;
    });
    // allow_publish_for_subscriber needs the publisher to be subscribed.
    await assert.rejects(withTimeout(c.publish('chat:elsewhere', { x: 1 }), 'publish rejection'), (err) => {
      assert.equal(err.code, 103);
      return true;
    });
    assert.equal(c.state, 'connected', 'a denied publish must not cost the connection');
  });

  test('subscribing to an unknown namespace ends unsubscribed with 102', async () => {
    const c = await connectedClient(server);
    const sub = newSub(c, 'unknown:chan');
    const unsub = waitEvent(sub, 'unsubscribed');
    sub.subscribe();
    const ctx = await unsub;
    assert.equal(ctx.code, 102);
    assert.equal(ctx.reason, 'unknown channel');
    assert.equal(sub.state, 'unsubscribed');
    assert.equal(c.state, 'connected');
  });

  test('raw: a second subscribe to the same channel gets error 105', async () => {
    const raw = await newRaw(server);
    raw.send({ id: 1, connect: { token: server.token('alice') } });
    const connect = await raw.reply(1);
    assert.equal(connect.error, undefined, `connect failed: ${JSON.stringify(connect)}`);

    raw.send({ id: 2, subscribe: { channel: 'x' } });
    raw.send({ id: 3, subscribe: { channel: 'x' } });
    const first = await raw.reply(2);
    assert.equal(first.error, undefined, `first subscribe failed: ${JSON.stringify(first)}`);
    assert.equal(typeof first.subscribe, 'object');
    const second = await raw.reply(3);
    assert.deepStrictEqual(second, { id: 3, error: { code: 105, message: 'already subscribed' } });

    // The error is a reply, not a disconnect: the connection keeps working.
    raw.send({ id: 4, unsubscribe: { channel: 'x' } });
    assert.deepStrictEqual(await raw.reply(4), { id: 4, unsubscribe: {} });
  });

  test('a token with a wrong signature disconnects with 3500 and no reconnect', async () => {
    const bad = makeToken('not-the-server-secret', { sub: 'alice', exp: nowSec() + 3600 });
    const c = newClient(server, { token: bad });
    let connectedCount = 0;
    let disconnectedCount = 0;
    c.on('connected', () => connectedCount++);
    c.on('disconnected', () => disconnectedCount++);
    const disc = waitEvent(c, 'disconnected');
    c.connect();
    const ctx = await disc;
    assert.equal(ctx.code, 3500);
    assert.equal(ctx.reason, 'invalid token');
    // Give a reconnect (min delay 500 ms) time to happen if the SDK decided to retry.
    await sleep(1500);
    assert.equal(c.state, 'disconnected');
    assert.equal(connectedCount, 0);
    assert.equal(disconnectedCount, 1);
  });

  test('raw: a wrong signature is closed with 3500 "invalid token"', async () => {
    const raw = await newRaw(server);
    raw.send({ id: 1, connect: { token: makeToken('wrong', { sub: 'alice', exp: nowSec() + 60 }) } });
    const closed = await raw.waitClosed();
    assert.deepStrictEqual(closed, { code: 3500, reason: 'invalid token' });
  });

  test('raw: an expired token gets connect error 109', async () => {
    const raw = await newRaw(server);
    const expired = makeToken(server.secret, { sub: 'alice', exp: nowSec() - 60 });
    raw.send({ id: 1, connect: { token: expired } });
    const reply = await raw.reply(1);
    assert.equal(reply.error?.code, 109, `expected error 109, got ${JSON.stringify(reply)}`);
    assert.equal(reply.error.message, 'token expired');
  });

  test('an expired token without getToken: SDK reports 109 and ends unauthorized', async () => {
    // centrifuge-js on connect error 109 marks the token for refresh and reconnects; with
    // no getToken it emits a 'configuration' error and goes disconnected with its own
    // code 1 'unauthorized' — that is what a user of the SDK sees.
    const expired = makeToken(server.secret, { sub: 'alice', exp: nowSec() - 60 });
    const c = newClient(server, { token: expired });
    let connectedCount = 0;
    c.on('connected', () => connectedCount++);
    const disc = waitEvent(c, 'disconnected');
    c.connect();
    const ctx = await disc;
    assert.equal(ctx.code, 1);
    assert.equal(ctx.reason, 'unauthorized');
    const connectErr = c.errors.find((e) => e.type === 'connect');
    assert.ok(connectErr, `no connect error event; errors: ${JSON.stringify(c.errors)}`);
    assert.equal(connectErr.error.code, 109);
    assert.equal(connectErr.error.message, 'token expired');
    assert.ok(c.errors.some((e) => e.type === 'configuration'));
    assert.equal(connectedCount, 0);
  });

  test('an expired token with getToken: SDK fetches a fresh token and connects', async () => {
    const expired = makeToken(server.secret, { sub: 'alice', exp: nowSec() - 60 });
    let calls = 0;
    const c = newClient(server, {
      token: expired,
      getToken: async () => {
        calls++;
        return server.token('alice');
      },
    });
    const connected = waitEvent(c, 'connected');
    c.connect();
    const ctx = await connected;
    assert.ok(ctx.client.length > 0);
    assert.equal(calls, 1);
    assert.ok(c.errors.some((e) => e.type === 'connect' && e.error.code === 109));
  });

  test('HTTP API: auth, result shape and x-rotor-shard header', async () => {
    const ok = await server.api('publish', { channel: 'nobody-listens', data: { a: 1 } });
    assert.equal(ok.status, 200);
    assert.deepStrictEqual(ok.body, { result: {} });
    assert.match(ok.headers.get('x-rotor-shard') ?? '', /^[0-2]$/);

    const unknown = await server.api('publish', { channel: 'unknown:chan', data: { a: 1 } });
    assert.equal(unknown.status, 200);
    assert.equal(unknown.body?.error?.code, 102);

    const res = await fetch(`${server.httpUrl}/api/publish`, {
      method: 'POST',
      headers: { 'X-API-Key': 'wrong-key' },
      body: JSON.stringify({ channel: 'news', data: {} }),
      signal: AbortSignal.timeout(WAIT_MS),
    });
    assert.equal(res.status, 401);
  });

  test('round_robin placement spreads new connections over the 3 shards', async () => {
    // A fresh TCP connection per request (agent: false), so each one is placed anew.
    const shardOf = () =>
      withTimeout(
        new Promise((resolve, reject) => {
          const req = http.request(
            `${server.httpUrl}/api/publish`,
            { method: 'POST', agent: false, headers: { 'X-API-Key': server.apiKey } },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.headers['x-rotor-shard']));
            },
          );
          req.on('error', reject);
          req.end(JSON.stringify({ channel: 'nobody-listens', data: {} }));
        }),
        'HTTP response',
      );
    const shards = [];
    for (let i = 0; i < 3; i++) shards.push(await shardOf());
    assert.deepStrictEqual([...shards].sort(), ['0', '1', '2']);
  });

  test('recovery after a forced transport drop: exactly the missed publications, recovered', async () => {
    // The reconnect waits at least 1.5 s, leaving time to publish while the client is away.
    const c = newClient(server, { minReconnectDelay: 1500, maxReconnectDelay: 1500 });
    const connected = waitEvent(c, 'connected');
    c.connect();
    await connected;
    const sub = newSub(c, 'room:recover');
    const got = [];
    sub.on('publication', (ctx) => got.push(ctx.data.n));
    const first = waitEvent(sub, 'subscribed');
    sub.subscribe();
    const firstCtx = await first;
    assert.equal(firstCtx.recoverable, true, 'force_recovery makes the subscription recoverable');
    assert.equal(firstCtx.wasRecovering, false);
    for (const n of [1, 2]) await server.publish('room:recover', { n });
    await waitUntil(() => got.length === 2, 'the first two publications');

    const again = waitEvent(sub, 'subscribed');
    const away = waitEvent(c, 'connecting');
    // A transport drop: the socket dies without a close frame.
    c._transport._transport.terminate();
    await away;
    for (const n of [3, 4, 5]) await server.publish('room:recover', { n });
    const ctx = await again;
    assert.equal(ctx.wasRecovering, true);
    assert.equal(ctx.recovered, true);
    await waitUntil(() => got.length === 5, 'the missed publications');
    await sleep(200);
    assert.deepStrictEqual(got, [1, 2, 3, 4, 5], 'each publication once, in order');
  });

  test('presence, presence stats and join/leave between clients on different shards', async () => {
    const a = await connectedClient(server, 'alice');
    const b = await connectedClient(server, 'bob');
    const subA = newSub(a, 'room:people', { joinLeave: true });
    const joins = [];
    const leaves = [];
    subA.on('join', (ctx) => joins.push(ctx.info));
    subA.on('leave', (ctx) => leaves.push(ctx.info));
    const okA = waitEvent(subA, 'subscribed');
    subA.subscribe();
    await okA;
    await subscribed(b, 'room:people');
    await waitUntil(() => joins.some((i) => i.user === 'bob'), "bob's join");
    assert.equal(joins.find((i) => i.user === 'bob').client, b.clientId);

    const presence = await subA.presence();
    assert.deepStrictEqual(Object.keys(presence.clients).sort(), [a.clientId, b.clientId].sort());
    assert.equal(presence.clients[b.clientId].user, 'bob');
    const stats = await subA.presenceStats();
    assert.deepStrictEqual({ ...stats }, { numClients: 2, numUsers: 2 });

    b.disconnect();
    await waitUntil(() => leaves.some((i) => i.user === 'bob'), "bob's leave");
    const after = await subA.presenceStats();
    assert.equal(after.numClients, 1);
  });

  test('history through the SDK: newest first with a limit', async () => {
    const c = await connectedClient(server);
    const sub = await subscribed(c, 'room:history');
    for (const n of [1, 2, 3]) await server.publish('room:history', { n });
    const page = await sub.history({ limit: 2, reverse: true });
    assert.deepStrictEqual(page.publications.map((p) => p.data.n), [3, 2]);
    assert.equal(page.offset, 3);
    assert.equal(typeof page.epoch, 'string');
  });

  test('rpc without an RPC handler configured is rejected with 108', async () => {
    const c = await connectedClient(server);
    await assert.rejects(c.rpc('anything', {}), (err) => err.code === 108);
  });

  test('a subscription token from getToken is refreshed before it expires', async () => {
    const c = await connectedClient(server, 'alice');
    let fetched = 0;
    // `$` channels accept only a subscription token; this one lives 3 s, so the SDK must
    // refresh it (sub_refresh) to stay subscribed.
    const sub = newSub(c, '$vault', {
      getToken: async () => {
        fetched += 1;
        return server.token('alice', { channel: '$vault', exp: nowSec() + 3 });
      },
    });
    const got = [];
    sub.on('publication', (ctx) => got.push(ctx.data));
    const ok = waitEvent(sub, 'subscribed');
    sub.subscribe();
    await ok;
    await waitUntil(() => fetched >= 2, 'a token refresh', 8000);
    await sleep(1500);
    assert.equal(sub.state, 'subscribed', 'still subscribed after the first token expired');
    await server.publish('$vault', { after: 'refresh' });
    await waitUntil(() => got.length === 1, 'the publication after the refresh');
    assert.deepStrictEqual(got, [{ after: 'refresh' }]);
  });

  test('server-side subscriptions added and removed through the API', async () => {
    const c = await connectedClient(server, 'serverside');
    const subscribedTo = [];
    const unsubscribedFrom = [];
    const pubs = [];
    c.on('subscribed', (ctx) => subscribedTo.push(ctx.channel));
    c.on('unsubscribed', (ctx) => unsubscribedFrom.push(ctx.channel));
    c.on('publication', (ctx) => pubs.push([ctx.channel, ctx.data]));
    const r = await server.api('subscribe', { user: 'serverside', channel: 'chat:pushed' });
    assert.deepStrictEqual(r.body, { result: {} });
    await waitUntil(() => subscribedTo.includes('chat:pushed'), 'the subscribe push');
    await server.publish('chat:pushed', { n: 1 });
    await waitUntil(() => pubs.length === 1, 'a publication on the server-side subscription');
    assert.deepStrictEqual(pubs, [['chat:pushed', { n: 1 }]]);
    await server.api('unsubscribe', { user: 'serverside', channel: 'chat:pushed' });
    await waitUntil(() => unsubscribedFrom.includes('chat:pushed'), 'the unsubscribe push');
    await server.publish('chat:pushed', { n: 2 });
    await sleep(200);
    assert.equal(pubs.length, 1, 'nothing after the server unsubscribed');
  });

  test('protobuf SDK build: connect, subscribe, publish, history and recovery', async () => {
    const c = new CentrifugeProtobuf(server.wsUrl, {
      websocket: WebSocket,
      token: server.token('proto'),
      minReconnectDelay: 1500,
      maxReconnectDelay: 1500,
    });
    c.on('error', () => {});
    clients.push(c);
    const connected = waitEvent(c, 'connected');
    c.connect();
    const ctx = await connected;
    assert.equal(ctx.transport, 'websocket');
    const sub = c.newSubscription('room:proto');
    sub.on('error', () => {});
    const got = [];
    // The protobuf build hands payloads over as bytes; these are JSON texts.
    sub.on('publication', (p) => got.push(JSON.parse(new TextDecoder().decode(p.data)).n));
    const first = waitEvent(sub, 'subscribed');
    sub.subscribe();
    assert.equal((await first).recoverable, true);
    await server.publish('room:proto', { n: 1 });
    await waitUntil(() => got.length === 1, 'a publication over protobuf');

    // A client publish from the protobuf SDK (bytes) reaches it back.
    await sub.publish(new TextEncoder().encode(JSON.stringify({ n: 2 })));
    await waitUntil(() => got.length === 2, 'its own publication');
    const page = await sub.history({ limit: 10 });
    assert.deepStrictEqual(page.publications.map((p) => p.offset), [1, 2]);

    // Recovery over protobuf after a transport drop.
    const again = waitEvent(sub, 'subscribed');
    const away = waitEvent(c, 'connecting');
    c._transport._transport.terminate();
    await away;
    await server.publish('room:proto', { n: 3 });
    const rctx = await again;
    assert.equal(rctx.recovered, true);
    await waitUntil(() => got.length === 3, 'the missed publication');
    assert.deepStrictEqual(got, [1, 2, 3]);
  });

  test('delta subscription: the SDK rebuilds a long series of small changes to a large object', async () => {
    const c = await connectedClient(server, 'delta-user');
    const sub = newSub(c, 'delta:doc', { delta: 'fossil' });
    const got = [];
    sub.on('publication', (p) => got.push(p.data));
    const ok = waitEvent(sub, 'subscribed');
    sub.subscribe();
    await ok;
    // A 60-field document where each step changes one field and a counter.
    const doc = { step: 0, fields: {} };
    for (let i = 0; i < 60; i++) doc.fields[`f${i}`] = `value ${i} – ünïcödé`;
    const sent = [];
    for (let step = 0; step < 100; step++) {
      doc.step = step;
      doc.fields[`f${step % 60}`] = `changed at ${step}`;
      sent.push(structuredClone(doc));
      await server.publish('delta:doc', doc);
    }
    await waitUntil(() => got.length === sent.length, 'every publication');
    assert.deepStrictEqual(got, sent);
    const stats = sub.deltaStats();
    assert.equal(stats.numFullPayloads, 1, 'only the first payload is full');
    assert.equal(stats.numDeltaPayloads, 99);
    assert.ok(stats.compressionRatio > 0.8, `patches are small: ${JSON.stringify(stats)}`);

    // Recovery after a transport drop brings missed ones back as a chain the SDK decodes.
    const again = waitEvent(sub, 'subscribed');
    const away = waitEvent(c, 'connecting');
    c._transport._transport.terminate();
    await away;
    for (let step = 100; step < 105; step++) {
      doc.step = step;
      sent.push(structuredClone(doc));
      await server.publish('delta:doc', doc);
    }
    assert.equal((await again).recovered, true);
    doc.step = 105;
    sent.push(structuredClone(doc));
    await server.publish('delta:doc', doc);
    await waitUntil(() => got.length === sent.length, 'recovered and live publications');
    assert.deepStrictEqual(got, sent);
  });

  test('the server survived the suite', () => {
    assert.equal(server.exitInfo, null, `rotor exited early:\n${server.logs()}`);
  });
});

describe('emulated transports', () => {
  // WebSocket is switched off, so the SDK's transport list falls back to the emulation
  // transports, whose commands travel through /emulation.
  let server;
  const start = async () =>
    (server ??= await startRotor({
      extra: { websocket: { disabled: true }, http_stream: { enabled: true }, sse: { enabled: true } },
    }));
  after(async () => {
    if (server) await server.stop();
  });

  const cases = [
    ['http_stream', Centrifuge, 'JSON'],
    ['sse', Centrifuge, 'JSON'],
    ['http_stream', CentrifugeProtobuf, 'protobuf'],
  ];
  for (const [transport, Sdk, build] of cases) {
    test(`the ${build} SDK falls back from websocket to ${transport}: connect, subscribe, publish, rpc errors`, async () => {
      await start();
      const binary = build === 'protobuf';
      const encode = (v) => (binary ? new TextEncoder().encode(JSON.stringify(v)) : v);
      const decode = (d) => (binary ? JSON.parse(new TextDecoder().decode(d)) : d);
      const c = new Sdk(
        [
          { transport: 'websocket', endpoint: server.wsUrl },
          { transport, endpoint: `${server.httpUrl}/connection/${transport}` },
        ],
        {
          websocket: WebSocket,
          eventsource: EventSource,
          emulationEndpoint: `${server.httpUrl}/emulation`,
          token: server.token(`fallback-${transport}-${build}`),
          minReconnectDelay: 100,
          maxReconnectDelay: 200,
        },
      );
      c.on('error', () => {});
      clients.push(c);
      const connected = waitEvent(c, 'connected');
      c.connect();
      const ctx = await connected;
      assert.equal(ctx.transport, transport);

      const sub = c.newSubscription(`chat:${transport}-${build}`);
      sub.on('error', () => {});
      const got = [];
      sub.on('publication', (p) => got.push(decode(p.data)));
      const ok = waitEvent(sub, 'subscribed');
      sub.subscribe();
      await ok;
      await server.publish(`chat:${transport}-${build}`, { from: 'api' });
      await sub.publish(encode({ from: 'client' }));
      await waitUntil(() => got.length === 2, `two publications over ${transport}`);
      assert.deepStrictEqual(got, [{ from: 'api' }, { from: 'client' }]);

      // A command error arrives as the command's reply, through the stream.
      await assert.rejects(c.rpc('nope', {}), (e) => e.code === 108);

      const gone = waitEvent(c, 'disconnected');
      const r = await server.api('disconnect', { user: `fallback-${transport}-${build}` });
      assert.equal(r.status, 200);
      const d = await gone;
      assert.equal(d.code, 3503);
    });
  }
});

describe('fossil deltas', () => {
  test("rotor's deltas decode with the SDK's own fossil decoder", async () => {
    // The SDK bundles its decoder without exporting it; take the pinned bundle's own code.
    const bundle = await readFile(new URL('./node_modules/centrifuge/build/index.mjs', import.meta.url), 'utf8');
    const start = bundle.indexOf('const zValue = [');
    const fn = bundle.indexOf('function applyDelta(');
    const end = bundle.indexOf('\n}\n', fn);
    assert.ok(start >= 0 && fn > start && end > fn, 'decoder found in the SDK bundle');
    const mod = { exports: null };
    new Function('module', `${bundle.slice(start, end + 3)}\nmodule.exports = applyDelta;`)(mod);
    const applyDelta = mod.exports;
    const cases = JSON.parse(await readFile(new URL('./fossil-fixtures.json', import.meta.url), 'utf8'));
    for (const c of cases) {
      const out = applyDelta(new Uint8Array(c.a), new Uint8Array(c.d));
      assert.deepStrictEqual(Array.from(out), c.b);
    }
  });
});

describe('rotor shutdown', () => {
  test('SIGTERM closes clients with 3001 shutdown and exits 0', async () => {
    const server = await startRotor();
    let stopped = false;
    try {
      const c = await connectedClient(server);
      await subscribed(c, 'news');
      const raw = await newRaw(server);
      raw.send({ id: 1, connect: { token: server.token('bob') } });
      assert.equal((await raw.reply(1)).error, undefined);

      // The SDK treats 3001 as reconnectable: it moves to 'connecting' with the
      // server's code and reason.
      const reconnecting = waitEvent(c, 'connecting', (ctx) => ctx.code !== 0);
      const stopping = server.stop();
      stopped = true;
      const ctx = await reconnecting;
      assert.equal(ctx.code, 3001);
      assert.equal(ctx.reason, 'shutdown');
      assert.deepStrictEqual(await raw.waitClosed(), { code: 3001, reason: 'shutdown' });

      const info = await stopping;
      assert.equal(info.forced, undefined, 'rotor ignored SIGTERM and had to be killed');
      assert.equal(info.code, 0, `rotor exit: ${JSON.stringify(info)}\n${server.logs()}`);
      c.disconnect();
    } finally {
      if (!stopped) await server.stop();
    }
  });
});
