"""Pure helpers: error classification, loopback detection, cache semantics."""

from __future__ import annotations

import pytest
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError

from kvconfig import (
    ConfigurationError,
    KeyVault,
    VaultError,
)
from kvconfig._cache import CacheKey, SecretCache
from kvconfig._client import is_loopback
from kvconfig._model import FetchedSecret, SecretStatus
from kvconfig._translate import Outcome, classify

URL = "https://example.vault.azure.net"


@pytest.mark.parametrize("exc", [ServiceRequestError("down"), ServiceResponseError("cut")])
def test_connection_errors_are_transient(exc: Exception) -> None:
    verdict = classify(exc, vault_url=URL, secret_name="a")
    assert verdict is not None and verdict.outcome is Outcome.TRANSIENT


def test_other_azure_errors_are_permanent_and_foreign_errors_unclassified() -> None:
    verdict = classify(AzureError("odd"), vault_url=URL, secret_name="a")
    assert verdict is not None and verdict.outcome is Outcome.PERMANENT
    assert isinstance(verdict.error, VaultError) and verdict.error.vault_url == URL
    assert classify(RuntimeError("bug"), vault_url=URL, secret_name="a") is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("myvault.vault.azure.net", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_detection(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_cache_ttl_max_age_and_disabled() -> None:
    now = [0.0]
    cache = SecretCache(10, clock=lambda: now[0])
    key = CacheKey(URL, "a", None)
    secret = FetchedSecret(name="a", status=SecretStatus.FOUND, value="v")
    cache.put(key, secret)
    now[0] = 5
    assert cache.get(key) is secret
    assert cache.get(key, max_age=4) is None
    assert cache.get(key, max_age=0) is None
    now[0] = 10
    assert cache.get(key) is None
    disabled = SecretCache(0)
    disabled.put(key, secret)
    assert len(disabled) == 0 and disabled.get(key) is None


def test_fetched_secret_repr_hides_the_value() -> None:
    secret = FetchedSecret(name="a", status=SecretStatus.FOUND, value="hunter2")
    assert "hunter2" not in repr(secret) and "'a'" in repr(secret)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vault_url": "http://insecure.example"},
        {"prefix": "bad_prefix"},
        {"max_concurrency": 0},
        {"ttl": -1},
        {"ca_file": "/nonexistent/ca.pem"},
    ],
)
async def test_bad_options_raise_configuration_error(kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"vault_url": URL, **kwargs}
    url = str(options.pop("vault_url"))
    with pytest.raises(ConfigurationError):
        KeyVault(url, credential=None, **options)  # type: ignore[arg-type]
