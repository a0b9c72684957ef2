// WebSocket permessage-deflate (`websocket.compression`) with Node's `ws`, which offers the
// extension by default, and with the official SDK over it: the extension is negotiated, a
// large compressible publication arrives intact in far fewer bytes than it has, and a large
// message the client compresses (ws compresses messages over 1 KiB) is inflated and handled.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { RawClient, startRotor, waitEvent } from './harness.mjs';

describe('permessage-deflate', () => {
  let server;
  before(async () => {
    server = await startRotor({ extra: { websocket: { compression: true } } });
  });
  after(async () => {
    await server?.stop();
  });

  test('a ws client gets the extension and a large publication in few bytes', async () => {
    const raw = new RawClient(server.wsUrl);
    await raw.open();
    try {
      assert.match(raw.ws.extensions, /permessage-deflate/);
      raw.send({ id: 1, connect: { token: server.token('zip') } });
      await raw.reply(1);
      raw.send({ id: 2, subscribe: { channel: 'big' } });
      await raw.reply(2);
      const rows = Array.from({ length: 60 }, (_, i) => ({ id: i, name: `user-${i}`, online: i % 2 === 0 }));
      const payload = { rows };
      const size = JSON.stringify(payload).length;
      assert.ok(size > 2000, `payload is ${size} bytes`);
      const before = raw.ws._socket.bytesRead;
      const got = raw.next((m) => m.push?.pub, 'publication');
      await server.publish('big', payload);
      const push = await got;
      assert.deepEqual(push.push.pub.data, payload);
      const wire = raw.ws._socket.bytesRead - before;
      assert.ok(wire < size / 3, `${wire} bytes on the wire for a ${size}-byte publication`);
    } finally {
      await raw.terminate();
    }
  });

  test('the SDK publishes a large message compressed and a subscriber receives it', async () => {
    const make = (user) => {
      const c = new Centrifuge(server.wsUrl, { websocket: WebSocket, token: server.token(user) });
      c.on('error', () => {});
      return c;
    };
    const [alice, bob] = [make('alice'), make('bob')];
    try {
      for (const c of [alice, bob]) {
        const connected = waitEvent(c, 'connected');
        c.connect();
        await connected;
      }
      const subs = [alice, bob].map((c) => c.newSubscription('chat:zip'));
      for (const s of subs) {
        s.on('error', () => {});
        const ok = waitEvent(s, 'subscribed');
        s.subscribe();
        await ok;
      }
      const text = 'compress me '.repeat(500);
      const received = waitEvent(subs[1], 'publication');
      await subs[0].publish({ text });
      assert.equal((await received).data.text, text);
    } finally {
      alice.disconnect();
      bob.disconnect();
    }
  });
});
