"""``kvconfig`` command line: one sub-command per module, imported only when it runs.

``kvconfig --help`` and ``kvconfig --version`` import no sub-command module (nor the Azure SDK):
the top-level parser lists each command from the one-line help kept here, and only the command
being run (or asked for ``--help``) has its module imported and its full parser registered.

Errors are reported as one line on stderr (``kvconfig explain: error: ...``) with exit status 1
(2 for usage errors, as argparse does). Only kvconfig's own messages are printed (its errors are
built from names, never values); any other exception prints its type only, since its message may
quote a value (a pydantic input, an SDK response body). ``--debug`` or ``KVCONFIG_DEBUG=1``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Collection, Sequence

from kvconfig._errors import KvConfigError

__all__ = ["UsageError", "build_parser", "main"]

# sub-command name -> (module that defines ``add_parser(subparsers)`` and whose parser sets
# ``func(args) -> int`` via ``set_defaults``, the one-line help shown by ``kvconfig --help``).
# Each module owns its options and full help; the line here must equal the module's
# (tests/cli/test_cli.py checks), so that listing the commands imports none of them.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "kvconfig._cli._demo",
        "see it all work against an embedded local vault (no Azure account needed)",
    ),
    "explain": (
        "kvconfig._cli._explain",
        "show which secret feeds which field, and whether the class would load",
    ),
    "emulator": ("kvconfig.emulator._cli", "run a local Azure Key Vault (secrets API over HTTPS)"),
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


class _Version(argparse.Action):
    """``--version``: reads the installed version only when asked (importlib.metadata is slow)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("kvconfig")
        except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
            found = "unknown"
        print(f"{parser.prog} {found}")  # on stdout, as argparse's own version action
        parser.exit()


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``kvconfig`` parser; ``commands`` (default: all) get their full sub-parser.

    The other sub-commands are listed with their one-line help and no options, so building the
    parser imports only the modules of ``commands``.
    """
    parser = argparse.ArgumentParser(
        prog="kvconfig",
        description=(
            "Load pydantic-settings classes from Azure Key Vault, concurrently, with refresh;\n"
            "and run a local Key Vault emulator for development and tests."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
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
    for name, (module_name, summary) in _COMMANDS.items():
        if commands is None or name in commands:
            importlib.import_module(module_name).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (top-level options take no value, so it is the first
    word that is not an option), or None."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in _COMMANDS else None
    return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _one_line(exc: KvConfigError | UsageError) -> str:
    """A kvconfig message on one line (multi-line messages joined with '; ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kvconfig`` command line; returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    command = _command_in(argv)
    parser = build_parser(() if command is None else (command,))
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
        # Not a kvconfig message: it may quote a value (pydantic's input, an SDK response
        # body), so only its type is shown.
        print(
            f"{prog}: error: {type(exc).__name__} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
