"""Costs nothing until used: what importing kvconfig, its pytest plugin and its CLI pulls in.

These check the *set* of imported modules in a fresh interpreter (no timings): the heavy
dependencies (Azure SDK, aiohttp, pydantic, cryptography, the emulator) must stay out until a
name or fixture that needs them is used. Figures are in README ("Import cost").
"""

from __future__ import annotations

import json
import subprocess
import sys

import kvconfig

HEAVY = ("azure", "aiohttp", "pydantic", "pydantic_settings", "pydantic_core", "cryptography")


def imported_after(code: str) -> set[str]:
    """Top-level heavy packages and kvconfig modules in sys.modules after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {HEAVY!r} and '.' not in m or m.startswith('kvconfig'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_kvconfig_imports_no_dependency() -> None:
    assert imported_after("import kvconfig") == {"kvconfig"}


def test_pytest_plugin_imports_nothing_heavy() -> None:
    loaded = imported_after("import kvconfig.pytest_plugin")
    assert loaded == {"kvconfig", "kvconfig.pytest_plugin"}


def test_first_use_of_a_name_imports_its_module() -> None:
    loaded = imported_after("import kvconfig\nkvconfig.KeyVault")
    assert {"azure", "aiohttp", "pydantic_settings", "kvconfig._vault"} <= loaded
    assert "kvconfig.emulator" not in loaded


def test_every_exported_name_resolves_from_its_module() -> None:
    assert set(kvconfig._WHERE) == set(kvconfig.__all__)
    for name in kvconfig.__all__:
        value = getattr(kvconfig, name)
        assert value.__module__ == kvconfig._WHERE[name], name
    assert set(kvconfig.__all__) <= set(dir(kvconfig))


def test_cli_help_and_version_import_no_sub_command() -> None:
    for argv in (["--version"], ["--help"], ["-v", "--help"]):
        loaded = imported_after(
            "from kvconfig._cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass"
        )
        assert loaded == {"kvconfig", "kvconfig._cli", "kvconfig._cli._main", "kvconfig._errors"}


def test_cli_sub_command_help_imports_only_that_command() -> None:
    loaded = imported_after(
        "import contextlib, io\nfrom kvconfig._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['explain', '--help'])\n    except SystemExit:\n        pass"
    )
    assert "kvconfig._cli._explain" in loaded
    assert not loaded & {"kvconfig._cli._demo", "kvconfig.emulator", "kvconfig.emulator._cli"}
