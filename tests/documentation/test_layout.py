"""The package's shape, as docs/ARCHITECTURE.md states it: modules import downward only (no
import cycle, not even one hidden in a function body or behind TYPE_CHECKING), no module of
the package is a long file that needs banner comments to find one's way around, and the C++
core never includes Python."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "llamabind"
CPP = Path(__file__).resolve().parents[2] / "cpp"
MAX_LINES = 800  # the generated _core.pyi is exempt
BANNER = re.compile(r"^\s*#\s*(-{3,}|={3,}).*$|^\s*#.*(-{10,}|={10,})\s*$", re.M)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The package modules an `from ... import ...` statement imports."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("llamabind"):
        return []
    found = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        found.append(sub if sub in MODULES or sub == "llamabind._core" else target)
    return found


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported package module, line, whether the import sits inside a function)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                found.extend((t, child.lineno, in_function) for t in _resolve(module, child))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names
                             if a.name.startswith("llamabind"))
            visit(child, nested)

    visit(tree, False)
    # The compiled module is a leaf, and a package's __init__ is not an edge of its own submodule.
    return [(t, line, f) for t, line, f in found if t in MODULES and t != module]


def test_the_package_has_modules_to_check() -> None:
    assert {"llamabind", "llamabind.llama", "llamabind.llama_grammar", "llamabind.json_schema"} <= set(MODULES)


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for t, _, _ in _imports(m)}) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                walk(t)
        path.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            walk(m)


# Package modules that may be imported inside a function, each with its reason. Nothing else:
# a function-local import is how a cycle hides.
LAZY_IMPORTS = {
    "llamabind.server._app": "it needs the optional server extra (FastAPI, uvicorn, sse-starlette); "
                             "`import llamabind.server` must work without it, so create_app() and main() "
                             "import it when called",
}


def test_no_package_imports_inside_functions() -> None:
    """A function-local import of a package module is how a cycle hides; optional third-party
    dependencies (huggingface_hub, openai, ...) may still be imported where they are used."""
    local = [f"{MODULES[m].relative_to(PACKAGE)}:{line} imports {t}"
             for m in MODULES for t, line, in_function in _imports(m) if in_function and t not in LAZY_IMPORTS]
    assert not local, "\n".join(local)
    assert set(LAZY_IMPORTS) <= set(MODULES), "LAZY_IMPORTS names a module that does not exist"


def test_modules_are_short_and_need_no_banners() -> None:
    long = [f"{p.relative_to(PACKAGE)}: {n} lines" for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "split these by concept:\n" + "\n".join(long)
    banners = [f"{p.relative_to(PACKAGE)}: {m.group(0).strip()}" for p in MODULES.values()
               for m in BANNER.finditer(p.read_text(encoding="utf-8"))]
    assert not banners, "a module that needs banner comments is two modules:\n" + "\n".join(banners)


def test_cpp_core_knows_no_python() -> None:
    core = [*CPP.joinpath("src").rglob("*.[ch]pp"), *CPP.joinpath("include").rglob("*.hpp")]
    assert core
    python = [str(p.relative_to(CPP)) for p in core
              if re.search(r"#\s*include\s*[<\"](pybind11|Python\.h)", p.read_text(encoding="utf-8"))]
    assert not python, python


def test_bindings_never_import_the_package() -> None:
    """The compiled module is the bottom layer: nothing in cpp/bindings imports llamabind's
    Python modules (it may import numpy and the standard library)."""
    sources = list(CPP.joinpath("bindings").rglob("*.[ch]pp"))
    assert sources
    offenders = [str(p.relative_to(CPP)) for p in sources
                 if re.search(r"module_::import\(\"llamabind", p.read_text(encoding="utf-8"))]
    assert not offenders, offenders
