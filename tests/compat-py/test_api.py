"""The server API through the official `cent` 5.x client: every method, as a user of that
library sees it (results, exceptions), and what connected SDK clients observe.

Each test uses its own user ids and channel names: one rotor serves the whole run.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from cent import (
    BatchRequest,
    BroadcastRequest,
    CentApiResponseError,
    CentUnauthorizedError,
    ChannelsRequest,
    Disconnect,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PresenceStatsResult,
    PublishRequest,
    PublishResult,
    HistoryResult,
    RefreshRequest,
    StreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from centrifuge import ClientState, SubscriptionState

from harness import Pool, async_test, call_api


def uniq(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def publish_n(server, channel: str, n: int) -> list:
    return [server.api.publish(PublishRequest(channel=channel, data={"n": i})) for i in range(n)]


# -- publish / broadcast -------------------------------------------------------------------


def test_publish_without_history_returns_empty_result(server):
    result = server.api.publish(PublishRequest(channel=uniq("plain"), data={"text": "hi"}))
    assert isinstance(result, PublishResult)
    # The server sent `{"result":{}}`: neither offset nor epoch was in the reply.
    assert result.model_fields_set == set(), result
    assert (result.offset, result.epoch) == (0, "")


def test_publish_with_history_returns_offset_and_epoch(server):
    channel = uniq("hist:pub")
    first, second = publish_n(server, channel, 2)
    assert first.offset == 1
    assert second.offset == 2
    assert first.epoch != ""
    assert second.epoch == first.epoch


@async_test
async def test_broadcast_reaches_every_channel_in_order(server):
    a, b = uniq("bc_a"), uniq("bc_b")
    async with Pool(server) as pool:
        client = await pool.connect(uniq("bc"))
        sub_a = await pool.subscribed(client, a)
        sub_b = await pool.subscribed(client, b)
        result = await call_api(
            server.api.broadcast, BroadcastRequest(channels=[a, b, "nope:x"], data={"all": True})
        )
        assert len(result.responses) == 3
        assert result.responses[0].error is None and result.responses[1].error is None
        # Each channel is answered on its own: the unknown namespace fails alone.
        assert result.responses[2].error is not None
        assert result.responses[2].error.code == 102
        for sub in (sub_a, sub_b):
            (pub,) = await sub.rec.wait("publication")
            assert pub.pub.data == {"all": True}


def test_broadcast_with_history_returns_positions(server):
    a, b = uniq("hist:bca"), uniq("hist:bcb")
    result = server.api.broadcast(BroadcastRequest(channels=[a, b], data={"x": 1}))
    assert [r.error for r in result.responses] == [None, None]
    for response in result.responses:
        assert response.result.offset == 1
        assert response.result.epoch != ""


# -- subscribe / unsubscribe / disconnect / refresh -------------------------------------------


@async_test
async def test_subscribe_adds_server_side_subscription(server):
    user, channel = uniq("srv"), uniq("srvsub")
    async with Pool(server) as pool:
        client = await pool.connect(user)
        await call_api(
            server.api.subscribe,
            SubscribeRequest(user=user, channel=channel, data={"welcome": user}),
        )
        (ctx,) = await client.rec.wait("subscribed", lambda c: c.channel == channel)
        assert ctx.data == {"welcome": user}
        await call_api(server.api.publish, PublishRequest(channel=channel, data={"seq": 1}))
        (pub,) = await client.rec.wait("publication", lambda c: c.channel == channel)
        assert pub.pub.data == {"seq": 1}


@async_test
async def test_unsubscribe_ends_the_subscription(server):
    user, channel = uniq("unsub"), uniq("unsubch")
    async with Pool(server) as pool:
        client = await pool.connect(user)
        sub = await pool.subscribed(client, channel)
        await call_api(server.api.unsubscribe, UnsubscribeRequest(user=user, channel=channel))
        (ctx,) = await sub.rec.wait("unsubscribed")
        assert (ctx.code, ctx.reason) == (2000, "server unsubscribe")
        assert sub.state == SubscriptionState.UNSUBSCRIBED
        # Nothing more arrives on that channel.
        await call_api(server.api.publish, PublishRequest(channel=channel, data={"late": True}))
        await asyncio.sleep(0.3)
        assert sub.rec.of("publication") == []
        assert client.state == ClientState.CONNECTED


@async_test
async def test_disconnect_closes_the_users_connections_but_the_whitelisted(server):
    user = uniq("disc")
    async with Pool(server) as pool:
        gone = await pool.connect(user)
        kept = await pool.connect(user)
        await call_api(
            server.api.disconnect, DisconnectRequest(user=user, whitelist=[kept.client_id])
        )
        (ctx,) = await gone.rec.wait("disconnected")
        # Default code: 3503 force disconnect, terminal (no reconnect).
        assert (ctx.code, ctx.reason) == (3503, "force disconnect")
        assert gone.state == ClientState.DISCONNECTED
        await asyncio.sleep(0.3)
        assert kept.state == ClientState.CONNECTED
        assert kept.rec.of("disconnected") == [] and kept.rec.of("connecting")[1:] == []


@async_test
async def test_disconnect_with_reconnect_code_makes_the_client_reconnect(server):
    user = uniq("recon")
    async with Pool(server) as pool:
        client = await pool.connect(user)
        await call_api(
            server.api.disconnect,
            DisconnectRequest(user=user, disconnect=Disconnect(code=3011, reason="force reconnect")),
        )
        (ctx,) = await client.rec.wait("connecting", lambda c: c.code == 3011)
        assert ctx.reason == "force reconnect"
        await client.rec.wait("connected", count=2)
        assert client.state == ClientState.CONNECTED


@async_test
async def test_refresh_expired_closes_with_3005_and_client_reconnects(server):
    user = uniq("refr")
    async with Pool(server) as pool:
        client = await pool.connect(user)
        # A new expiry first: accepted, the connection stays.
        await call_api(
            server.api.refresh, RefreshRequest(user=user, expire_at=int(time.time()) + 600)
        )
        await asyncio.sleep(0.2)
        assert client.state == ClientState.CONNECTED
        # Then "expired": closed with 3005, which SDKs reconnect after (the token is valid).
        await call_api(server.api.refresh, RefreshRequest(user=user, expired=True))
        (ctx,) = await client.rec.wait("connecting", lambda c: c.code == 3005)
        assert ctx.reason == "connection expired"
        await client.rec.wait("connected", count=2)


# -- presence -----------------------------------------------------------------------------


@async_test
async def test_presence_and_presence_stats(server):
    channel = uniq("pres:api")
    alice, bob = uniq("alice"), uniq("bob")
    async with Pool(server) as pool:
        clients = [await pool.connect(alice), await pool.connect(alice), await pool.connect(bob)]
        for client in clients:
            await pool.subscribed(client, channel)
        presence = await call_api(server.api.presence, PresenceRequest(channel=channel))
        assert set(presence.presence) == {c.client_id for c in clients}
        users = {cid: info.user for cid, info in presence.presence.items()}
        assert users == {
            clients[0].client_id: alice,
            clients[1].client_id: alice,
            clients[2].client_id: bob,
        }
        for cid, info in presence.presence.items():
            assert info.client == cid
        stats = await call_api(server.api.presence_stats, PresenceStatsRequest(channel=channel))
        assert (stats.num_clients, stats.num_users) == (3, 2)

        # Leaving is seen too; the server learns of the disconnect asynchronously, so
        # poll (bounded).
        await clients[2].disconnect()
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            stats = await call_api(server.api.presence_stats, PresenceStatsRequest(channel=channel))
            if (stats.num_clients, stats.num_users) == (2, 1):
                break
            assert asyncio.get_running_loop().time() < deadline, stats
            await asyncio.sleep(0.05)

    # A namespace without presence answers 108.
    with pytest.raises(CentApiResponseError) as err:
        server.api.presence(PresenceRequest(channel=uniq("nopres")))
    assert err.value.code == 108


# -- history --------------------------------------------------------------------------------


def test_history_limit_since_reverse(server):
    channel = uniq("hist:q")
    epoch = publish_n(server, channel, 5)[0].epoch

    def offsets(result: HistoryResult) -> list:
        return [p.offset for p in result.publications]

    # No limit: only the stream position.
    top = server.api.history(HistoryRequest(channel=channel))
    assert (top.publications, top.offset, top.epoch) == ([], 5, epoch)

    assert offsets(server.api.history(HistoryRequest(channel=channel, limit=-1))) == [1, 2, 3, 4, 5]
    oldest = server.api.history(HistoryRequest(channel=channel, limit=2))
    assert offsets(oldest) == [1, 2]
    assert [p.data for p in oldest.publications] == [{"n": 0}, {"n": 1}]
    assert (oldest.offset, oldest.epoch) == (5, epoch)
    assert offsets(server.api.history(HistoryRequest(channel=channel, limit=2, reverse=True))) == [5, 4]

    since = StreamPosition(offset=2, epoch=epoch)
    assert offsets(server.api.history(HistoryRequest(channel=channel, limit=10, since=since))) == [3, 4, 5]
    back = StreamPosition(offset=4, epoch=epoch)
    assert offsets(
        server.api.history(HistoryRequest(channel=channel, limit=10, since=back, reverse=True))
    ) == [3, 2, 1]

    with pytest.raises(CentApiResponseError) as err:
        server.api.history(
            HistoryRequest(channel=channel, limit=10, since=StreamPosition(offset=1, epoch="other"))
        )
    assert err.value.code == 112

    with pytest.raises(CentApiResponseError) as err:
        server.api.history(HistoryRequest(channel=uniq("nohist"), limit=10))
    assert err.value.code == 108


def test_history_remove_keeps_the_stream_position(server):
    channel = uniq("hist:rm")
    epoch = publish_n(server, channel, 3)[0].epoch
    server.api.history_remove(HistoryRemoveRequest(channel=channel))
    after = server.api.history(HistoryRequest(channel=channel, limit=-1))
    assert (after.publications, after.offset, after.epoch) == ([], 3, epoch)
    # The stream goes on from there.
    assert server.api.publish(PublishRequest(channel=channel, data={"n": 3})).offset == 4


# -- channels / info --------------------------------------------------------------------------


@async_test
async def test_channels_with_and_without_pattern(server):
    prefix = uniq("chans")
    a, b, other = f"{prefix}_a", f"{prefix}_b", uniq("other")
    async with Pool(server) as pool:
        one = await pool.connect(uniq("ch"))
        two = await pool.connect(uniq("ch"))
        await pool.subscribed(one, a)
        await pool.subscribed(two, a)
        await pool.subscribed(two, b)
        await pool.subscribed(two, other)
        matched = await call_api(server.api.channels, ChannelsRequest(pattern=f"{prefix}_*"))
        assert set(matched.channels) == {a, b}
        assert matched.channels[a].num_clients == 2
        assert matched.channels[b].num_clients == 1
        everything = await call_api(server.api.channels, ChannelsRequest())
        assert {a, b, other} <= set(everything.channels)


@async_test
async def test_info_lists_this_node(server):
    async with Pool(server) as pool:
        await pool.connect(uniq("info"))
        await pool.connect(uniq("info"))
        info = await call_api(server.api.info, InfoRequest())
        assert len(info.nodes) == 1
        node = info.nodes[0]
        assert node.uid != "" and node.name != "" and node.version != ""
        assert node.num_clients >= 2
        assert node.num_users >= 2


# -- batch -------------------------------------------------------------------------------------


def test_batch_sequential_runs_in_order(server):
    channel = uniq("hist:batch")
    result = server.api.batch(
        BatchRequest(
            requests=[
                PublishRequest(channel=channel, data={"n": 0}),
                PublishRequest(channel=channel, data={"n": 1}),
                HistoryRequest(channel=channel, limit=10),
                PresenceStatsRequest(channel=uniq("pres:batch")),
            ],
            parallel=False,
        )
    )
    first, second, history, stats = result.replies
    assert (first.offset, second.offset) == (1, 2)
    assert [p.data for p in history.publications] == [{"n": 0}, {"n": 1}]
    assert isinstance(stats, PresenceStatsResult)
    assert (stats.num_clients, stats.num_users) == (0, 0)


def test_batch_parallel_replies_in_request_order(server):
    channels = [uniq("hist:par") for _ in range(4)]
    result = server.api.batch(
        BatchRequest(
            requests=[PublishRequest(channel=ch, data={"ch": ch}) for ch in channels]
            + [InfoRequest()],
            parallel=True,
        )
    )
    assert len(result.replies) == 5
    for reply in result.replies[:4]:
        assert isinstance(reply, PublishResult)
        assert reply.offset == 1
    assert len(result.replies[4].nodes) == 1
    for ch in channels:
        history = server.api.history(HistoryRequest(channel=ch, limit=10))
        assert [p.data for p in history.publications] == [{"ch": ch}]


# -- errors -------------------------------------------------------------------------------------


def test_unknown_namespace_raises_102(server):
    with pytest.raises(CentApiResponseError) as err:
        server.api.publish(PublishRequest(channel="nope:room", data={"x": 1}))
    assert err.value.code == 102
    assert err.value.message == "unknown channel"


def test_wrong_api_key_raises_unauthorized(server):
    api = server.api_with_key("not-the-key")
    with pytest.raises(CentUnauthorizedError):
        api.publish(PublishRequest(channel="plain", data={"x": 1}))
