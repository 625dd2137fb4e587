"""``kvconfig`` command line: one sub-command per module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# sub-command name -> module that defines ``add_parser(subparsers)`` and whose parser sets
# ``func(args) -> int`` via ``set_defaults``. Each module owns its own options and help text.
_COMMANDS: dict[str, str] = {
    "emulator": "kvconfig.emulator._cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvconfig",
        description="Load pydantic-settings classes from Azure Key Vault, and run a local vault.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
