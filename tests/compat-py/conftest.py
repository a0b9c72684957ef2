"""Fixtures of the Python compatibility suite: rotor servers started from harness.Rotor.

`server` is one rotor for the whole run (3 shards, round-robin placement); tests keep out
of each other's way with their own user ids and channel names. A server is stopped with
SIGTERM to its own PID at the end, and the run fails if it had to be killed.
"""

from __future__ import annotations

import atexit

import pytest

from harness import Rotor

_started: list = []


@atexit.register
def _kill_leftovers() -> None:
    # A crashed run must not leave a rotor behind; only children this module spawned.
    for rotor in _started:
        if rotor.proc is not None and rotor.proc.poll() is None:
            rotor.proc.kill()


def _start(extra=None) -> Rotor:
    rotor = Rotor(extra)
    _started.append(rotor)
    return rotor.start()


def _stop(rotor: Rotor) -> None:
    info = rotor.stop()
    assert not info["forced"], "rotor ignored SIGTERM and had to be killed"
    assert info["code"] == 0, f"rotor exited with {info['code']} after SIGTERM\n{rotor.logs()}"


@pytest.fixture(scope="session")
def server():
    rotor = _start()
    yield rotor
    _stop(rotor)


ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def admin_server():
    """A rotor with the admin web UI on (password login, sessions signed by admin.secret)."""
    rotor = _start({"admin": {"enabled": True, "password": ADMIN_PASSWORD, "secret": "admin-secret-for-tests"}})
    yield rotor
    _stop(rotor)


@pytest.fixture(scope="session")
def metrics_server():
    """A rotor with /metrics on (on its main port: no internal port configured)."""
    rotor = _start({"prometheus": {"enabled": True}})
    yield rotor
    _stop(rotor)


@pytest.fixture(scope="session")
def rpc_server():
    """A rotor with the built-in `ping` RPC extension on (spec §5.4): an RPC handler exists,
    so an unknown method is 104 rather than 108."""
    rotor = _start({"rpc": {"ping": {"enabled": True}}})
    yield rotor
    _stop(rotor)


@pytest.fixture(scope="session")
def proxy_server():
    """A rotor whose connect and RPC proxies go to the README's example backend
    (examples/proxy_backend.py), started here as its own process on a port it picks."""
    import re
    import select
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "examples" / "proxy_backend.py"
    backend = subprocess.Popen([sys.executable, str(script), "0"], stdout=subprocess.PIPE, text=True)
    try:
        # The backend prints its port once it listens; a bounded wait for that line.
        ready, _, _ = select.select([backend.stdout], [], [], 10)
        line = backend.stdout.readline() if ready else ""
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert found, f"the example backend did not start: {line!r}"
        url = f"http://127.0.0.1:{found.group(1)}/centrifugo"
        proxy = {"timeout": "2s", "http_headers": ["Cookie"]}
        rotor = _start(
            {
                "client": {"proxy": {"connect": {"enabled": True, "endpoint": f"{url}/connect", **proxy}}},
                "rpc": {
                    "proxy": {"endpoint": f"{url}/rpc", **proxy},
                    "without_namespace": {"proxy_enabled": True},
                },
            }
        )
        yield rotor
        _stop(rotor)
    finally:
        backend.terminate()
        backend.wait()
