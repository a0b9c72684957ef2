"""Harness for the Python compatibility suite.

Starts the real rotor binary ($ROTOR_BIN) on an ephemeral port with a known Centrifugo v6
JSON config, signs HS256 tokens with PyJWT, gives a `cent` API client and small asyncio
helpers for the `centrifuge-python` SDK. It owns only the rotor processes it spawned:
stopping one sends SIGTERM to that child's PID, never to a process found by name.
Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

import jwt
import requests
from cent import Client as CentClient
from centrifuge import (
    Client,
    ClientEventHandler,
    Subscription,
    SubscriptionEventHandler,
)

HERE = Path(__file__).resolve().parent

#: Upper bound for any single wait in the suite.
WAIT_S = 10.0
#: Upper bound for a whole async test body.
TEST_S = 30.0
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
READY_LINE = re.compile(r"^rotor listening on (.+):(\d+)\s*$")


def rotor_bin() -> Path:
    """$ROTOR_BIN, else the debug build of this repository."""
    from_env = os.environ.get("ROTOR_BIN", "")
    if from_env:
        return Path(from_env).resolve()
    return (HERE / "../../target/debug/rotor").resolve()


def base_config(secret: str, api_key: str) -> dict:
    """The config every suite server runs with (Centrifugo v6 layout), same shape as the
    Node suite's plus the namespaces the history/presence/recovery tests need."""
    return {
        "http_server": {"address": "127.0.0.1", "port": 0},
        "log": {"level": "info"},
        "client": {
            "token": {"hmac_secret_key": secret},
            # The Python SDK sends no Origin header; an empty list means no check for
            # Origin-less requests.
            "allowed_origins": [],
        },
        "http_api": {"key": api_key},
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": True},
            "namespaces": [
                # Subscribers may publish: the client publish path.
                {
                    "name": "chat",
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                },
                # Read-only: subscribing is fine, client publishing is denied (103).
                {"name": "ro", "allow_subscribe_for_client": True},
                # A stream with history and forced recovery (spec §6).
                {
                    "name": "hist",
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                    "allow_history_for_subscriber": True,
                    "allow_history_for_client": True,
                    "history_size": 100,
                    "history_ttl": "300s",
                    "force_recovery": True,
                },
                # Presence and join/leave (spec §7).
                {
                    "name": "pres",
                    "allow_subscribe_for_client": True,
                    "allow_presence_for_subscriber": True,
                    "allow_presence_for_client": True,
                    "presence": True,
                    "join_leave": True,
                },
                # Only a subscription token lets a client in (spec §4.3).
                {"name": "tok"},
            ],
        },
        "runtime": {"shards": 3, "placement": "round_robin", "pin_cpus": False},
    }


def merge(config: dict, extra: dict) -> dict:
    """`extra`'s top-level sections merged over `config`'s (one level deep, like the Node
    harness)."""
    out = dict(config)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


class Rotor:
    """One running rotor child process."""

    def __init__(self, extra: Optional[dict] = None):
        self.secret = secrets.token_urlsafe(32)
        self.api_key = secrets.token_urlsafe(24)
        self.config = merge(base_config(self.secret, self.api_key), extra or {})
        self._dir = Path(tempfile.mkdtemp(prefix="rotor-compat-py-"))
        self.config_path = self._dir / "config.json"
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self._stderr_path = self._dir / "stderr.log"
        self._stdout_tail: deque = deque(maxlen=200)
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.exit_info: Optional[dict] = None
        self._api: Optional[CentClient] = None
        #: With `http_server.tls` on: the CA file clients verify the server with.
        self.ca_file: Optional[str] = None
        self._tls = bool(self.config.get("http_server", {}).get("tls", {}).get("enabled"))

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "Rotor":
        binary = rotor_bin()
        if not binary.exists():
            raise RuntimeError(f"rotor binary not found at {binary} (set ROTOR_BIN or cargo build)")
        stderr = open(self._stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(binary), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        finally:
            stderr.close()
        ready = threading.Event()
        found: dict = {}

        def read_stdout() -> None:
            # Keeps draining stdout for the life of the child so it never blocks on a
            # full pipe; remembers the tail for failure messages.
            assert self.proc is not None and self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._stdout_tail.append(line)
                if not ready.is_set():
                    m = READY_LINE.match(line)
                    if m:
                        found["port"] = int(m.group(2))
                        ready.set()
            ready.set()  # EOF: the child exited (or closed stdout).

        threading.Thread(target=read_stdout, name="rotor-stdout", daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S) or "port" not in found:
            code = self.proc.poll()
            self.stop()
            raise RuntimeError(
                f"rotor did not print its listening line within {READY_TIMEOUT_S}s "
                f"(exit code {code})\n{self.logs()}"
            )
        self.port = found["port"]
        return self

    def stop(self) -> dict:
        """SIGTERM to this child only; SIGKILL after STOP_TIMEOUT_S. Returns
        {"code": int, "forced": bool}."""
        if self.exit_info is not None:
            return self.exit_info
        forced = False
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    forced = True
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT_S)
            self.exit_info = {"code": self.proc.returncode, "forced": forced}
        else:
            self.exit_info = {"code": None, "forced": False}
        if self._api is not None:
            self._api._session.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return self.exit_info

    def logs(self) -> str:
        try:
            err = self._stderr_path.read_text("utf-8", "replace")[-16384:]
        except OSError:
            err = ""
        out = "\n".join(self._stdout_tail)
        return f"--- rotor stdout ---\n{out}\n--- rotor stderr ---\n{err}"

    # -- addresses, tokens, API ------------------------------------------------------

    @property
    def http_url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self._tls else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/connection/websocket"

    def token(self, sub: str = "alice", ttl: int = 3600, **claims: Any) -> str:
        """HS256 connection token for `sub`, valid `ttl` seconds unless claims override."""
        payload = {"sub": sub, "exp": int(time.time()) + ttl, **claims}
        return jwt.encode(payload, self.secret, algorithm="HS256")

    def sub_token(self, sub: str, channel: str, ttl: int = 3600, **claims: Any) -> str:
        """HS256 subscription token (spec §4.3)."""
        payload = {"sub": sub, "channel": channel, "exp": int(time.time()) + ttl, **claims}
        return jwt.encode(payload, self.secret, algorithm="HS256")

    @property
    def api(self) -> CentClient:
        """A `cent` client for this server (proxies from the environment ignored: the
        server is on loopback)."""
        if self._api is None:
            session = requests.Session()
            session.trust_env = False
            if self.ca_file:
                session.verify = self.ca_file
            self._api = CentClient(f"{self.http_url}/api", self.api_key, timeout=WAIT_S, session=session)
        return self._api

    def api_with_key(self, key: str) -> CentClient:
        session = requests.Session()
        session.trust_env = False
        return CentClient(f"{self.http_url}/api", key, timeout=WAIT_S, session=session)


# -- asyncio helpers for the SDK ---------------------------------------------------------


def async_test(fn: Callable) -> Callable:
    """Runs an `async def` test in a fresh event loop, bounded by TEST_S. Fixtures are
    passed through (functools.wraps keeps the signature pytest reads)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(fn(*args, **kwargs), TEST_S)

        asyncio.run(bounded())

    return wrapper


async def call_api(method: Callable, *args: Any, **kwargs: Any) -> Any:
    """Runs a (blocking) `cent` call in a worker thread so the SDK's reader keeps going."""
    return await asyncio.to_thread(method, *args, **kwargs)


class Recorder:
    """Records SDK events as (kind, ctx) in arrival order and waits for them."""

    def __init__(self) -> None:
        self.items: list = []
        self._changed = asyncio.Event()

    def push(self, kind: str, ctx: Any) -> None:
        self.items.append((kind, ctx))
        self._changed.set()

    def of(self, kind: str) -> list:
        return [ctx for k, ctx in self.items if k == kind]

    def kinds(self) -> list:
        return [k for k, _ in self.items]

    async def wait(
        self,
        kind: str,
        pred: Callable[[Any], bool] = lambda _ctx: True,
        count: int = 1,
        timeout: float = WAIT_S,
    ) -> list:
        """The first `count` events of `kind` satisfying `pred`; fails after `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            matches = [ctx for ctx in self.of(kind) if pred(ctx)]
            if len(matches) >= count:
                return matches[:count]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {count} '{kind}' event(s); "
                    f"got {len(matches)} matching; events seen: {self.kinds()}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


class ClientEvents(ClientEventHandler):
    """Client-level events (including server-side subscription ones) into a Recorder."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def on_connecting(self, ctx):
        self.rec.push("connecting", ctx)

    async def on_connected(self, ctx):
        self.rec.push("connected", ctx)

    async def on_disconnected(self, ctx):
        self.rec.push("disconnected", ctx)

    async def on_error(self, ctx):
        self.rec.push("error", ctx)

    async def on_subscribed(self, ctx):
        self.rec.push("subscribed", ctx)

    async def on_subscribing(self, ctx):
        self.rec.push("subscribing", ctx)

    async def on_unsubscribed(self, ctx):
        self.rec.push("unsubscribed", ctx)

    async def on_publication(self, ctx):
        self.rec.push("publication", ctx)

    async def on_join(self, ctx):
        self.rec.push("join", ctx)

    async def on_leave(self, ctx):
        self.rec.push("leave", ctx)


class SubEvents(SubscriptionEventHandler):
    """Subscription events into a Recorder."""

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def on_subscribing(self, ctx):
        self.rec.push("subscribing", ctx)

    async def on_subscribed(self, ctx):
        self.rec.push("subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        self.rec.push("unsubscribed", ctx)

    async def on_publication(self, ctx):
        self.rec.push("publication", ctx)

    async def on_join(self, ctx):
        self.rec.push("join", ctx)

    async def on_leave(self, ctx):
        self.rec.push("leave", ctx)

    async def on_error(self, ctx):
        self.rec.push("error", ctx)


class Pool:
    """The SDK clients of one test; every one is disconnected when the block ends.

    async with Pool(server) as pool:
        alice = await pool.connect("alice")
    """

    def __init__(self, server: Rotor) -> None:
        self.server = server
        self.clients: list = []

    async def __aenter__(self) -> "Pool":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for client in self.clients:
            try:
                await asyncio.wait_for(client.disconnect(), WAIT_S)
            except Exception:  # noqa: BLE001 - cleanup must reach every client
                pass

    def new_client(
        self,
        user: str = "alice",
        events: Optional[Callable[[Recorder], ClientEventHandler]] = None,
        **kwargs: Any,
    ) -> Client:
        """An SDK client with a Recorder at `.rec` (not connected yet). `events` makes the
        event handler from that Recorder (default: ClientEvents)."""
        rec = Recorder()
        if "token" not in kwargs and "get_token" not in kwargs:
            kwargs["token"] = self.server.token(user)
        client = Client(
            self.server.ws_url,
            events=(events or ClientEvents)(rec),
            proxy=None,
            timeout=5.0,
            **kwargs,
        )
        client.rec = rec  # type: ignore[attr-defined]
        self.clients.append(client)
        return client

    async def connect(self, user: str = "alice", **kwargs: Any) -> Client:
        """A connected SDK client for `user`."""
        client = self.new_client(user, **kwargs)
        await asyncio.wait_for(client.connect(), WAIT_S)
        await client.ready(timeout=WAIT_S)
        return client

    @staticmethod
    def new_sub(client: Client, channel: str, **kwargs: Any) -> Subscription:
        rec = Recorder()
        sub = client.new_subscription(channel, events=SubEvents(rec), **kwargs)
        sub.rec = rec  # type: ignore[attr-defined]
        return sub

    async def subscribed(self, client: Client, channel: str, **kwargs: Any) -> Subscription:
        """A subscription of `client` to `channel`, once the server confirmed it."""
        sub = self.new_sub(client, channel, **kwargs)
        await sub.subscribe()
        await sub.ready(timeout=WAIT_S)
        return sub
