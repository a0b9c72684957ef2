"""`/metrics` read by the Prometheus Python client's own exposition-format parser, while SDK
clients are connected and publications flow: every family parses, carries Centrifugo's types,
and the counts match what the clients did."""

from __future__ import annotations

import uuid

import requests
from cent import PublishRequest
from prometheus_client.parser import text_string_to_metric_families

from harness import WAIT_S, Pool, async_test, call_api


def scrape(server) -> dict:
    session = requests.Session()
    session.trust_env = False
    r = session.get(f"{server.http_url}/metrics", timeout=WAIT_S)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def sample(families: dict, name: str, sample_name: str, **labels) -> float:
    family = families.get(name)
    for s in family.samples if family else []:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {sample_name} {labels}")


def publications_sent(families: dict) -> float:
    """Publication frames written to WebSocket clients (0 before the first one)."""
    try:
        return sample(
            families, "centrifugo_transport_messages_sent", "centrifugo_transport_messages_sent_total",
            transport="websocket", frame_type="push_publication",
        )
    except AssertionError:
        return 0.0


@async_test
async def test_metrics_parse_and_count_sdk_traffic(metrics_server):
    channel = f"chat:m{uuid.uuid4().hex[:8]}"
    async with Pool(metrics_server) as pool:
        clients = [await pool.connect(f"m{i}{uuid.uuid4().hex[:4]}") for i in range(3)]
        subs = [await pool.subscribed(c, channel) for c in clients]
        sent_before = publications_sent(scrape(metrics_server))
        for n in range(4):
            await call_api(metrics_server.api.publish, PublishRequest(channel=channel, data={"n": n}))
        for s in subs:
            await s.rec.wait("publication", count=4)
        families = scrape(metrics_server)

    assert families["centrifugo_node_num_clients"].type == "gauge"
    assert families["centrifugo_transport_messages_sent"].type == "counter"
    assert families["centrifugo_client_command_duration_seconds_histogram"].type == "histogram"
    assert families["centrifugo_client_command_duration_seconds"].type == "summary"
    assert sample(families, "centrifugo_node_num_clients", "centrifugo_node_num_clients") == 3
    sent = publications_sent(families)
    assert sent - sent_before == 12, (sent, sent_before)
    assert "process_resident_memory_bytes" in families
