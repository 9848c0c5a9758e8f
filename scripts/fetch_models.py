#!/usr/bin/env python3
"""Fetch the real test models from PyPI into the cache (see python/llamabind/models.py).

Works without llamabind being built or installed: it loads that module from the source tree.
"""

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).resolve().parent.parent / "python" / "llamabind" / "models.py"
_spec = importlib.util.spec_from_file_location("_llamabind_models", _path)
assert _spec is not None and _spec.loader is not None
_models = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _models  # dataclasses look their module up here
_spec.loader.exec_module(_models)

if __name__ == "__main__":
    sys.exit(_models.main())
