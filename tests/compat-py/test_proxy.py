"""centrifuge-python through Rotor's connect and RPC proxies, with the README's example
backend as the application: the session cookie instead of a token."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from centrifuge import ClientState, ReplyError

from harness import WAIT_S, Pool, async_test


@async_test
async def test_connects_by_cookie_and_calls_rpc(proxy_server):
    async with Pool(proxy_server) as pool:
        client = pool.new_client(token="", headers={"Cookie": "session=pyuser"})
        await asyncio.wait_for(client.connect(), WAIT_S)
        await client.ready(timeout=WAIT_S)
        assert client.state == ClientState.CONNECTED
        result = await client.rpc("getCurrentYear", {})
        assert result.data == {"year": datetime.date.today().year}
        with pytest.raises(ReplyError) as err:
            await client.rpc("nope", {})
        assert err.value.code == 1404


@async_test
async def test_without_a_cookie_the_backend_disconnects(proxy_server):
    async with Pool(proxy_server) as pool:
        client = pool.new_client(token="")
        await asyncio.wait_for(client.connect(), WAIT_S)
        (ctx,) = await client.rec.wait("disconnected")
        assert ctx.code == 4501
        assert client.state == ClientState.DISCONNECTED
