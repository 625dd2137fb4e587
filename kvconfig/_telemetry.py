"""OpenTelemetry hooks: spans and metrics for loads, refreshes and requests (extra ``otel``).

Costs nothing unless an application uses OpenTelemetry: a hook first looks for
``opentelemetry.trace`` / ``opentelemetry.metrics`` in ``sys.modules`` (an application that set
up a provider has imported them), so without the extra, or without OpenTelemetry in use, a hook
is one dictionary lookup and kvconfig never imports OpenTelemetry. With it, spans and metrics go
through the OpenTelemetry *API* (whatever SDK and exporters the application configured; with no
provider set, the API's no-op one).

Spans (``start_as_current_span``, so the Azure SDK's own HTTP spans nest under them when
``azure-core-tracing-opentelemetry`` is set up):

- ``kvconfig.load``: a :meth:`~kvconfig.KeyVault.load`;
- ``kvconfig.refresh``: one refresh of a :class:`~kvconfig.LiveSettings`.

Attributes: ``kvconfig.settings`` (class name), ``kvconfig.vault`` (URL), ``kvconfig.secrets``
(how many secrets), ``kvconfig.requests``, ``kvconfig.outcome`` (``ok``; for refreshes
``changed`` / ``unchanged``; else the error's type name), on refreshes ``kvconfig.degraded``
(``live.health.degraded`` after it) and, only after
``kvconfig.integrations.otel.configure(record_secret_names=True)``, ``kvconfig.secret_names``.
Exceptions are not recorded on spans (their messages are not kvconfig's to vouch for): the status
is ERROR with the error's type name. Never a value, never a token.

Metrics (meter ``kvconfig``):

- ``kvconfig.load.duration`` (histogram, s): {settings, vault, outcome};
- ``kvconfig.requests`` (counter): {vault, operation ``get``/``list``, outcome ``found`` /
  ``missing`` / ``disabled`` / ``ok`` / ``transient`` / ``error``};
- ``kvconfig.refreshes`` (counter): {settings, vault, outcome};
- ``kvconfig.staleness`` (gauge, s), ``kvconfig.generation`` (gauge) and ``kvconfig.issues``
  (gauge: ``len(live.health.issues)``, 0 unless degraded): per running watcher.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Telemetry", "outcome_name", "telemetry"]

_SCOPE = "kvconfig"


class _Span:
    """What a hook's ``with`` block reports: outcome and request count."""

    __slots__ = ("degraded", "outcome", "requests")

    def __init__(self) -> None:
        self.outcome = "ok"
        self.requests: int | None = None
        self.degraded: bool | None = None


class Telemetry:
    """The process's kvconfig instrumentation. Strictly private: use the module's ``telemetry``."""

    def __init__(self) -> None:
        self.record_secret_names = False
        self._tracer_provider: Any = None
        self._meter_provider: Any = None
        self._tracer: Any = None
        self._meter: Any = None
        self._instruments: dict[str, Any] = {}
        # Running watchers, for the observable gauges: id -> (weakref, attributes).
        self._watched: dict[int, tuple[weakref.ref[Any], dict[str, str]]] = {}

    def configure(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        record_secret_names: bool = False,
    ) -> None:
        """Use these providers (default: the global ones) and say whether spans name secrets."""
        self.record_secret_names = record_secret_names
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer = None
        self._meter = None

    # -- finding the API ----------------------------------------------------------------------

    def _get_tracer(self) -> Any:
        module = sys.modules.get("opentelemetry.trace")
        if module is None:
            return None
        if self._tracer is None:
            provider = self._tracer_provider
            self._tracer = module.get_tracer(_SCOPE, tracer_provider=provider)
        return self._tracer

    def _get_meter(self) -> Any:
        module = sys.modules.get("opentelemetry.metrics")
        if module is None:
            return None
        if self._meter is None:
            meter = module.get_meter(_SCOPE, meter_provider=self._meter_provider)
            self._instruments = {
                "load": meter.create_histogram(
                    "kvconfig.load.duration", unit="s", description="Duration of KeyVault.load"
                ),
                "requests": meter.create_counter(
                    "kvconfig.requests",
                    unit="{request}",
                    description="Requests to the vault by operation and outcome",
                ),
                "refreshes": meter.create_counter(
                    "kvconfig.refreshes",
                    unit="{refresh}",
                    description="Refreshes of live settings by outcome",
                ),
            }
            meter.create_observable_gauge(
                "kvconfig.staleness",
                callbacks=[self._observe("staleness")],
                unit="s",
                description="Seconds since live settings last refreshed successfully",
            )
            meter.create_observable_gauge(
                "kvconfig.generation",
                callbacks=[self._observe("generation")],
                unit="{generation}",
                description="Generation of the published live settings",
            )
            meter.create_observable_gauge(
                "kvconfig.issues",
                callbacks=[self._observe("issues")],
                unit="{issue}",
                description="Reasons live settings are degraded (kept deleted or disabled "
                "secrets, rejected values, a forbidden list); 0 when not degraded",
            )
            self._meter = meter
        return self._meter

    # -- hooks --------------------------------------------------------------------------------

    @contextmanager
    def load(self, settings: str, vault: str, names: Iterable[str]) -> Iterator[_Span]:
        """Around a load: span ``kvconfig.load`` and the duration histogram."""
        with self._span("kvconfig.load", settings, vault, names) as span:
            started = time.perf_counter()
            try:
                yield span
            finally:
                if self._get_meter() is not None:
                    self._instruments["load"].record(
                        time.perf_counter() - started,
                        {"kvconfig.settings": settings, "kvconfig.vault": vault,
                         "kvconfig.outcome": span.outcome},
                    )  # fmt: skip

    @contextmanager
    def refresh(self, settings: str, vault: str, names: Iterable[str]) -> Iterator[_Span]:
        """Around a refresh: span ``kvconfig.refresh`` and the refresh counter."""
        with self._span("kvconfig.refresh", settings, vault, names) as span:
            try:
                yield span
            finally:
                if self._get_meter() is not None:
                    self._instruments["refreshes"].add(
                        1,
                        {"kvconfig.settings": settings, "kvconfig.vault": vault,
                         "kvconfig.outcome": span.outcome},
                    )  # fmt: skip

    def request(self, vault: str, operation: str, outcome: str) -> None:
        """One HTTP attempt (retries count one each)."""
        if "opentelemetry.metrics" in sys.modules and self._get_meter() is not None:
            self._instruments["requests"].add(
                1,
                {"kvconfig.vault": vault, "kvconfig.operation": operation,
                 "kvconfig.outcome": outcome},
            )  # fmt: skip

    def watching(self, live: Any, settings: str, vault: str) -> None:
        """A watcher started: observe its staleness and generation until it is collected or
        closed (``live.closed``)."""
        self._watched[id(live)] = (
            weakref.ref(live),
            {"kvconfig.settings": settings, "kvconfig.vault": vault},
        )
        self._get_meter()

    # -- machinery ----------------------------------------------------------------------------

    @contextmanager
    def _span(self, name: str, settings: str, vault: str, names: Iterable[str]) -> Iterator[_Span]:
        span = _Span()
        tracer = self._get_tracer()
        if tracer is None:
            try:
                yield span
            except BaseException as exc:
                span.outcome = type(exc).__name__
                raise
            return
        names = sorted(set(names))
        attributes: dict[str, Any] = {
            "kvconfig.settings": settings,
            "kvconfig.vault": vault,
            "kvconfig.secrets": len(names),
        }
        if self.record_secret_names:
            attributes["kvconfig.secret_names"] = names
        status = sys.modules["opentelemetry.trace"]
        with tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as otel_span:
            try:
                yield span
            except BaseException as exc:
                span.outcome = type(exc).__name__
                otel_span.set_status(status.Status(status.StatusCode.ERROR, span.outcome))
                raise
            finally:
                otel_span.set_attribute("kvconfig.outcome", span.outcome)
                if span.requests is not None:
                    otel_span.set_attribute("kvconfig.requests", span.requests)
                if span.degraded is not None:
                    otel_span.set_attribute("kvconfig.degraded", span.degraded)

    def _observe(self, what: str) -> Callable[[Any], Iterable[Any]]:
        def callback(options: Any) -> Iterable[Any]:
            observation = sys.modules["opentelemetry.metrics"].Observation
            found = []
            for key, (ref, attributes) in list(self._watched.items()):
                live = ref()
                if live is None or live.closed:
                    self._watched.pop(key, None)
                    continue
                if what == "staleness":
                    value: float = live.health.staleness
                elif what == "issues":
                    value = len(live.health.issues)
                else:
                    value = live.generation
                found.append(observation(value, attributes))
            return found

        return callback


telemetry = Telemetry()


def outcome_name(verdict: Any) -> str:
    """A failed request's outcome label: ``missing``, ``disabled``, ``transient`` or ``error``
    (refused, or not a failure kvconfig classifies)."""
    outcome = getattr(verdict, "outcome", None)
    value = getattr(outcome, "value", "error")
    return "error" if value == "permanent" else str(value)
