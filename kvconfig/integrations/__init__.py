"""Integrations with other frameworks, each behind an optional extra and imported only by you.

``kvconfig.integrations.fastapi`` (extra ``fastapi``): lifespan, typed dependency, health route.
Importing ``kvconfig`` never imports this package.
"""
