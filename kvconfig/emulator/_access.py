"""Identities and their secret permissions per vault (Key Vault access policies).

An identity is what the managed-identity endpoint issues tokens for (``client_id``, as
``DefaultAzureCredential`` sends when ``AZURE_CLIENT_ID`` is set). Each has secret permissions
per vault, the ``az keyvault set-policy --secret-permissions`` set; a request outside them gets
403 ``Forbidden`` / ``AccessDenied`` in Key Vault's access-policy wording.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kvconfig.emulator._auth import DEFAULT_CLIENT_ID, DEFAULT_OBJECT_ID, TENANT_ID
from kvconfig.emulator._errors import ServiceError

__all__ = [
    "DEFAULT_CLIENT_ID",
    "PERMISSIONS",
    "AccessPolicies",
    "Identity",
    "parse_identity_flag",
]

# Secret permissions of an access policy (`az keyvault set-policy --secret-permissions`).
PERMISSIONS = frozenset({"get", "list", "set", "delete", "backup", "restore", "recover", "purge"})
_HELP = "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"


def _check(permissions: Iterable[str]) -> frozenset[str]:
    perms = frozenset(p.strip().lower() for p in permissions)
    if "all" in perms:
        return PERMISSIONS
    unknown = sorted(perms - PERMISSIONS)
    if unknown:
        raise ValueError(
            f"unknown secret permission(s) {', '.join(unknown)}; "
            f"choose from {', '.join(sorted(PERMISSIONS))} or all"
        )
    return perms


@dataclass(slots=True)
class Identity:
    """A caller: ``client_id`` (appid), ``object_id`` (oid), and its permissions.

    ``permissions`` apply to every vault not named in ``vault_permissions``. An identity with a
    ``client_secret`` is also a service principal (never shown in its repr).
    """

    client_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    permissions: frozenset[str] = PERMISSIONS
    vault_permissions: dict[str, frozenset[str]] = field(default_factory=dict)
    client_secret: str | None = field(default=None, repr=False)

    def allowed(self, vault: str) -> frozenset[str]:
        return self.vault_permissions.get(vault, self.permissions)


class AccessPolicies:
    """The identities of one emulator; the default identity (all permissions) always exists."""

    def __init__(self) -> None:
        self._identities: dict[str, Identity] = {}
        self._identities[DEFAULT_CLIENT_ID] = Identity(DEFAULT_CLIENT_ID, DEFAULT_OBJECT_ID)

    def __repr__(self) -> str:
        return f"AccessPolicies({sorted(self._identities)})"

    def add(
        self,
        client_id: str,
        permissions: Iterable[str] = PERMISSIONS,
        *,
        vaults: Mapping[str, Iterable[str]] | None = None,
        client_secret: str | None = None,
    ) -> Identity:
        """Declare (or redeclare) an identity; return it."""
        if not client_id or not client_id.strip():
            raise ValueError("an identity needs a client_id")
        identity = Identity(
            client_id,
            permissions=_check(permissions),
            vault_permissions={v: _check(p) for v, p in (vaults or {}).items()},
            client_secret=client_secret,
        )
        old = self._identities.get(client_id.lower())
        if old is not None:
            identity.object_id = old.object_id
        self._identities[client_id.lower()] = identity
        return identity

    def set_permissions(self, client_id: str, vault: str, permissions: Iterable[str]) -> None:
        """Replace an identity's permissions on one vault."""
        self.get(client_id).vault_permissions[vault] = _check(permissions)

    def get(self, client_id: str) -> Identity:
        try:
            return self._identities[client_id.lower()]
        except KeyError:
            raise KeyError(f"no identity with client_id {client_id!r}") from None

    @property
    def has_service_principals(self) -> bool:
        return any(i.client_secret is not None for i in self._identities.values())

    def find(self, client_id: str | None) -> Identity | None:
        return self._identities.get((client_id or DEFAULT_CLIENT_ID).lower())

    def authorize(self, client_id: str, vault: str, permission: str) -> None:
        """Raise 403 ``AccessDenied`` unless the identity holds ``permission`` on ``vault``."""
        identity = self.find(client_id)
        if identity is not None and permission in identity.allowed(vault):
            return
        oid = identity.object_id if identity is not None else "unknown"
        raise ServiceError(
            403,
            "Forbidden",
            f"The user, group or application 'appid={client_id};oid={oid};"
            f"iss=https://sts.windows.net/{TENANT_ID}/' does not have secrets {permission} "
            f"permission on key vault '{vault};location=local'. {_HELP}",
            "AccessDenied",
        )


def parse_identity_flag(text: str) -> tuple[str, frozenset[str], str | None]:
    """``CLIENT_ID[:PERM,PERM...][@VAULT]`` (the CLI's ``--identity``) -> parts."""
    rest, _, vault = text.partition("@")
    client_id, sep, perms = rest.partition(":")
    permissions = _check(perms.split(",")) if sep else PERMISSIONS
    return client_id.strip(), permissions, (vault.strip() or None)
