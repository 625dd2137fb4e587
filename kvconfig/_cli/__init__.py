"""The ``kvconfig`` command line (console script ``kvconfig = "kvconfig._cli:main"``).

``_main`` parses and dispatches; each sub-command lives in its own module (``_demo``,
``_explain``, ``kvconfig.emulator._cli``), imported only when that command runs. ``_render``
draws tables; what ``explain`` and ``demo`` show is built by :mod:`kvconfig._report`.
"""

from kvconfig._cli._main import main

__all__ = ["main"]
