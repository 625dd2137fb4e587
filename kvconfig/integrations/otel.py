"""OpenTelemetry for kvconfig (extra ``otel``): spans and metrics, and what to put in them.

kvconfig reports through the OpenTelemetry API on its own as soon as the application uses
OpenTelemetry (see :mod:`kvconfig._telemetry` for every span, metric and attribute); nothing
needs to be called. :func:`configure` chooses other providers than the global ones (tests, a
separate pipeline) and opts in to secret *names* on spans. Values and tokens are never recorded.

For the Azure SDK's own HTTP spans to nest under ``kvconfig.load`` / ``kvconfig.refresh``,
install ``azure-core-tracing-opentelemetry`` and set
``azure.core.settings.settings.tracing_implementation = "opentelemetry"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvconfig._telemetry import telemetry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["configure"]


def configure(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    record_secret_names: bool = False,
) -> None:
    """Report to these providers (``None``: the global ones, the default).

    Args:
        tracer_provider: Where ``kvconfig.load`` / ``kvconfig.refresh`` spans go.
        meter_provider: Where the ``kvconfig.*`` metrics go.
        record_secret_names: Add ``kvconfig.secret_names`` (the names of the secrets a load or
            refresh reads; never values) to spans. Off by default: names can say more about a
            system than an operator's tracing backend should see.
    """
    try:  # the hooks look for the API in sys.modules
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "kvconfig.integrations.otel needs OpenTelemetry: pip install 'kvconfig[otel]'"
        ) from exc

    telemetry.configure(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        record_secret_names=record_secret_names,
    )
