#!/usr/bin/env python3
"""Prints llamabind's public Python surface, one line per name, so two versions can be diffed.

    python scripts/public_surface.py > before.txt
    ... change ...
    python scripts/public_surface.py | diff before.txt -

Covered: `llamabind.__all__` and every public module of the package (the llama-cpp-python
compatibility modules among them), each with the public names it holds, the signature of
every public function, class constructor and method, and the value of simple constants.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from typing import Any

MODULES = [
    "llamabind", "llamabind.llama", "llamabind.llama_types", "llamabind.types", "llamabind.llama_cache",
    "llamabind.llama_grammar", "llamabind.llama_chat_format", "llamabind.llama_tokenizer",
    "llamabind.llama_speculative", "llamabind.json_schema", "llamabind.sampling", "llamabind.models",
    "llamabind.cli",
]


def _signature(obj: Any) -> str:
    """The signature with annotations evaluated where possible, so that spelling an annotation
    differently (a string or not, an import alias) does not count as a change."""
    try:
        # Classes by name alone: moving one to another module changes no signature.
        return re.sub(r"\bllamabind(?:\.\w+)*\.(\w+)", r"\1", str(inspect.signature(obj, eval_str=True)))
    except Exception:
        pass
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(?)"


def _foreign(value: Any) -> bool:
    """Whether a module attribute is only an import of something outside llamabind (typing
    helpers, numpy, stdlib modules): not part of the surface."""
    if inspect.ismodule(value):
        return not value.__name__.startswith("llamabind")
    if inspect.isclass(value) or inspect.isroutine(value):
        return not str(getattr(value, "__module__", "")).startswith("llamabind")
    return False


def _describe(prefix: str, name: str, value: Any) -> Iterator[str]:
    if inspect.ismodule(value):
        yield f"{prefix}{name}: module {value.__name__}"
    elif inspect.isclass(value):
        yield f"{prefix}{name}: class {value.__module__.split('.')[0]}{_signature(value)}"
        for attr, member in sorted(vars(value).items()):
            if attr.startswith("_") and attr not in ("__init__", "__call__", "__enter__", "__exit__", "__iter__"):
                continue
            if isinstance(member, (staticmethod, classmethod)):
                yield f"{prefix}{name}.{attr}: {type(member).__name__}{_signature(member.__func__)}"
            elif isinstance(member, property):
                yield f"{prefix}{name}.{attr}: property{' (settable)' if member.fset else ''}"
            elif callable(member):
                yield f"{prefix}{name}.{attr}: method{_signature(member)}"
            elif not attr.startswith("_"):
                yield f"{prefix}{name}.{attr}: {type(member).__name__}"
    elif callable(value):
        yield f"{prefix}{name}: function{_signature(value)}"
    elif isinstance(value, (set, frozenset)):
        yield f"{prefix}{name}: {type(value).__name__} = {sorted(value, key=repr)!r}"[:300]
    elif isinstance(value, (str, int, float, bool, bytes, tuple)) or value is None:
        yield f"{prefix}{name}: {type(value).__name__} = {value!r}"[:300]
    else:
        yield f"{prefix}{name}: {type(value).__name__}"


def surface() -> Iterator[str]:
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        declared = getattr(module, "__all__", None)
        if declared is not None:
            yield f"{module_name}.__all__ = {sorted(declared)}"
        for name in sorted(vars(module)):
            value = getattr(module, name)
            if name.startswith("_") or name in ("annotations", "TYPE_CHECKING") or _foreign(value):
                continue
            yield from _describe(f"{module_name}:", name, value)


def main() -> int:
    for line in surface():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
