"""``python -m llamabind.server``: the same as ``llamabind serve``."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except ImportError as exc:
        sys.stderr.write(f"llamabind serve: error: {exc}\n")
        sys.exit(1)
