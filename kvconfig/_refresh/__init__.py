"""Live settings: keep a Settings instance fresh (``KeyVault.watch``).

- :mod:`._watch`: ``LiveSettings``, driven through :class:`kvconfig._vault.VaultLink`.
- :mod:`._detect`: ``ChangeDetector``, what changed in the vault at the lowest request cost.
- :mod:`._listing`: list pages read as plain JSON.
- :mod:`._events`: ``ChangeEvent``, ``SecretChange``, field diffs.
- :mod:`._health`: ``Health``.
"""
