"""The trimmed SecretClient pipeline, proxies and trust, against the real SDK and the emulator."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.core.credentials import AccessTokenInfo, TokenRequestOptions
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, UserAgentPolicy
from pydantic_settings import BaseSettings

from kvconfig import KeyVault, VaultUnavailableError
from kvconfig._client import (
    build_secret_client,
    build_session,
    build_ssl_context,
    pipeline_policies,
    signalling,
)
from kvconfig.emulator import KeyVaultEmulator
from tests.conftest import VaultFactory

from .conftest import gets


class Five(BaseSettings):
    a: str
    b: str
    c: str
    d: str
    e: str


SEED = {name: f"v-{name}" for name in "abcde"}


class CountingCredential:
    """Delegates to the emulator's credential; counts tokens, optionally makes them short-lived."""

    def __init__(self, inner: Any, *, lifetime_s: float | None = None) -> None:
        self._inner = inner
        self._lifetime_s = lifetime_s
        self.calls = 0

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        self.calls += 1
        info: AccessTokenInfo = await self._inner.get_token_info(*scopes, options=options)
        if self._lifetime_s is None:
            return info
        # Expiring within the SDK's 300 s refresh margin: every request must fetch a new token.
        return AccessTokenInfo(info.token, int(time.time() + self._lifetime_s))

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("the challenge policy prefers get_token_info")

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> CountingCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def test_policies_are_user_agent_then_challenge_auth() -> None:
    policies = pipeline_policies(object(), verify_challenge_resource=True)  # type: ignore[arg-type]
    assert policies is not None
    assert [type(p).__name__ for p in policies] == ["UserAgentPolicy", "AsyncChallengeAuthPolicy"]
    assert isinstance(policies[0], UserAgentPolicy)
    assert "keyvault-secrets/" in policies[0].user_agent
    # The SDK's challenge policy builds on azure-core's public bearer-token policy.
    assert isinstance(policies[1], AsyncBearerTokenCredentialPolicy)


@pytest.mark.parametrize("version", ["4.11.0", "4.13.0", "5.0.0", "garbage"])
def test_untested_sdk_versions_fall_back_to_the_sdk_pipeline(version: str) -> None:
    assert pipeline_policies(object(), verify_challenge_resource=True, sdk_version=version) is None  # type: ignore[arg-type]


def test_dependency_pin_matches_the_tested_sdk_versions() -> None:
    """pyproject's azure-keyvault-secrets range is exactly the trimmed pipeline's tested range,
    and the installed SDK is inside it (the private challenge policy is really used)."""
    import tomllib
    from pathlib import Path

    from azure.keyvault.secrets import __version__ as installed

    from kvconfig import _client

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    spec = next(
        d for d in project["project"]["dependencies"] if d.startswith("azure-keyvault-secrets")
    )
    (low_major, low_minor), (high_major, high_minor) = _client._TRIMMED_SDK_VERSIONS
    expected = f"azure-keyvault-secrets>={low_major}.{low_minor},<{high_major}.{high_minor}"
    assert spec == expected
    assert _client._sdk_version_tested(installed)
    assert pipeline_policies(object(), verify_challenge_resource=True) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("trimmed", [True, False])
async def test_challenge_once_then_one_cached_token(
    keyvault_emulator: KeyVaultEmulator, trimmed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One 401 challenge and one token for a whole load, with either pipeline."""
    if not trimmed:
        monkeypatch.setattr("kvconfig._client.pipeline_policies", lambda *a, **k: None)
    keyvault_emulator.seed(SEED)
    keyvault_emulator.clear_requests()
    credential = CountingCredential(keyvault_emulator.credential())
    async with KeyVault(
        keyvault_emulator.vault_url, credential, ca_file=keyvault_emulator.ca_file
    ) as vault:
        settings = await vault.load(Five)
    assert settings.e == "v-e"
    assert len(gets(keyvault_emulator, status=401)) == 1
    assert len(gets(keyvault_emulator, status=200)) == 5
    assert credential.calls == 1


async def test_token_near_expiry_is_refreshed(
    keyvault_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the challenge policy a token within 300 s of expiry is replaced on every request.

    The raw reader's direct path reuses an authorised header for up to ``_REUSE_S`` seconds
    (a 401 sends it back through the policy); set to 0 here so every GET consults the policy,
    whichever route the fetcher takes."""
    monkeypatch.setattr("kvconfig._rawget._REUSE_S", 0.0)
    keyvault_emulator.seed(SEED)
    credential = CountingCredential(keyvault_emulator.credential(), lifetime_s=60)
    async with KeyVault(
        keyvault_emulator.vault_url,
        credential,
        ca_file=keyvault_emulator.ca_file,
        max_concurrency=1,
    ) as vault:
        await vault.load(Five)
    assert credential.calls >= 5  # a new token for every request: refresh is live


async def test_sdk_does_not_retry_kvconfig_does(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory
) -> None:
    """503 with Retry-After: exactly one extra request, sent by kvconfig's own retry."""
    keyvault_emulator.seed({"a": "1", "b": "2"})

    class One(BaseSettings):
        a: str

    class Two(BaseSettings):
        b: str

    vault = make_vault(max_concurrency=1)
    await vault.load(One)  # challenge and token done
    keyvault_emulator.clear_requests()
    keyvault_emulator.faults.fail_next(1, status=503, retry_after=0.01)
    assert (await vault.load(Two)).b == "2"
    assert [r.status for r in keyvault_emulator.requests] == [503, 200]


async def test_raw_client_reads_with_trimmed_pipeline(keyvault_emulator: KeyVaultEmulator) -> None:
    keyvault_emulator.seed({"x": "1"})
    context = build_ssl_context(keyvault_emulator.ca_file)
    session = build_session(context, limit=4, trust_env=False)
    credential = signalling(keyvault_emulator.credential())
    client = build_secret_client(keyvault_emulator.vault_url, credential, session, trust_env=False)
    try:
        assert (await client.get_secret("x")).value == "1"
        assert credential.token_ready.is_set()
    finally:
        await client.close()
        await session.close()


async def test_proxy_variables_are_honoured(
    keyvault_emulator: KeyVaultEmulator, make_vault: VaultFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY is used when set (a dead proxy fails the load), NO_PROXY exempts hosts."""
    keyvault_emulator.seed(SEED)
    with socket_closed_port() as port:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with pytest.raises(VaultUnavailableError):
            await make_vault(startup_timeout=0.5).load(Five)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        assert (await make_vault().load(Five)).a == "v-a"


async def test_trust_env_only_when_a_proxy_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    context = build_ssl_context(None)
    async with build_session(context, limit=1, trust_env=False) as session:
        assert session.trust_env is False  # no per-request proxy/netrc lookups
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    async with build_session(context, limit=1, trust_env=False) as session:
        assert session.trust_env is True


async def test_ssl_cert_file_set_later_is_honoured(
    keyvault_emulator: KeyVaultEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyvault_emulator.seed(SEED)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    build_ssl_context(None)  # the system store, before the variable is set
    monkeypatch.setenv("SSL_CERT_FILE", str(keyvault_emulator.ca_file))
    async with KeyVault(keyvault_emulator.vault_url, keyvault_emulator.credential()) as vault:
        assert (await vault.load(Five)).b == "v-b"


class socket_closed_port:
    """A loopback port nothing listens on (bound, then released)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        return None
