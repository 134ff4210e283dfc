"""Expose tokenhub's OpenTelemetry metrics on a Prometheus /metrics endpoint (offline).

Needs opentelemetry-sdk, opentelemetry-exporter-prometheus and prometheus_client (the
application's dependencies, not tokenhub's).
"""

from __future__ import annotations

import urllib.request

import anyio
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from prometheus_client import start_http_server

from tokenhub import Hub
from tokenhub.testing import FakeProvider, Reply

server, _ = start_http_server(port=0, addr="127.0.0.1")  # the scrape endpoint, a free port
provider = MeterProvider(
    resource=Resource({SERVICE_NAME: "demo"}), metric_readers=[PrometheusMetricReader()]
)
metrics.set_meter_provider(provider)  # tokenhub's proxy meter now exports here


async def main() -> None:
    async with FakeProvider() as fake:
        config = {
            "providers": {"o": {"kind": "openai", "base_url": fake.openai_base_url}},
            "models": {
                "cheap": {"provider": "o", "pricing": {"input": 0.1, "output": 0.4}},
                "backup": {"provider": "o"},
            },
            "routing": {"fallbacks": ["backup"]},
        }
        fake.script("cheap", Reply(status=503))
        async with Hub.from_config(config) as hub:
            for _ in range(3):
                await hub.chat([{"role": "user", "content": "Hello"}], model="cheap")


anyio.run(main)
url = f"http://127.0.0.1:{server.server_port}/metrics"
with urllib.request.urlopen(url) as response:
    text = response.read().decode()
for line in text.splitlines():
    if line.startswith(("gen_ai_client_operation_duration_seconds_count", "tokenhub_router_")):
        print(line)
server.shutdown()
