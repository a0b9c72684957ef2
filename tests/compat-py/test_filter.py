"""Publication filtering by tags with centrifuge-python: a subscription's `tags_filter` (sent
as `tf`) lets through only the publications whose tags pass, live and on recovery after the
transport drops; a namespace without `allow_tags_filter` refuses it (107)."""

from __future__ import annotations

import uuid

import pytest
from cent import PublishRequest
from centrifuge import Filter

from conftest import _start, _stop
from harness import Pool, async_test, call_api
from test_sdk import drop_transport, gated_client


@pytest.fixture(scope="module")
def filter_server():
    tf = {
        "name": "tf",
        "allow_subscribe_for_client": True,
        "allow_tags_filter": True,
        "history_size": 100,
        "history_ttl": "300s",
        "force_recovery": True,
    }
    rotor = _start({"channel": {"without_namespace": {"allow_subscribe_for_client": True}, "namespaces": [tf]}})
    yield rotor
    _stop(rotor)


async def publish(server, channel: str, n: int, kind: str) -> None:
    await call_api(server.api.publish, PublishRequest(channel=channel, data={"n": n}, tags={"kind": kind}))


@async_test
async def test_only_matching_publications_arrive_live_and_recovered(filter_server):
    channel = f"tf:{uuid.uuid4().hex[:8]}"
    async with Pool(filter_server) as pool:
        client = await gated_client(pool, "filter")
        tags_filter = Filter.any(Filter.eq("kind", "a"), Filter.is_in("kind", ["c"]))
        sub = await pool.subscribed(client, channel, tags_filter=tags_filter)
        (first,) = sub.rec.of("subscribed")
        assert first.recoverable

        for n, kind in [(1, "a"), (2, "b"), (3, "c")]:
            await publish(filter_server, channel, n, kind)
        await sub.rec.wait("publication", count=2)

        await drop_transport(client)
        await publish(filter_server, channel, 4, "b")
        await publish(filter_server, channel, 5, "a")
        client.handler.gate.set()
        (_, again) = await sub.rec.wait("subscribed", count=2)
        assert again.was_recovering and again.recovered
        # A last matching one marks the end: everything before it has arrived.
        await publish(filter_server, channel, 6, "a")
        pubs = await sub.rec.wait("publication", lambda c: c.pub.data["n"] == 6)
        assert pubs
        assert [p.pub.data["n"] for p in sub.rec.of("publication")] == [1, 3, 5, 6]


@async_test
async def test_a_namespace_without_allow_tags_filter_refuses_it(filter_server):
    async with Pool(filter_server) as pool:
        client = await pool.connect("nofilter")
        sub = pool.new_sub(client, "plain", tags_filter=Filter.eq("kind", "a"))
        await sub.subscribe()
        (ctx,) = await sub.rec.wait("unsubscribed")
        assert ctx.code == 107, ctx
