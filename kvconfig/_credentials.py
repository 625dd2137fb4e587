"""Credentials as kvconfig uses them: sync or async, both seen as an aio credential.

``KeyVault`` (and so ``SyncKeyVault`` and the drop-in source) accepts a sync
``azure.core.credentials.TokenCredential`` (``azure.identity.DefaultAzureCredential()``) as
well as an aio one. A sync credential is wrapped by :class:`SyncCredentialAdapter`, whose
``get_token`` runs in a thread: it holds no event loop resources, so it serves any loop, which
an ``azure.identity.aio`` credential (its HTTP session bound to the loop it first ran on) does
not.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential
from azure.core.credentials_async import AsyncTokenCredential

from kvconfig._errors import ConfigurationError

__all__ = ["SyncCredentialAdapter", "as_async", "is_async_credential"]


class SyncCredentialAdapter(AsyncTokenCredential):
    """A sync ``TokenCredential`` seen as an ``AsyncTokenCredential`` (calls run in a thread).

    ``close()`` closes the wrapped credential only when ``close_credential`` is true.
    """

    def __init__(self, credential: TokenCredential, *, close_credential: bool = False) -> None:
        self._credential = credential
        self._close_credential = close_credential

    def __repr__(self) -> str:
        return f"SyncCredentialAdapter({type(self._credential).__name__})"

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        def call() -> AccessToken:
            return self._credential.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            )

        return await asyncio.to_thread(call)

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        getter = getattr(self._credential, "get_token_info", None)
        if getter is not None:
            info: AccessTokenInfo = await asyncio.to_thread(getter, *scopes, options=options)
            return info
        token = await self.get_token(*scopes)
        return AccessTokenInfo(token.token, token.expires_on)

    async def close(self) -> None:
        if self._close_credential:
            closer = getattr(self._credential, "close", None)
            if closer is not None:
                # Directly, not in an executor: at interpreter exit executors refuse new work.
                closer()

    async def __aexit__(self, *args: object) -> None:
        await self.close()


def is_async_credential(credential: object) -> bool:
    """Whether ``credential.get_token`` is a coroutine function (an ``azure.identity.aio`` one)."""
    return inspect.iscoroutinefunction(getattr(credential, "get_token", None))


def as_async(credential: Any, *, close_credential: bool) -> tuple[AsyncTokenCredential, bool]:
    """The credential as an aio one, and whether ``KeyVault`` should close it.

    A sync credential is wrapped; the wrapper closes it only if ``close_credential``.
    """
    if is_async_credential(credential):
        return credential, close_credential
    if not callable(getattr(credential, "get_token", None)):
        raise ConfigurationError(
            f"credential must be an azure TokenCredential or AsyncTokenCredential, "
            f"got {type(credential).__name__}"
        )
    return SyncCredentialAdapter(credential, close_credential=close_credential), True
