"""Every file in ``examples/`` runs here, the way its docstring tells a user to run it.

A new example without a runner below fails :func:`test_every_example_has_a_runner`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from kvconfig.emulator import CertificateAuthority, EmulatorThread

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's shell: no Azure credentials, no pytest plugin settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "MSI_", "IDENTITY_", "PYTEST_", "KVCONFIG_"))
    }
    env.update(extra or {})
    return env


def run_python(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_quickstart(tmp_path: Path, ca: CertificateAuthority) -> None:
    result = run_python(str(EXAMPLES / "quickstart.py"))
    assert result.returncode == 0, result.stderr
    assert "value matches: True" in result.stdout


def run_basic_load(tmp_path: Path, ca: CertificateAuthority) -> None:
    result = run_python(str(EXAMPLES / "basic_load.py"))
    assert result.returncode == 0, result.stderr
    assert "database--host" in result.stdout and "**********" in result.stdout
    assert "correct-horse-battery-staple" not in result.stdout + result.stderr


def run_demo_settings(tmp_path: Path, ca: CertificateAuthority) -> None:
    result = run_python(str(EXAMPLES / "demo_settings.py"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "database.password    <- database--password     required" in lines
    assert "maps_api_key         <- maps-key               required" in lines
    assert "legacy_token         <- legacy-token           optional" in lines


def run_test_with_emulator(tmp_path: Path, ca: CertificateAuthority) -> None:
    """A user's project outside this repository: only the installed package and its entry point
    provide the fixture (no ``-p kvconfig.pytest_plugin``, no conftest)."""
    project = tmp_path / "user-project"
    project.mkdir()
    shutil.copy(EXAMPLES / "test_with_emulator.py", project)
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
        'filterwarnings = ["error"]\n'
    )
    result = run_python("-m", "pytest", "-p", "no:cacheprovider", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout
    header = result.stdout.splitlines()
    assert f"rootdir: {project}" in header
    plugins = next(line for line in header if line.startswith("plugins: "))
    assert "kvconfig-" in plugins  # registered by the pytest11 entry point


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def run_web_service(tmp_path: Path, ca: CertificateAuthority) -> None:
    """Standalone, as its docstring says, with the emulator's exported environment."""
    with EmulatorThread(ca=ca) as emu:
        emu.seed({"greeting": "hi", "upstream-token": "upstream-value-5e2"})
        port = free_port()
        env = clean_env(emu.environment())
        env.update(KVCONFIG_INTERVAL="0.2", PORT=str(port))  # VAULT_URL comes from the emulator
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "web_service.py")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(f"{base}/health"), proc)
            assert get_json(f"{base}/")[1]["message"] == "hi, world"
            emu.set_secret("greeting", "hello again")
            wait_until(lambda: get_json(f"{base}/")[1]["message"] == "hello again, world", proc)
            status, health = get_json(f"{base}/health")
            assert status == 200 and health["healthy"] is True and health["serving"] is True
        finally:
            proc.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on SIGINT
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "upstream-value-5e2" not in out + err


def _answers(url: str) -> bool:
    try:
        return get_json(url)[0] == 200
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def run_fastapi_service(tmp_path: Path, ca: CertificateAuthority) -> None:
    """Under uvicorn as a real server, with 1 worker and with 2 (each runs the lifespan)."""
    for workers in (1, 2):
        _serve_fastapi(tmp_path / f"workers-{workers}.log", ca, workers)


def _serve_fastapi(log: Path, ca: CertificateAuthority, workers: int) -> None:
    with EmulatorThread(ca=ca) as emu:
        emu.seed({"greeting": "hi", "upstream-token": "upstream-value-7f3"})
        port = free_port()
        env = clean_env(emu.environment())
        env.update(KVCONFIG_INTERVAL="0.2")
        args = ["--app-dir", str(EXAMPLES), "--host", "127.0.0.1", "--port", str(port)]
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "fastapi_service:app", *args,
                 "--workers", str(workers)],
                env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                serving = "serving ServiceSettings from"
                wait_until(lambda: log.read_text().count(serving) == workers, proc)
                wait_until(lambda: _answers(f"{base}/health"), proc)
                assert get_json(f"{base}/")[1]["message"] == "hi, world"
                emu.set_secret("greeting", "hello again")
                # Every worker's watcher publishes the rotation (kvconfig's INFO line, visible
                # under uvicorn), and the handlers serve it.
                rotated = "ServiceSettings from " + emu.vault_url + ": generation 1, "
                wait_until(lambda: log.read_text().count(rotated) == workers, proc)
                for _ in range(10):
                    assert get_json(f"{base}/")[1]["message"] == "hello again, world"
                status, health = get_json(f"{base}/health")
                assert status == 200 and health["healthy"] is True and health["serving"] is True
            finally:
                proc.send_signal(signal.SIGTERM)  # as a process manager stops it
                proc.wait(timeout=30)
    text = log.read_text()
    # uvicorn re-raises the signal after a graceful shutdown (so a supervisor sees it).
    assert proc.returncode in (0, -signal.SIGTERM), text
    assert text.count("Application shutdown complete") == workers, text
    assert text.count("closed ServiceSettings watcher and vault") == workers, text
    assert "Traceback" not in text and "Unclosed" not in text, text
    assert "upstream-value-7f3" not in text


RUNNERS: dict[str, Callable[[Path, CertificateAuthority], None]] = {
    "quickstart.py": run_quickstart,
    "basic_load.py": run_basic_load,
    "demo_settings.py": run_demo_settings,
    "fastapi_service.py": run_fastapi_service,
    "test_with_emulator.py": run_test_with_emulator,
    "web_service.py": run_web_service,
}


def example_files() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_every_example_has_a_runner() -> None:
    assert example_files() == sorted(RUNNERS)


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_example_runs(name: str, tmp_path: Path, keyvault_ca: CertificateAuthority) -> None:
    RUNNERS[name](tmp_path, keyvault_ca)
