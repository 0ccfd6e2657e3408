"""How lxss starts another of its programs: the same interpreter, without site-packages.

Imported by the `lxss` client, the service and the archive worker's spawner alike, so it
imports nothing beyond os and sys (both loaded by every Python at start-up anyway).
"""

from __future__ import annotations

import os
import sys

_SRC_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bootstrap_argv(module: str, *args: str) -> list[str]:
    """argv that runs ``module.main(list(args))`` on this interpreter and exits with its result.

    ``-I -S``: lxss needs only the standard library; isolated mode keeps the caller's
    PYTHON* variables and current directory out of it, and skipping site saves ~5 ms a start.
    *module* is a dotted name under lxss's own source directory (put first on sys.path).
    """
    code = (
        f"import sys;sys.path.insert(0,{_SRC_DIR!r});"
        f"from {module} import main;sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-I", "-S", "-c", code, *args]
