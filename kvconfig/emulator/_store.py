"""The vaults' contents: secrets with versions and soft-delete, in memory, optionally in SQLite.

Memory is the working copy and always authoritative while running. With a database path every
mutation also marks the touched secret dirty; :meth:`Store.commit` (or :meth:`Store.commit_async`,
which runs it on a single writer thread off the event loop) writes each dirty secret as one row in
one transaction, WAL mode, ``synchronous=FULL``, so an acknowledged write survives ``kill -9``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets as _random
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kvconfig.emulator._errors import ServiceError

__all__ = [
    "MAX_CONTENT_TYPE",
    "MAX_VALUE_BYTES",
    "RECOVERABLE_DAYS",
    "RECOVERY_LEVEL",
    "Secret",
    "SecretVersion",
    "Store",
    "new_version",
]

NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_VALUE_BYTES = 25 * 1024
MAX_CONTENT_TYPE = 255
RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"
_DAY = 86400

# Backup blobs: the real service's prefix, then AES-GCM over zlib'd JSON. The key is a constant so
# a blob restores into any emulator (as a real one restores within a subscription); the point is
# an opaque, tamper-evident blob, not confidentiality.
_BACKUP_PREFIX = b")AzureKeyVaultSecretBackupV1.microsoft.com"
_BACKUP_KEY = bytes.fromhex("6b76636f6e6669672d656d756c61746f722d6261636b75702d6b65792d303031")


def new_version() -> str:
    """A fresh 32-character lowercase hex version id."""
    return _random.token_hex(16)


def _now() -> int:
    return int(time.time())


@dataclass(slots=True)
class SecretVersion:
    """One version of a secret. Timestamps are integer Unix seconds."""

    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    not_before: int | None
    expires: int | None
    created: int
    updated: int

    def __repr__(self) -> str:  # never show the value
        return f"SecretVersion(version={self.version!r}, enabled={self.enabled})"


@dataclass(slots=True)
class Secret:
    """A secret name with its versions in creation order (latest last) and its delete state."""

    name: str
    versions: list[SecretVersion] = field(default_factory=list)
    deleted_date: int | None = None
    scheduled_purge: int | None = None

    @property
    def latest(self) -> SecretVersion:
        return self.versions[-1]

    @property
    def deleted(self) -> bool:
        return self.deleted_date is not None

    def version(self, version: str) -> SecretVersion | None:
        for v in self.versions:
            if v.version == version:
                return v
        return None

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Secret:
        versions = [SecretVersion(**v) for v in doc["versions"]]
        return cls(doc["name"], versions, doc["deleted_date"], doc["scheduled_purge"])


def check_name(name: str) -> str:
    """Validate a secret name; return its lookup key (names are case-insensitive)."""
    if not NAME_RE.fullmatch(name):  # not match(): its `$` also matches before a final "\n"
        raise ServiceError.invalid_name(name)
    return name.lower()


def _check_value(value: str) -> None:
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON) is not text
        raise ServiceError.bad_parameter("The secret value is not valid Unicode text.") from None
    if size > MAX_VALUE_BYTES:
        raise ServiceError.bad_parameter(
            f"The secret value exceeds the maximum allowed size of {MAX_VALUE_BYTES} bytes."
        )


def _check_content_type(content_type: str | None) -> None:
    if content_type is not None and len(content_type) > MAX_CONTENT_TYPE:
        raise ServiceError.bad_parameter(
            f"The content type exceeds the maximum allowed length of {MAX_CONTENT_TYPE} characters."
        )


_UNSET: Any = object()


class _Database:
    """SQLite file holding one row per (vault, secret). Used from one thread at a time."""

    def __init__(self, path: Path) -> None:
        # timeout=0: a file held by another emulator is refused at once, not after 5 s.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0)
        # One emulator per file. Each keeps the vaults in memory and writes whole rows, so a
        # second one on the file would overwrite the first's acknowledged versions. Take SQLite's
        # exclusive lock now and hold it while open (the OS drops it on exit, even on kill -9).
        self._conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            self._conn.execute("BEGIN EXCLUSIVE")
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._conn.close()
            raise sqlite3.OperationalError(
                f"{path} is in use by another emulator ({exc})"
            ) from None
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS secrets (vault TEXT NOT NULL, key TEXT NOT NULL, "
            "doc TEXT NOT NULL, PRIMARY KEY (vault, key))"
        )
        self._conn.execute("CREATE TABLE IF NOT EXISTS vaults (name TEXT PRIMARY KEY)")
        self._lock = threading.Lock()

    def load(self) -> Iterator[tuple[str, str, str]]:
        with self._lock:
            yield from self._conn.execute("SELECT name, '', '' FROM vaults").fetchall()
            yield from self._conn.execute("SELECT vault, key, doc FROM secrets").fetchall()

    def write(self, rows: list[tuple[str, str | None, str | None]]) -> None:
        """Apply rows ``(vault, key, doc)`` in one transaction; ``doc=None`` deletes, ``key=None``
        registers a vault."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for vault, key, doc in rows:
                    if key is None:
                        self._conn.execute("INSERT OR IGNORE INTO vaults VALUES (?)", (vault,))
                    elif doc is None:
                        self._conn.execute(
                            "DELETE FROM secrets WHERE vault = ? AND key = ?", (vault, key)
                        )
                    else:
                        self._conn.execute(
                            "INSERT OR REPLACE INTO secrets VALUES (?, ?, ?)", (vault, key, doc)
                        )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Store:
    """All vaults of one emulator. Every method is synchronous and cheap (pure memory).

    Mutations raise :class:`ServiceError` for the service's error cases. When a database is
    attached, call :meth:`commit` / :meth:`commit_async` after a mutation to make it durable.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._vaults: dict[str, dict[str, Secret]] = {}
        self._dirty: dict[tuple[str, str | None], None] = {}
        self._db: _Database | None = None
        self._writer: ThreadPoolExecutor | None = None
        # Called (vault, secret, version) whenever a version becomes the current one through
        # set, restore or recover: the Event Grid publisher's hook. Must not block.
        self.on_new_version: Callable[[str, Secret, SecretVersion], None] | None = None
        if path is not None:
            self._db = _Database(path)
            # One writer thread keeps commits in submission order without blocking the loop.
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvemu-sqlite")
            for vault, key, doc in self._db.load():
                secrets = self._vaults.setdefault(vault, {})
                if key:
                    secrets[key] = Secret.from_doc(json.loads(doc))

    @property
    def vault_names(self) -> list[str]:
        return list(self._vaults)

    def close(self) -> None:
        """Flush pending writes and close the database. Idempotent."""
        if self._db is not None:
            self.commit()
            assert self._writer is not None
            self._writer.shutdown(wait=True)
            self._db.close()
            self._db = None

    # -- durability ----------------------------------------------------------------------------

    def _mark(self, vault: str, key: str | None) -> None:
        if self._db is not None:
            self._dirty[(vault, key)] = None

    def _take_rows(self) -> list[tuple[str, str | None, str | None]]:
        rows: list[tuple[str, str | None, str | None]] = []
        for vault, key in self._dirty:
            if key is None:
                rows.append((vault, None, None))
                continue
            secret = self._vaults.get(vault, {}).get(key)
            rows.append((vault, key, None if secret is None else json.dumps(secret.to_doc())))
        self._dirty.clear()
        return rows

    def commit(self) -> None:
        """Write pending changes and wait until they are durable (blocks the caller).

        Goes through the same single writer thread as :meth:`commit_async`, so snapshots land
        in the order they were taken.
        """
        if self._db is not None and self._dirty:
            assert self._writer is not None
            self._writer.submit(self._db.write, self._take_rows()).result()

    async def commit_async(self) -> None:
        """Write pending changes on the writer thread; returns once they are durable."""
        if self._db is None or not self._dirty:
            return
        assert self._writer is not None
        rows = self._take_rows()  # snapshot on the loop thread; order is kept by the one writer
        await asyncio.get_running_loop().run_in_executor(self._writer, self._db.write, rows)

    # -- vaults --------------------------------------------------------------------------------

    def add_vault(self, vault: str) -> None:
        if vault not in self._vaults:
            self._vaults[vault] = {}
            self._mark(vault, None)

    def _secrets(self, vault: str) -> dict[str, Secret]:
        try:
            return self._vaults[vault]
        except KeyError:
            raise KeyError(f"no vault named {vault!r}") from None

    # -- reads ---------------------------------------------------------------------------------

    def _active(self, vault: str, name: str) -> Secret:
        secret = self._secrets(vault).get(check_name(name))
        if secret is None or secret.deleted:
            raise ServiceError.secret_not_found(name)
        return secret

    def _deleted(self, vault: str, name: str) -> Secret:
        secret = self._secrets(vault).get(check_name(name))
        if secret is None or not secret.deleted:
            raise ServiceError.deleted_secret_not_found(name)
        return secret

    def get_version(self, vault: str, name: str, version: str = "") -> tuple[Secret, SecretVersion]:
        """The latest (empty ``version``) or a given version of an active secret."""
        secret = self._active(vault, name)
        if not version:
            return secret, secret.latest
        found = secret.version(version.lower())
        if found is None:
            raise ServiceError.secret_not_found(f"{name}/{version}")
        return secret, found

    def get_value(self, vault: str, name: str, version: str = "") -> tuple[Secret, SecretVersion]:
        """Like :meth:`get_version`, but a disabled version is 403 ``SecretDisabled``."""
        secret, found = self.get_version(vault, name, version)
        if not found.enabled:
            raise ServiceError.disabled()
        return secret, found

    def list_secrets(self, vault: str) -> list[Secret]:
        """Active secrets, sorted by lookup key (disabled ones included)."""
        items = self._secrets(vault).items()
        return [s for _, s in sorted(items) if not s.deleted]

    def list_versions(self, vault: str, name: str) -> tuple[Secret | None, list[SecretVersion]]:
        """Versions of an active secret; none (not 404) for a name that does not exist or is
        soft-deleted, as Key Vault lists the versions of an unknown name as an empty page."""
        secret = self._secrets(vault).get(check_name(name))
        if secret is None or secret.deleted:
            return None, []
        return secret, list(secret.versions)

    def list_deleted(self, vault: str) -> list[Secret]:
        items = self._secrets(vault).items()
        return [s for _, s in sorted(items) if s.deleted]

    def get_deleted(self, vault: str, name: str) -> Secret:
        return self._deleted(vault, name)

    # -- writes --------------------------------------------------------------------------------

    def set(
        self,
        vault: str,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
        enabled: bool = True,
        not_before: int | None = None,
        expires: int | None = None,
        created: int | None = None,
    ) -> tuple[Secret, SecretVersion]:
        """Add a new version (creating the secret if needed), created now or at ``created``."""
        key = check_name(name)
        _check_value(value)
        _check_content_type(content_type)
        secrets = self._secrets(vault)
        secret = secrets.get(key)
        if secret is not None and secret.deleted:
            raise ServiceError.deleted_but_recoverable(secret.name)
        if secret is None:
            secret = secrets[key] = Secret(name)
        now = _now() if created is None else created
        version = SecretVersion(
            new_version(),
            value,
            content_type,
            dict(tags) if tags is not None else None,
            enabled,
            not_before,
            expires,
            now,
            now,
        )
        secret.versions.append(version)
        self._mark(vault, key)
        self._new_version(vault, secret)
        return secret, version

    def update(
        self,
        vault: str,
        name: str,
        version: str = "",
        *,
        content_type: str | None = _UNSET,
        tags: dict[str, str] | None = _UNSET,
        enabled: bool | None = None,
        not_before: int | None = _UNSET,
        expires: int | None = _UNSET,
    ) -> tuple[Secret, SecretVersion]:
        """Change properties of one version; arguments left out stay unchanged."""
        secret, found = self.get_version(vault, name, version)
        if content_type is not _UNSET:
            _check_content_type(content_type)
            found.content_type = content_type
        if tags is not _UNSET:
            found.tags = dict(tags) if tags is not None else None
        if enabled is not None:
            found.enabled = enabled
        if not_before is not _UNSET:
            found.not_before = not_before
        if expires is not _UNSET:
            found.expires = expires
        found.updated = _now()
        self._mark(vault, check_name(name))
        return secret, found

    def delete(self, vault: str, name: str) -> Secret:
        """Soft-delete all versions; visible under the deleted secrets at once."""
        secret = self._active(vault, name)
        secret.deleted_date = _now()
        secret.scheduled_purge = secret.deleted_date + RECOVERABLE_DAYS * _DAY
        self._mark(vault, check_name(name))
        return secret

    def recover(self, vault: str, name: str) -> Secret:
        secret = self._deleted(vault, name)
        secret.deleted_date = None
        secret.scheduled_purge = None
        self._mark(vault, check_name(name))
        self._new_version(vault, secret)
        return secret

    def purge(self, vault: str, name: str) -> None:
        self._deleted(vault, name)
        key = check_name(name)
        del self._secrets(vault)[key]
        self._mark(vault, key)

    # -- backup / restore ----------------------------------------------------------------------

    def backup(self, vault: str, name: str) -> bytes:
        """An opaque blob holding every version of an active secret."""
        secret = self._active(vault, name)
        doc = secret.to_doc()
        doc["deleted_date"] = doc["scheduled_purge"] = None
        nonce = _random.token_bytes(12)
        sealed = AESGCM(_BACKUP_KEY).encrypt(nonce, zlib.compress(json.dumps(doc).encode()), None)
        return _BACKUP_PREFIX + nonce + sealed

    def restore(self, vault: str, blob: bytes) -> Secret:
        """Restore a :meth:`backup` blob; 409 if the name exists (active or deleted)."""
        try:
            if not blob.startswith(_BACKUP_PREFIX):
                raise ValueError("bad prefix")
            rest = blob[len(_BACKUP_PREFIX) :]
            plain = AESGCM(_BACKUP_KEY).decrypt(rest[:12], rest[12:], None)
            secret = _backup_secret(plain)
            key = check_name(secret.name)
        except (
            ValueError,
            InvalidTag,
            zlib.error,
            KeyError,
            TypeError,
            RecursionError,
            ServiceError,
        ):
            raise ServiceError.bad_parameter("Backup blob could not be decrypted.") from None
        secrets = self._secrets(vault)
        if key in secrets:
            raise ServiceError.restore_conflict(secret.name)
        secrets[key] = secret
        self._mark(vault, key)
        self._new_version(vault, secret)
        return secret

    def _new_version(self, vault: str, secret: Secret) -> None:
        if self.on_new_version is not None:
            self.on_new_version(vault, secret, secret.latest)


# The backup key is in this source, so a blob's content is client input like any other: bound
# what it inflates to and check every field, or a forged blob could store a secret the emulator
# cannot serve (no versions, a non-string value) or exhaust memory (a zlib bomb).
_MAX_BACKUP_JSON = 32 * 1024 * 1024  # > 1000 versions of 25 KiB values
_VERSION_RE = re.compile(r"[0-9a-f]{32}")


def _backup_secret(sealed_plain: bytes) -> Secret:
    """The active secret a decrypted backup holds; ``ValueError``/``TypeError`` if malformed."""
    inflater = zlib.decompressobj()
    raw = inflater.decompress(sealed_plain, _MAX_BACKUP_JSON)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError("backup too large or truncated")
    secret = Secret.from_doc(json.loads(raw))
    if not secret.versions or secret.deleted_date is not None or secret.scheduled_purge is not None:
        raise ValueError("a backup holds an active secret with at least one version")
    ids = set()
    for v in secret.versions:
        if not (
            isinstance(v.version, str)
            and _VERSION_RE.fullmatch(v.version)
            and isinstance(v.value, str)
            and (v.content_type is None or isinstance(v.content_type, str))
            and (v.tags is None or _is_str_map(v.tags))
            and isinstance(v.enabled, bool)
            and all(_is_time(t) for t in (v.created, v.updated))
            and all(t is None or _is_time(t) for t in (v.not_before, v.expires))
        ):
            raise ValueError("malformed version in backup")
        _check_value(v.value)
        _check_content_type(v.content_type)
        ids.add(v.version)
    if len(ids) != len(secret.versions):
        raise ValueError("duplicate version in backup")
    return secret


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _is_time(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def b64url_encode(data: bytes) -> str:
    """base64url without padding, as Key Vault sends binary values."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url_encode`; raises ``ValueError`` on malformed input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc
