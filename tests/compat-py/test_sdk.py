"""The official centrifuge-python SDK against rotor: what an application using the SDK
sees (events, results, exceptions). Publications come from the server API through `cent`
unless a test is about client publishing.

Each test uses its own user ids and channel names: one rotor serves the whole run.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cent import PublishRequest
from centrifuge import ClientState, ReplyError, StreamPosition, SubscriptionState

from harness import WAIT_S, ClientEvents, Pool, Recorder, async_test, call_api


def uniq(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def api_publish(server, channel: str, data) -> object:
    return await call_api(server.api.publish, PublishRequest(channel=channel, data=data))


# -- connection -------------------------------------------------------------------------------


@async_test
async def test_connect_with_token(server):
    async with Pool(server) as pool:
        client = await pool.connect(uniq("alice"))
        assert client.state == ClientState.CONNECTED
        (ctx,) = await client.rec.wait("connected")
        assert isinstance(ctx.client, str) and ctx.client != ""
        assert ctx.client == client.client_id
        other = await pool.connect(uniq("bob"))
        assert other.client_id != client.client_id, "two connections got the same client id"


@async_test
async def test_expired_connection_token_is_replaced_through_get_token(server):
    user = uniq("exp")
    calls = []

    async def get_token() -> str:
        calls.append(user)
        return server.token(user)

    async with Pool(server) as pool:
        # The first token expired ten seconds ago: the server answers 109, the SDK asks
        # get_token for a new one and connects with it.
        client = pool.new_client(user, token=server.token(user, ttl=-10), get_token=get_token)
        await asyncio.wait_for(client.connect(), WAIT_S)
        await client.ready(timeout=WAIT_S)
        assert client.state == ClientState.CONNECTED
        assert calls == [user]


@async_test
async def test_connection_token_refresh_through_get_token(server):
    user = uniq("refresh")
    calls = []

    async def get_token() -> str:
        calls.append(len(calls))
        # Two seconds of validity: the SDK refreshes when the server's ttl runs out.
        return server.token(user, ttl=2)

    async with Pool(server) as pool:
        client = pool.new_client(user, get_token=get_token)
        await asyncio.wait_for(client.connect(), WAIT_S)
        await client.ready(timeout=WAIT_S)
        # One call to connect, then one per refresh: a third call means the server
        # accepted the first refresh and answered it with a new ttl.
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while len(calls) < 3:
            assert asyncio.get_running_loop().time() < deadline, f"only {len(calls)} get_token calls"
            await asyncio.sleep(0.05)
        assert client.state == ClientState.CONNECTED
        assert len(client.rec.of("connected")) == 1, client.rec.kinds()
        assert client.rec.of("disconnected") == []


# -- subscriptions and publications -----------------------------------------------------------


PAYLOADS = [
    {"text": "hello"},
    {
        "nested": {"deeper": {"list": [1, 2, {"three": [True, False, None]}], "empty": {}}},
        "unicode": "Grüße, 世界, привет, עברית",
        "emoji": "🚀👍🏽",
        "escapes": 'quote " backslash \\ newline \n tab \t ctl \u0001',
        "big": 12345678901234567890123,
        "negative": -42,
        "fraction": 0.125,
    },
    ["an", "array", 3],
    "a bare string",
    7,
]


@async_test
async def test_subscribe_and_receive_api_publications(server):
    channel = uniq("news")
    async with Pool(server) as pool:
        client = await pool.connect(uniq("reader"))
        sub = await pool.subscribed(client, channel)
        assert sub.state == SubscriptionState.SUBSCRIBED
        (ctx,) = sub.rec.of("subscribed")
        assert ctx.channel == channel
        for data in PAYLOADS:
            await api_publish(server, channel, data)
        got = await sub.rec.wait("publication", count=len(PAYLOADS))
        assert [p.pub.data for p in got] == PAYLOADS
        await asyncio.sleep(0.1)
        assert len(sub.rec.of("publication")) == len(PAYLOADS), "extra publications arrived"


@async_test
async def test_client_publish_reaches_subscribers_with_publisher_info(server):
    channel = uniq("chat:room")
    writer_user, reader_user = uniq("writer"), uniq("reader")
    async with Pool(server) as pool:
        writer = await pool.connect(writer_user)
        reader = await pool.connect(reader_user)
        writer_sub = await pool.subscribed(writer, channel)
        reader_sub = await pool.subscribed(reader, channel)
        await writer_sub.publish({"text": "hi from python"})
        for sub in (reader_sub, writer_sub):
            (ctx,) = await sub.rec.wait("publication")
            assert ctx.pub.data == {"text": "hi from python"}
            assert ctx.pub.info is not None
            assert ctx.pub.info.user == writer_user
            assert ctx.pub.info.client == writer.client_id


@async_test
async def test_client_publish_denied_in_read_only_namespace(server):
    channel = uniq("ro:board")
    async with Pool(server) as pool:
        client = await pool.connect(uniq("ro"))
        sub = await pool.subscribed(client, channel)
        with pytest.raises(ReplyError) as err:
            await sub.publish({"text": "nope"})
        assert err.value.code == 103
        # A command error, not a connection problem.
        assert client.state == ClientState.CONNECTED


@async_test
async def test_token_channels_are_server_side_subscriptions(server):
    user, channel = uniq("tokch"), uniq("personal")
    async with Pool(server) as pool:
        client = await pool.connect(user, token=server.token(user, channels=[channel]))
        (ctx,) = await client.rec.wait("subscribed", lambda c: c.channel == channel)
        assert ctx.channel == channel
        await api_publish(server, channel, {"for": user})
        (pub,) = await client.rec.wait("publication", lambda c: c.channel == channel)
        assert pub.pub.data == {"for": user}


# -- subscription tokens -----------------------------------------------------------------------


@async_test
async def test_subscription_token_from_get_token(server):
    user, channel = uniq("tok"), uniq("tok:room")
    async with Pool(server) as pool:
        client = await pool.connect(user)
        # Without a token the namespace refuses: the SDK reports unsubscribed with 103.
        bare = pool.new_sub(client, channel)
        await bare.subscribe()
        (ctx,) = await bare.rec.wait("unsubscribed")
        assert ctx.code == 103
        client.remove_subscription(bare)

        calls = []

        async def get_token(ch: str) -> str:
            calls.append(ch)
            return server.sub_token(user, ch)

        sub = await pool.subscribed(client, channel, get_token=get_token)
        assert calls == [channel]
        await api_publish(server, channel, {"secret": 1})
        (pub,) = await sub.rec.wait("publication")
        assert pub.pub.data == {"secret": 1}


@async_test
async def test_subscription_token_refresh(server):
    user, channel = uniq("subref"), uniq("tok:refresh")
    calls = []

    async def get_token(ch: str) -> str:
        calls.append(ch)
        return server.sub_token(user, ch, ttl=2)

    async with Pool(server) as pool:
        client = await pool.connect(user)
        sub = await pool.subscribed(client, channel, get_token=get_token)
        # Subscribe, then one call per refresh (the subscribe reply carries expires/ttl
        # from the token's exp): a third call means the first sub_refresh was accepted
        # and answered with a new ttl. Two refreshes of a 2 s token take about 4 s.
        deadline = asyncio.get_running_loop().time() + 8
        while len(calls) < 3:
            assert sub.state == SubscriptionState.SUBSCRIBED, sub.rec.items
            assert asyncio.get_running_loop().time() < deadline, f"only {len(calls)} get_token calls"
            await asyncio.sleep(0.05)
        assert sub.state == SubscriptionState.SUBSCRIBED
        assert sub.rec.of("unsubscribed") == []
        await api_publish(server, channel, {"still": "here"})
        (pub,) = await sub.rec.wait("publication")
        assert pub.pub.data == {"still": "here"}


# -- history, presence, join/leave ---------------------------------------------------------------


@async_test
async def test_history(server):
    channel = uniq("hist:sdk")
    async with Pool(server) as pool:
        client = await pool.connect(uniq("hist"))
        sub = await pool.subscribed(client, channel)
        results = [await api_publish(server, channel, {"n": i}) for i in range(3)]
        epoch = results[0].epoch
        await sub.rec.wait("publication", count=3)

        history = await sub.history(limit=10)
        assert [p.offset for p in history.publications] == [1, 2, 3]
        assert [p.data for p in history.publications] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert (history.offset, history.epoch) == (3, epoch)

        newest = await sub.history(limit=2, reverse=True)
        assert [p.offset for p in newest.publications] == [3, 2]
        after = await sub.history(limit=10, since=StreamPosition(offset=1, epoch=epoch))
        assert [p.offset for p in after.publications] == [2, 3]

        with pytest.raises(ReplyError) as err:
            await sub.history(limit=10, since=StreamPosition(offset=1, epoch="other"))
        assert err.value.code == 112


@async_test
async def test_presence_and_presence_stats(server):
    channel = uniq("pres:sdk")
    alice, bob = uniq("alice"), uniq("bob")
    async with Pool(server) as pool:
        a = await pool.connect(alice)
        b = await pool.connect(bob)
        sub_a = await pool.subscribed(a, channel)
        await pool.subscribed(b, channel)
        presence = await sub_a.presence()
        assert set(presence.clients) == {a.client_id, b.client_id}
        assert presence.clients[a.client_id].user == alice
        assert presence.clients[b.client_id].user == bob
        assert presence.clients[b.client_id].client == b.client_id
        stats = await sub_a.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)

        # The server learns of the disconnect asynchronously: poll (bounded).
        await b.disconnect()
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            stats = await sub_a.presence_stats()
            if (stats.num_clients, stats.num_users) == (1, 1):
                break
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.05)

        # A namespace without presence: 108.
        chat = await pool.subscribed(a, uniq("chat:nopres"))
        with pytest.raises(ReplyError) as err:
            await chat.presence()
        assert err.value.code == 108


@async_test
async def test_join_and_leave_between_clients(server):
    channel = uniq("pres:jl")
    alice, bob, carol = uniq("alice"), uniq("bob"), uniq("carol")
    async with Pool(server) as pool:
        a = await pool.connect(alice)
        watch = await pool.subscribed(a, channel, join_leave=True)
        # The subscriber's own join comes first.
        (own,) = await watch.rec.wait("join")
        assert (own.info.user, own.info.client) == (alice, a.client_id)

        b = await pool.connect(bob)
        b_sub = await pool.subscribed(b, channel)
        (joined,) = await watch.rec.wait("join", lambda c: c.info.user == bob)
        assert joined.info.client == b.client_id

        c = await pool.connect(carol)
        await pool.subscribed(c, channel)
        await watch.rec.wait("join", lambda ctx: ctx.info.user == carol)

        # Unsubscribing and disconnecting both produce a leave.
        await b_sub.unsubscribe()
        (left,) = await watch.rec.wait("leave", lambda ctx: ctx.info.user == bob)
        assert left.info.client == b.client_id
        await c.disconnect()
        (gone,) = await watch.rec.wait("leave", lambda ctx: ctx.info.user == carol)
        assert gone.info.client == c.client_id


# -- RPC ---------------------------------------------------------------------------------------------


@async_test
async def test_rpc_without_any_handler_is_108(server):
    # No RPC proxy and no extension configured: the connection has no RPC handler, and
    # Centrifugo answers 108 "not available" (spec §2.11, §5.4).
    async with Pool(server) as pool:
        client = await pool.connect(uniq("rpc"))
        with pytest.raises(ReplyError) as err:
            await client.rpc("compute", {"x": 1})
        assert err.value.code == 108
        assert client.state == ClientState.CONNECTED


@async_test
async def test_rpc_unknown_method_is_104(rpc_server):
    # With an RPC handler in place (the built-in ping extension), a method nothing
    # answers is 104 "method not found"; ping itself answers an empty result.
    async with Pool(rpc_server) as pool:
        client = await pool.connect(uniq("rpc"))
        with pytest.raises(ReplyError) as err:
            await client.rpc("compute", {"x": 1})
        assert err.value.code == 104
        result = await client.rpc("ping", {})
        assert result.data is None


# -- recovery ------------------------------------------------------------------------------------------


class GatedEvents(ClientEvents):
    """Holds the SDK in its on_connecting handler after a lost connection until `gate`
    opens: the SDK schedules the reconnect only after that handler returns, so whatever
    the test publishes meanwhile is published while the client is certainly offline."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__(rec)
        self.gate = asyncio.Event()

    async def on_connecting(self, ctx):
        self.rec.push("connecting", ctx)
        if ctx.code != 0:  # 0 is connect() itself; anything else is a lost connection
            await asyncio.wait_for(self.gate.wait(), WAIT_S)


async def gated_client(pool: Pool, user: str):
    """A connected client whose reconnects wait for `client.handler.gate`."""
    made: list = []

    def make(rec: Recorder) -> GatedEvents:
        made.append(GatedEvents(rec))
        return made[0]

    client = pool.new_client(user, events=make)
    client.handler = made[0]
    await asyncio.wait_for(client.connect(), WAIT_S)
    await client.ready(timeout=WAIT_S)
    return client


async def drop_transport(client) -> None:
    """Aborts the TCP connection under the SDK (no close handshake), as a lost network
    would, and waits until the SDK noticed (it goes to connecting)."""
    client._conn.transport.abort()
    await client.rec.wait("connecting", lambda c: c.code != 0)
    assert client.state == ClientState.CONNECTING


@async_test
async def test_resubscribe_after_the_transport_drops(server):
    # Without history there is nothing to recover: the SDK reconnects, subscribes again
    # and live publications flow; what was published meanwhile is not replayed.
    channel = uniq("live")
    async with Pool(server) as pool:
        client = await gated_client(pool, uniq("drop"))
        sub = await pool.subscribed(client, channel)
        await api_publish(server, channel, {"n": 0})
        await sub.rec.wait("publication")

        await drop_transport(client)
        await api_publish(server, channel, {"n": 1})
        client.handler.gate.set()

        await client.rec.wait("connected", count=2)
        (_, again) = await sub.rec.wait("subscribed", count=2)
        assert not again.recoverable and not again.was_recovering and not again.recovered
        await api_publish(server, channel, {"n": 2})
        pubs = await sub.rec.wait("publication", count=2)
        assert [p.pub.data for p in pubs] == [{"n": 0}, {"n": 2}]


@async_test
async def test_recovery_after_the_transport_drops(server):
    channel = uniq("hist:rec")
    async with Pool(server) as pool:
        client = await gated_client(pool, uniq("rec"))
        sub = await pool.subscribed(client, channel)
        (first,) = sub.rec.of("subscribed")
        assert first.recoverable, "namespace has force_recovery"
        assert first.stream_position is not None and first.stream_position.epoch != ""

        for i in range(2):
            await api_publish(server, channel, {"n": i})
        await sub.rec.wait("publication", count=2)

        await drop_transport(client)
        for i in range(2, 5):
            await api_publish(server, channel, {"n": i})
        client.handler.gate.set()

        await client.rec.wait("connected", count=2)
        (_, again) = await sub.rec.wait("subscribed", count=2)
        assert again.was_recovering and again.recovered
        pubs = await sub.rec.wait("publication", count=5)
        assert [p.pub.offset for p in pubs] == [1, 2, 3, 4, 5]
        assert [p.pub.data for p in pubs] == [{"n": i} for i in range(5)]

        # Live delivery goes on from there, without duplicates.
        await api_publish(server, channel, {"n": 5})
        pubs = await sub.rec.wait("publication", count=6)
        assert pubs[5].pub.offset == 6
        await asyncio.sleep(0.1)
        assert len(sub.rec.of("publication")) == 6
