"""Integrations with other frameworks, each behind an optional extra and imported only by you.

``kvconfig.integrations.fastapi`` (extra ``fastapi``): lifespan, typed dependency, health route.
``kvconfig.integrations.eventgrid`` (extra ``eventgrid``): Event Grid webhook endpoints.
``kvconfig.integrations.otel`` (extra ``otel``): OpenTelemetry providers and secret-name opt-in.
Importing ``kvconfig`` never imports this package.
"""
