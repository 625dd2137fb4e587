"""The ``kvconfig`` command line: complete help, one-line errors, ``--debug`` tracebacks."""

from __future__ import annotations

import argparse
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kvconfig._cli._main import build_parser, main
from kvconfig.emulator import CertificateAuthority, EmulatorThread

from .conftest import child_env, run_kvconfig


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def test_every_option_of_every_command_is_described() -> None:
    parser = build_parser()
    commands = subcommands(parser)
    assert {"demo", "explain", "emulator"} <= set(commands)
    for name, sub in [("kvconfig", parser), *commands.items()]:
        assert sub.description, name
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}"
    for name in ("kvconfig", "demo", "explain", "emulator"):
        sub = parser if name == "kvconfig" else commands[name]
        assert sub.epilog is not None and "examples:" in sub.epilog, name


def test_command_list_matches_each_command_own_help() -> None:
    """``kvconfig --help`` lists commands from _main's table (importing none): same lines."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest: a.help for a in action._choices_actions}
    for lazy in build_parser(())._actions:
        if isinstance(lazy, argparse._SubParsersAction):
            assert {a.dest: a.help for a in lazy._choices_actions} == listed


def test_help_and_version_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["explain", "--help"], ["demo", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0, argv
    out = capsys.readouterr().out
    assert "--vault-url URL" in out and "--latency-ms" in out and "kvconfig 0." in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_x1:Settings", "cannot import module 'no_such_module_x1'"),
        ("json:NoSuchClass", "module 'json' has no attribute 'NoSuchClass'"),
        ("json:JSONDecoder", "json:JSONDecoder is not a pydantic-settings BaseSettings subclass"),
        ("no-colon", "expected MODULE:CLASS"),
    ],
)
def test_bad_settings_spec_is_one_line_and_exit_2(
    spec: str, message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KVCONFIG_DEBUG", raising=False)
    status = main(["explain", spec, "--vault-url", "https://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("kvconfig explain: error: ")
    assert message in err


def test_module_failing_at_import_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_settings_mod.py").write_text("raise RuntimeError('boom at import')\n")
    result = run_kvconfig(
        "explain", "broken_settings_mod:S", "--vault-url", "https://127.0.0.1:9", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr == (
        "kvconfig explain: error: importing module 'broken_settings_mod' failed: "
        "RuntimeError (run with --debug for the traceback)\n"
    )


def test_kvconfig_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "plain_settings_mod.py").write_text(
        "from pydantic_settings import BaseSettings\nclass S(BaseSettings):\n    a: str = ''\n"
    )
    args = ("explain", "plain_settings_mod:S", "--vault-url", "http://vault.example")

    plain = run_kvconfig(*args, cwd=tmp_path)
    debug_flag = run_kvconfig("--debug", *args, cwd=tmp_path)
    debug_env = run_kvconfig(*args, cwd=tmp_path, env=child_env({"KVCONFIG_DEBUG": "1"}))

    assert plain.returncode == 1
    assert plain.stderr.startswith("kvconfig explain: error: vault URL must be an absolute https")
    assert plain.stderr.count("\n") == 1 and "Traceback" not in plain.stderr
    for result in (debug_flag, debug_env):
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr
        assert "kvconfig._errors.ConfigurationError: vault URL must be" in result.stderr


def test_unreachable_vault_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "one_field_mod.py").write_text(
        "from pydantic_settings import BaseSettings\nclass S(BaseSettings):\n    a: str\n"
    )
    result = run_kvconfig(
        "explain", "one_field_mod:S", "--vault-url", f"https://127.0.0.1:{port}",
        "--timeout", "0.3", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"kvconfig explain: error: vault https://127.0.0.1:{port} ")
    assert result.stderr.count("\n") == 1


def test_missing_vault_url_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_URL", raising=False)
    assert main(["explain", "json:JSONDecoder"]) == 2
    assert "--vault-url is required (or set VAULT_URL)" in capsys.readouterr().err


def test_argparse_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: MODULE:CLASS" in capsys.readouterr().err


def test_a_reader_leaving_early_is_not_an_error() -> None:
    """``kvconfig demo | head -1``: no BrokenPipeError traceback or message."""
    result = subprocess.run(
        f"{shlex.quote(sys.executable)} -m kvconfig demo --latency-ms 0 --interval 0.2 | head -1",
        shell=True,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.startswith("kvconfig demo")
    assert result.stderr == ""


def test_no_credential_is_one_line(keyvault_ca: CertificateAuthority, tmp_path: Path) -> None:
    """DefaultAzureCredential finds nothing: its multi-line warning is not shown, one line is."""
    (tmp_path / "needs_one_mod.py").write_text(
        "from pydantic_settings import BaseSettings\nclass S(BaseSettings):\n    a: str\n"
    )
    env = {k: v for k, v in child_env().items() if not k.startswith("IDENTITY_")}
    with EmulatorThread(ca=keyvault_ca) as emu:
        result = run_kvconfig(
            "explain", "needs_one_mod:S", "--vault-url", emu.vault_url,
            "--ca-file", str(emu.ca_file), env=env, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("kvconfig explain: error: ")
    assert "authenticate" in result.stderr or "refused the credential" in result.stderr
