"""pytest plugin (entry point ``pytest11``): fixtures that run a local Key Vault emulator."""
