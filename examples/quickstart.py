"""Azure's Key Vault secrets quickstart for Python, run against the bundled local emulator.

The flow is the quickstart's (create a secret, retrieve it, delete it) with the unmodified sync
``SecretClient`` and ``DefaultAzureCredential``. The only change is ``verify_challenge_resource=
False``, which any loopback vault needs. The emulator supplies the environment a real deployment
would have: ``VAULT_URL``, the CA to trust (``REQUESTS_CA_BUNDLE``) and an App Service style
managed identity (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``). Secret values are never printed.

Run: ``.venv/bin/python examples/quickstart.py`` (no arguments; exits 0 on success).
"""

from __future__ import annotations

import os
import secrets
import sys

from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from kvconfig.emulator import EmulatorThread


def quickstart(vault_url: str) -> None:
    """The quickstart's steps, as in the Azure docs (values kept out of the output)."""
    credential = DefaultAzureCredential()
    client = SecretClient(
        vault_url=vault_url, credential=credential, verify_challenge_resource=False
    )

    secret_name = "quickstart-secret"
    secret_value = secrets.token_urlsafe(16)

    print(f"Creating a secret in {vault_url} called '{secret_name}' ...")
    client.set_secret(secret_name, secret_value)
    print(" done.")

    print(f"Retrieving your secret from {vault_url}.")
    retrieved_secret = client.get_secret(secret_name)
    matches = retrieved_secret.value == secret_value
    print(
        f"Your secret was retrieved (version {retrieved_secret.properties.version}); "
        f"value matches: {matches}."
    )

    print(f"Deleting your secret from {vault_url} ...")
    poller = client.begin_delete_secret(secret_name)
    deleted_secret = poller.result()
    print(f" done (recoverable until {deleted_secret.scheduled_purge_date:%Y-%m-%d}).")

    client.close()
    credential.close()
    if not matches:
        raise SystemExit("the retrieved value differs from the one stored")


def main() -> int:
    with EmulatorThread() as emu:
        # What `eval "$(kvconfig emulator)"` would export in a shell.
        os.environ.update(emu.environment())
        print(f"Local Key Vault emulator at {emu.vault_url} (CA: {emu.ca_file})")
        quickstart(os.environ["VAULT_URL"])
        print(f"The emulator served {len(emu.requests)} requests.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
