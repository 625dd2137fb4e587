"""OpenTelemetry spans and metrics, read back from the SDK's in-memory exporters."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from kvconfig import MissingSettingError
from kvconfig.emulator import KeyVaultEmulator
from kvconfig.integrations.otel import configure
from tests.conftest import VaultFactory


class Payment(BaseSettings):
    stripe_key: SecretStr
    currency: str = "EUR"


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        for point in m.data.data_points:
                            found.append((dict(point.attributes or {}), point))
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    configure(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Otel(exporter, reader)
    finally:
        configure()
        meter_provider.shutdown()
        tracer_provider.shutdown()


async def test_load_span_and_metrics(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, otel: Otel
) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_1"})
    async with make_vault() as vault:
        await vault.load(Payment)
    (span,) = otel.finished("kvconfig.load")
    attributes = dict(span.attributes or {})
    assert attributes == {
        "kvconfig.settings": "Payment",
        "kvconfig.vault": keyvault_emulator.vault_url,
        "kvconfig.secrets": 2,
        "kvconfig.outcome": "ok",
        "kvconfig.requests": 2,  # HTTP attempts of the load (the 401 challenge is the SDK's)
    }
    assert "kvconfig.secret_names" not in attributes
    (duration,) = otel.points("kvconfig.load.duration")
    assert duration[0]["kvconfig.outcome"] == "ok" and duration[1].count == 1
    requests = {(a["kvconfig.operation"], a["kvconfig.outcome"]): p.value for a, p in otel.points(
        "kvconfig.requests")}  # fmt: skip
    assert requests == {("get", "found"): 1, ("get", "missing"): 1}


async def test_failed_load_is_an_error_span_without_the_exception(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, otel: Otel
) -> None:
    async with make_vault() as vault:
        with pytest.raises(MissingSettingError):
            await vault.load(Payment)
    (span,) = otel.finished("kvconfig.load")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "MissingSettingError"
    assert (span.attributes or {})["kvconfig.outcome"] == "MissingSettingError"
    assert span.events == ()  # no recorded exception: its message is not telemetry's to carry


async def test_refresh_spans_counters_and_gauges(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, otel: Otel
) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_1", "currency": "USD"})
    async with make_vault() as vault, vault.watch(Payment, interval=3600) as live:
        assert await live.refresh() is None
        keyvault_emulator.set_secret("currency", "GBP")
        assert await live.refresh() is not None
        gauges = {
            name: [(a, p.value) for a, p in otel.points(name)]
            for name in ("kvconfig.generation", "kvconfig.staleness")
        }
    assert [dict(s.attributes or {})["kvconfig.outcome"] for s in otel.finished(
        "kvconfig.refresh")] == ["unchanged", "changed"]  # fmt: skip
    assert len(otel.finished("kvconfig.load")) == 1  # entering watch() loads
    refreshes = {a["kvconfig.outcome"]: p.value for a, p in otel.points("kvconfig.refreshes")}
    assert refreshes == {"unchanged": 1, "changed": 1}
    assert [v for _, v in gauges["kvconfig.generation"]] == [1]
    assert gauges["kvconfig.generation"][0][0] == {
        "kvconfig.settings": "Payment",
        "kvconfig.vault": keyvault_emulator.vault_url,
    }
    assert 0 <= gauges["kvconfig.staleness"][0][1] < 60
    # The load GETs; refreshes list (one page), then GET what changed.
    operations = {
        (a["kvconfig.operation"], a["kvconfig.outcome"])
        for a, _ in otel.points("kvconfig.requests")
    }
    assert operations == {("get", "found"), ("list", "ok")}


async def test_degraded_refresh_is_a_span_attribute_and_an_issues_gauge(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, otel: Otel
) -> None:
    """A disabled secret whose value is kept: the refresh span says degraded, the issues gauge
    counts one; re-enabled, both clear."""
    keyvault_emulator.seed({"stripe-key": "sk_1", "currency": "USD"})
    async with make_vault() as vault, vault.watch(Payment, interval=3600) as live:
        keyvault_emulator.update_secret("currency", enabled=False)
        await live.refresh()
        degraded = [p.value for _, p in otel.points("kvconfig.issues")]
        keyvault_emulator.update_secret("currency", enabled=True)
        await live.refresh()
        recovered = [p.value for _, p in otel.points("kvconfig.issues")]
    assert [dict(s.attributes or {})["kvconfig.degraded"] for s in otel.finished(
        "kvconfig.refresh")] == [True, False]  # fmt: skip
    assert degraded == [1] and recovered == [0]


async def test_secret_names_only_on_opt_in(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, otel: Otel
) -> None:
    keyvault_emulator.seed({"stripe-key": "sk_1"})
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(otel.spans))
    configure(tracer_provider=provider, record_secret_names=True)
    async with make_vault() as vault:
        await vault.load(Payment)
    (span,) = otel.finished("kvconfig.load")
    assert (span.attributes or {})["kvconfig.secret_names"] == ("currency", "stripe-key")


def test_no_opentelemetry_import_when_the_application_does_not_use_it() -> None:
    code = (
        "import asyncio, json, sys\n"
        "from kvconfig._telemetry import telemetry\n"
        "with telemetry.load('S', 'https://v', ['a']) as span:\n    span.requests = 1\n"
        "with telemetry.refresh('S', 'https://v', ['a']) as span:\n    pass\n"
        "telemetry.request('https://v', 'get', 'found')\n"
        "import kvconfig._vault, kvconfig._refresh._watch\n"
        "print(json.dumps([m for m in sys.modules if m.startswith('opentelemetry')]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out) == []
