"""TLS listeners with the official Python SDK and `cent`: the test makes a CA and a server
certificate with the openssl command line, rotor serves `http_server.tls` with them,
centrifuge-python connects over wss:// with an SSL context trusting only that CA, and `cent`
publishes over https://. A client that does not trust the CA cannot connect."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
import requests
from cent import PublishRequest

from conftest import _start, _stop
from harness import WAIT_S, Pool, async_test, call_api


def make_pki() -> Path:
    """A CA (ca.pem) and a server certificate for localhost/127.0.0.1 (server.pem/.key)."""
    d = Path(tempfile.mkdtemp(prefix="rotor-py-tls-"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rotor py test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    return d


@pytest.fixture(scope="module")
def tls_server():
    pki = make_pki()
    tls = {"enabled": True, "cert_pem": str(pki / "server.pem"), "key_pem": str(pki / "server.key")}
    rotor = _start({"http_server": {"tls": tls}})
    rotor.ca_file = str(pki / "ca.pem")
    yield rotor
    _stop(rotor)
    shutil.rmtree(pki, ignore_errors=True)


@async_test
async def test_sdk_over_wss_receives_what_cent_publishes_over_https(tls_server):
    assert tls_server.ws_url.startswith("wss://") and tls_server.http_url.startswith("https://")
    context = ssl.create_default_context(cafile=tls_server.ca_file)
    channel = f"news{uuid.uuid4().hex[:8]}"
    async with Pool(tls_server) as pool:
        client = await pool.connect("alice", ssl_context=context)
        sub = await pool.subscribed(client, channel)
        await call_api(tls_server.api.publish, PublishRequest(channel=channel, data={"over": "tls"}))
        (ctx,) = await sub.rec.wait("publication")
        assert ctx.pub.data == {"over": "tls"}


def test_a_client_without_the_ca_is_refused(tls_server):
    session = requests.Session()
    session.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        session.get(f"{tls_server.http_url}/health", timeout=WAIT_S)
    ok = session.get(f"{tls_server.http_url}/api/info", timeout=WAIT_S, verify=tls_server.ca_file)
    assert ok.status_code in (401, 405), ok.status_code
