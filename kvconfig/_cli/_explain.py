"""``kvconfig explain MODULE:CLASS --vault-url URL``: which secret feeds which field; will it load?

A pre-deployment check. For every field of the Settings class (nested fields included) it shows
the secret name(s) the field maps to (the plan :meth:`kvconfig.KeyVault.load` uses), what the
vault says about that secret (found / missing / disabled / expired / not yet valid), its version
and update time, and which source would supply the value: pydantic-settings' own sources (init,
environment, dotenv, secrets directory, defaults) are run in the class's precedence order, with
the vault source where ``load()`` puts it. Name collisions and invalid names are reported, not
raised. Values are read (one GET per planned secret, so the ``get`` permission suffices) but
never shown.

Exit status: 0 when ``load()`` would succeed, 1 when it would not (a required field has no
value, a name collides or is invalid, a value does not validate) or the vault could not be read,
2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from azure.core.exceptions import ClientAuthenticationError
from pydantic_settings import BaseSettings

from kvconfig._cli._main import UsageError
from kvconfig._cli._render import Style, render_report
from kvconfig._errors import VaultAuthenticationError
from kvconfig._report import ExplainReport, explain

__all__ = ["add_parser", "import_settings_class", "run"]

_DESCRIPTION = """\
Check a pydantic-settings class against a vault without printing any value. For every field:
the secret name it maps to and the vault it was read from (every name and vault tried, in order,
with prefix chains and fallback vaults), what the vault holds (found, missing, disabled,
expired), version and update time, and which source would supply the value (environment,
dotenv, a Key Vault reference in them, vault or the default). Name collisions and invalid
names are reported. Exits 1 if KeyVault.load() would fail, so it can gate a deployment.
"""

_EPILOG = """\
examples:
  kvconfig explain myapp.settings:Settings --vault-url https://myvault.vault.azure.net
  kvconfig explain myapp.settings:Settings --prefix prod- --json > report.json
  kvconfig explain myapp.settings:Settings --prefix stg- --prefix '' \\
      --vault shared=https://shared.vault.azure.net --fallback-vault https://legacy.vault.azure.net
  kvconfig explain demo_settings:Settings --vault-url "$VAULT_URL"   (from examples/, with
      the environment printed by `kvconfig emulator`)

The credential is azure.identity's DefaultAzureCredential (environment variables, workload
identity, managed identity, Azure CLI, ...). Each planned secret is read with one GET, so the
"get" permission is enough; values are never printed.
Exit status: 0 load() would succeed; 1 it would not, or the vault could not be read; 2 usage.
"""


# -- the command ------------------------------------------------------------------------------


def import_settings_class(spec: str) -> type[BaseSettings]:
    """Import ``MODULE:CLASS`` (the current directory is importable, as for ``python -m``).

    Raises:
        UsageError: Malformed spec, import failure, no such class, or not a ``BaseSettings``.
    """
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise UsageError(f"expected MODULE:CLASS (e.g. myapp.settings:Settings), got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cannot import module {module_name!r}: no module named {exc.name!r}"
        ) from exc
    except Exception as exc:
        # The module's own error may quote a value (a Settings() built at import time), so
        # only its type is shown; --debug shows the traceback.
        raise UsageError(
            f"importing module {module_name!r} failed: {type(exc).__name__} "
            "(run with --debug for the traceback)"
        ) from exc
    target: Any = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not (isinstance(target, type) and issubclass(target, BaseSettings)):
        raise UsageError(f"{spec} is not a pydantic-settings BaseSettings subclass")
    return target


def add_parser(subparsers: Any) -> None:
    """Register the ``explain`` sub-command on the ``kvconfig`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain",
        help="show which secret feeds which field, and whether the class would load",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "settings",
        metavar="MODULE:CLASS",
        help="the Settings class, e.g. myapp.settings:Settings (the current directory is on "
        "the import path)",
    )
    parser.add_argument(
        "--vault-url",
        default=os.environ.get("VAULT_URL"),
        metavar="URL",
        help="the vault, e.g. https://myvault.vault.azure.net (default: $VAULT_URL)",
    )
    parser.add_argument(
        "--ca-file",
        type=Path,
        metavar="PATH",
        help="PEM file of a private CA to trust instead of the system store (an emulator, a "
        "TLS-inspecting proxy); SSL_CERT_FILE is honoured without it",
    )
    parser.add_argument(
        "--prefix",
        action="append",
        default=None,
        metavar="P",
        help="the prefix given to KeyVault(prefix=...), prepended to field-derived names; "
        "repeat it for a chain tried in order (--prefix stg- --prefix '')",
    )
    parser.add_argument(
        "--vault",
        action="append",
        default=[],
        metavar="ALIAS=URL",
        help="a vault alias, as KeyVault(vaults={ALIAS: URL}) for Secret(vault=ALIAS) (repeatable)",
    )
    parser.add_argument(
        "--fallback-vault",
        action="append",
        default=[],
        metavar="URL",
        help="a vault looked up, in order, for secrets the primary vault lacks, as "
        "KeyVault(fallback_vaults=[...]) (repeatable; an alias works too)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document instead of the table"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up when the vault stays unavailable this long (default 30)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command."""
    if not args.vault_url:
        raise UsageError("--vault-url is required (or set VAULT_URL)")
    settings_cls = import_settings_class(args.settings)
    identity_logger = logging.getLogger("azure.identity")
    level = identity_logger.level
    if not getattr(args, "verbose", 0):
        # DefaultAzureCredential logs a multi-line WARNING listing every credential it tried;
        # the error below says what failed in one line, and -v shows the list.
        identity_logger.setLevel(logging.ERROR)
    try:
        report = asyncio.run(_explain_with_default_credential(settings_cls, args))
    except VaultAuthenticationError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ClientAuthenticationError) or cause.response is not None:
            raise
        reason = (cause.message or "").strip().splitlines()[:1]
        raise VaultAuthenticationError(
            f"{exc}: {reason[0] if reason else 'no token'} (kvconfig -v explain ... lists each "
            "credential DefaultAzureCredential tried)",
            vault_url=exc.vault_url,
            secret_name=exc.secret_name,
        ) from cause
    finally:
        identity_logger.setLevel(level)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render_report(report, Style.for_stream(sys.stdout)))
    return 0 if report.ok else 1


async def _explain_with_default_credential(
    settings_cls: type[BaseSettings], args: argparse.Namespace
) -> ExplainReport:
    # Imported here: azure.identity is slow to import and only this command needs it.
    from azure.identity.aio import DefaultAzureCredential

    return await explain(
        settings_cls,
        vault_url=args.vault_url,
        credential=DefaultAzureCredential(),
        ca_file=args.ca_file,
        prefix=tuple(args.prefix) if args.prefix else "",
        vaults=_aliases(args.vault),
        fallback_vaults=args.fallback_vault,
        timeout=args.timeout,
        name=args.settings,
    )


def _aliases(items: list[str]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for item in items:
        alias, sep, url = item.partition("=")
        if not sep or not alias or not url:
            raise UsageError(f"--vault expects ALIAS=URL, got {item!r}")
        aliases[alias] = url
    return aliases
