"""``kvconfig demo``: runs end to end, shows sources and masks, picks up a rotation, no values."""

from __future__ import annotations

import io
import re

import pytest

from kvconfig._cli._demo import DEMO_SECRETS, ROTATED_PASSWORD, load_demo_settings, run_demo
from kvconfig._cli._render import MASK, Style

from .conftest import child_env, run_kvconfig

# Values the demo may show: a host name and feature flags are configuration, not secrets.
SHOWN = {"database--host", "feature-flags"}
HIDDEN = [v for k, v in DEMO_SECRETS.items() if k not in SHOWN] + [ROTATED_PASSWORD]


def table_rows(output: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if line.startswith("  ") and len(cells) == 6 and cells[0] != "FIELD":
            rows[cells[0]] = cells[1:]
    return rows


def test_demo_runs_as_the_readme_shows() -> None:
    result = run_kvconfig("demo", "--latency-ms", "1", "--interval", "0.2", env=child_env())

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    for value in HIDDEN:
        assert value not in out
    assert "\x1b[" not in out  # captured, so not a terminal: no colour
    rows = table_rows(out)
    # field: secret, status, version, source, value
    assert rows["database.host"][1:] == ["found", rows["database.host"][2], "vault",
                                         "orders-db.internal.example"]  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{8}", rows["database.host"][2])
    assert rows["database.password"][0] == "database--password"
    assert rows["database.password"][3:] == ["vault", MASK]
    assert rows["maps_api_key"][0] == "maps-key" and rows["maps_api_key"][4] == MASK
    assert rows["database.port"][1:] == ["missing", "-", "default", "5432"]
    assert rows["legacy_token"][1:] == ["disabled", "-", "default", "None"]
    assert rows["signing_key"][1] == "expired" and rows["signing_key"][4] == MASK
    assert rows["log_level"][3:] == ["env ORDERS_LOG_LEVEL", "debug"]
    assert rows["feature_flags"][4] == '{"new_checkout": true, "dark_mode": false}'
    # 10 secrets (log_level comes from the environment, so it is not requested) + challenge
    assert "concurrently" in out and "11 requests" in out
    assert "WARNING secret legacy-token" in out and "WARNING secret signing-key" in out
    assert "INFO loaded Settings" in out
    change = re.search(
        r"ChangeEvent generation 1, .*\n\s+database\.password: database--password "
        r"([0-9a-f]{8}) → ([0-9a-f]{8})",
        out,
    )
    assert change is not None and change[1] == rows["database.password"][2] != change[2]
    assert "✓ live.current.database.password holds the new value" in out
    assert "Done in" in out


def test_the_users_environment_wins_over_the_demo_default() -> None:
    result = run_kvconfig(
        "demo", "--latency-ms", "0", "--interval", "0.2",
        env=child_env({"ORDERS_LOG_LEVEL": "warning", "ORDERS_DATABASE__PORT": "6432"}),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert rows["log_level"][3:] == ["env ORDERS_LOG_LEVEL", "warning"]
    assert rows["database.port"][3:] == ["env ORDERS_DATABASE__PORT", "6432"]


async def test_colour_only_when_asked_for() -> None:
    settings_cls = load_demo_settings()
    coloured, plain = io.StringIO(), io.StringIO()

    assert await run_demo(settings_cls, out=coloured, style=Style(True), latency_ms=0,
                          interval=0.2) == 0  # fmt: skip
    assert await run_demo(settings_cls, out=plain, style=Style(False), latency_ms=0,
                          interval=0.2) == 0  # fmt: skip

    assert "\x1b[" in coloured.getvalue() and "\x1b[" not in plain.getvalue()
    stripped = re.sub(r"\x1b\[[0-9;]*m", "", coloured.getvalue())
    assert table_rows(stripped).keys() == table_rows(plain.getvalue()).keys()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_style_follows_tty_no_color_and_dumb_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert Style.for_stream(FakeTerminal()).enabled
    assert not Style.for_stream(io.StringIO()).enabled
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style.for_stream(FakeTerminal()).enabled
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not Style.for_stream(FakeTerminal()).enabled
    assert Style(True)("x", "red", "bold") == "\x1b[31;1mx\x1b[0m"
    assert Style(False)("x", "red") == "x"
