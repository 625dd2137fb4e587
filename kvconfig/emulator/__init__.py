"""A local Azure Key Vault (secrets) emulator that the unmodified Azure SDK talks to over TLS.

Public names: :class:`KeyVaultEmulator`, :class:`CertificateAuthority`, :class:`RequestRecord`,
:class:`Faults`, :class:`ServiceError`, :class:`EmulatorThread` (for sync code), and for Event
Grid delivery :class:`EventSubscription`, :class:`DeliveryRecord`,
:class:`SubscriptionValidationError`.
Run one from the shell with ``kvconfig emulator``; in tests use the ``keyvault_emulator`` fixture
(:mod:`kvconfig.pytest_plugin`).

Behaviour worth knowing (decisions where the real service is undocumented):

- Vaults are told apart by authority: each named vault listens on its own port; ids are built
  from the request's ``Host`` (``https://127.0.0.1:PORT/secrets/{name}/{version}``).
- Auth: a missing, empty, malformed or foreign bearer gets 401 ``Unauthorized`` with the real
  ``WWW-Authenticate`` challenge, decided from the header alone before routing or reading the
  body. Only HMAC-signed tokens of this emulator are accepted (24 h lifetime by default), for
  audience ``https://vault.azure.net`` (another: 401 ``AKV10022``); expired or revoked (fault)
  tokens: 401 ``AKV10032`` (own wording). Identities (:class:`Identity`) hold access-policy
  secret permissions per vault; a refusal is 403 ``Forbidden`` / ``AccessDenied``. Reading a
  deleted secret needs ``list``, as in Key Vault's REST reference.
- ``https://NAME.vault.azure.net`` works through the emulator's CONNECT proxy (``HTTPS_PROXY``),
  which splices it to vault NAME (created on first use); other hosts are tunnelled untouched.
- Versions of a name that does not exist (or is soft-deleted) list as an empty page (200).
- A request aiohttp cannot parse gets aiohttp's own 400 ``text/plain`` answer (public API only);
  everything that parses gets Key Vault's JSON error shape; never a 5xx.
- ``maxresults`` outside 1..25 is refused with 400 ``BadParameter`` (not clamped), so code that
  passes here does not depend on larger pages than the spec allows. ``$skiptoken`` is an opaque
  base64url marker; ``nextLink`` is absolute.
- Deletes are visible at once (the SDK poller finishes on its first poll), so 409
  ``ObjectIsBeingRecovered`` never occurs. Soft-delete is always on (``Recoverable+Purgeable``,
  90 days), as on real vaults since 2025; nothing is purged automatically.
- Own wording (real text unknown), all Azure-shaped: invalid or missing api-version, malformed
  JSON, non-object body, missing ``value``, over-size value (> 25 KiB of UTF-8) or content type
  (> 255 characters) -> 400 ``BadParameter``; wrong content type -> 415
  ``UnsupportedMediaType``; body over 1 MiB -> 413; unknown route -> 404 ``NotFound``; wrong
  method -> 405 ``MethodNotAllowed`` with ``Allow``; restore over an existing name -> 409
  ``Conflict``; bad backup blob -> 400 ``BadParameter``.
- Backup blobs carry the real prefix and AES-GCM-sealed JSON under a constant key: opaque and
  tamper-evident, restorable into any emulator, not confidential.
- ``exp``/``nbf`` are stored and returned but not enforced (as on the real service).
- Injected faults: 429 ``Throttled`` (real message), 500 ``InternalServerError``, 503
  ``ServiceUnavailable``; ``Retry-After`` only when asked for. ``RequestRecord.status`` is 0 for
  a connection reset on purpose.
- Event Grid: ``await emu.subscribe(url)`` delivers ``SecretNewVersionCreated`` (every new
  version: set, restore, recover, ``set_secret``/``seed``) and, on ``emu.scan_expiry()``,
  ``SecretNearExpiry``/``SecretExpired`` to a webhook after its validation handshake, with
  Event Grid's retry rules; attempts are logged in ``emu.deliveries`` (see ``_events``).
- With ``data=``, SQLite (WAL, ``synchronous=FULL``) commits each write in one transaction on
  a single writer thread before the response is sent; reads are served from memory. One
  emulator per file: it holds SQLite's exclusive lock, so a second start on the file fails.
"""

from __future__ import annotations

from kvconfig.emulator._access import Identity
from kvconfig.emulator._certs import CertificateAuthority
from kvconfig.emulator._emulator import KeyVaultEmulator
from kvconfig.emulator._errors import ServiceError
from kvconfig.emulator._events import DeliveryRecord, EventSubscription, SubscriptionValidationError
from kvconfig.emulator._faults import Faults
from kvconfig.emulator._server import RequestRecord
from kvconfig.emulator._thread import EmulatorThread

__all__ = [
    "CertificateAuthority",
    "DeliveryRecord",
    "EmulatorThread",
    "EventSubscription",
    "Faults",
    "Identity",
    "KeyVaultEmulator",
    "RequestRecord",
    "ServiceError",
    "SubscriptionValidationError",
]
