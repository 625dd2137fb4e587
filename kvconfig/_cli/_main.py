"""``kvconfig`` command line: one sub-command per module, imported only when used.

Errors are reported as one line on stderr (``kvconfig explain: error: ...``) with exit status 1
(2 for usage errors, as argparse does). ``--debug`` or ``KVCONFIG_DEBUG=1`` shows the traceback
instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from pydantic import ValidationError

from kvconfig._errors import KvConfigError
from kvconfig._redact import safe_errors

__all__ = ["UsageError", "build_parser", "main"]

# sub-command name -> module that defines ``add_parser(subparsers)`` and whose parser sets
# ``func(args) -> int`` via ``set_defaults``. Each module owns its own options and help text.
_COMMANDS: dict[str, str] = {
    "demo": "kvconfig._cli._demo",
    "explain": "kvconfig._cli._explain",
    "emulator": "kvconfig.emulator._cli",
}

_EPILOG = """\
examples:
  kvconfig demo            see it all work against an embedded local vault (no Azure account)
  kvconfig emulator        run a local vault; prints `export VAULT_URL=...` lines for a shell
  kvconfig explain myapp.settings:Settings --vault-url https://myvault.vault.azure.net
                           which secret feeds which field; exit 1 if the class would not load

Run "kvconfig COMMAND --help" for the options of a command.
Environment: KVCONFIG_DEBUG=1 shows tracebacks (as --debug); NO_COLOR=1 disables colour.
Exit status: 0 success, 1 failure (one line on stderr), 2 usage error.
"""


class UsageError(Exception):
    """A command was given something it cannot use (reported as one line, exit status 2)."""


def _package_version() -> str:
    try:
        return version("kvconfig")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``kvconfig`` parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="kvconfig",
        description=(
            "Load pydantic-settings classes from Azure Key Vault, concurrently, with refresh;\n"
            "and run a local Key Vault emulator for development and tests."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=_env_flag("KVCONFIG_DEBUG"),
        help="show full tracebacks instead of one-line errors (also: KVCONFIG_DEBUG=1)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log the kvconfig logger to stderr: -v for INFO (one line per load), -vv for DEBUG",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line kvconfig messages joined with '; ')."""
    if isinstance(exc, ValidationError):
        # pydantic's own message quotes the input, which may be a secret.
        errors = safe_errors(exc)
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kvconfig`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("kvconfig").setLevel(logging.DEBUG if args.verbose > 1 else logging.INFO)
    prog = f"kvconfig {args.command}"
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kvconfig demo | head`: the reader left. Silence the flush at exit as well.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except UsageError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KvConfigError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"{prog}: error: {type(exc).__name__}: {_one_line(exc)} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
