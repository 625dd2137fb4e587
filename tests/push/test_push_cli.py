"""``kvconfig emulator --event-webhook URL`` as a real process delivering to a real webhook."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys

from push_helpers import Webhook

CHILD = """
import os
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

with ManagedIdentityCredential() as credential:
    with SecretClient(os.environ["VAULT_URL"], credential, verify_challenge_resource=False) as c:
        c.set_secret("from-cli", "CANARY-cli-event-value")
print("OK")
"""


async def test_event_webhook_flag(webhook: Webhook) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kvconfig",
        "emulator",
        "--event-webhook",
        webhook.url,
        "--event-webhook",
        "http://127.0.0.1:9/unreachable",  # fails validation: reported, serving goes on
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MSI_"))}
        async with asyncio.timeout(60):
            while "IDENTITY_HEADER" not in env:
                line = (await proc.stdout.readline()).decode()
                assert line, "emulator exited"
                key, value = shlex.split(line.split(" ", 1)[1])[0].split("=", 1)
                env[key] = value
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await child.communicate()
            assert out.decode().strip() == "OK", err.decode()
            while not webhook.deliveries:
                webhook.arrived.clear()
                await webhook.arrived.wait()
        (event,) = webhook.events()
        assert event["subject"] == "from-cli"
        assert event["data"]["Id"].startswith(env["VAULT_URL"] + "/secrets/from-cli/")
        assert b"CANARY-cli-event-value" not in webhook.deliveries[0].body
    finally:
        proc.terminate()
        _, stderr = await proc.communicate()
    assert "unreachable failed validation" in stderr.decode()
    assert proc.returncode == 0
