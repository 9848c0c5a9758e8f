#!/usr/bin/env python3
"""Turn this source tree into the source of one llamabind wheel variant.

All variants build the same ``llamabind`` import package; they differ in the distribution
name, their dependencies and the backends compiled in (README, "Wheels and accelerators"):

=========  ===================  ============================================================
variant    distribution         backends
=========  ===================  ============================================================
cpu        ``llamabind``        CPU modules for every instruction-set level; Metal as well
                                on macOS arm64 (ggml's default on Apple)
cuda12     ``llamabind-cuda12`` the above plus CUDA, for CUDA 12.x drivers; the CUDA runtime
                                and cuBLAS come from NVIDIA's ``nvidia-*-cu12`` wheels
cuda13     ``llamabind-cuda13`` the same for CUDA 13.x (``nvidia-cuda-runtime``,
                                ``nvidia-cublas`` 13.x)
=========  ===================  ============================================================

PEP 621 does not let a build backend change a project's name, so this script edits
``pyproject.toml`` in place: the name, the dependencies and the CMake definitions. Run it on
a scratch checkout (CI does) or a copy of the tree (scripts/build_wheel.sh does).
Every wheel is portable (``LLAMABIND_PORTABLE=ON``); the environment variable
``LLAMABIND_PORTABLE=1`` selects that in pyproject.toml, and this script writes it into the
CMake definitions as well, so a variant's source tree builds the same with or without it.

Usage::

    python scripts/wheel_variant.py cuda13 [--cuda-architectures 90]
    python scripts/wheel_variant.py --print cuda12     # show the changes, write nothing
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VARIANTS: dict[str, dict[str, object]] = {
    "cpu": {"name": "llamabind", "dependencies": [], "define": {}},
    "cuda12": {
        "name": "llamabind-cuda12",
        # Installed into site-packages/nvidia/{cuda_runtime,cublas}/lib, where ggml-cuda's run
        # path (cmake/portable.cmake) and llamabind._runtime look for them.
        "dependencies": ["nvidia-cuda-runtime-cu12>=12.4,<13", "nvidia-cublas-cu12>=12.4,<13"],
        "define": {"GGML_CUDA": "ON"},
    },
    "cuda13": {
        "name": "llamabind-cuda13",
        # CUDA 13 wheels install into site-packages/nvidia/cu13/lib.
        "dependencies": ["nvidia-cuda-runtime>=13.0,<14", "nvidia-cublas>=13.0,<14"],
        "define": {"GGML_CUDA": "ON"},
    },
}


def rewrite(text: str, variant: str, cuda_architectures: str | None) -> str:
    spec = VARIANTS[variant]
    name = spec["name"]
    deps = list(spec["dependencies"])  # type: ignore[call-overload]
    define = {"LLAMABIND_PORTABLE": "ON", **spec["define"]}  # type: ignore[dict-item]
    if cuda_architectures:
        if variant == "cpu":
            raise SystemExit("--cuda-architectures applies to the cuda variants only")
        define["CMAKE_CUDA_ARCHITECTURES"] = cuda_architectures

    text, n = re.subn(r'(?m)^name = "[^"]*"$', f'name = "{name}"', text, count=1)
    if n != 1:
        raise SystemExit("pyproject.toml: no [project] name line")
    if deps:
        def add_deps(m: re.Match[str]) -> str:
            current = [d for d in re.findall(r'"([^"]*)"', m.group(1)) if not d.startswith("nvidia-")]
            return "dependencies = [" + ", ".join(f'"{d}"' for d in current + deps) + "]"

        text, n = re.subn(r"(?m)^dependencies = \[(.*)\]$", add_deps, text, count=1)
        if n != 1:
            raise SystemExit("pyproject.toml: no one-line dependencies list")
    header = "[tool.scikit-build.cmake.define]\n"
    if header not in text:
        raise SystemExit("pyproject.toml: no [tool.scikit-build.cmake.define] table")
    lines = "".join(f'{key} = "{value}"\n' for key, value in define.items()
                    if not re.search(rf"(?m)^{re.escape(key)} = ", text.split(header, 1)[1].split("\n[", 1)[0]))
    text = text.replace(header, header + lines, 1)

    try:
        import tomllib
    except ImportError:  # Python < 3.11: skip the check
        return text
    parsed = tomllib.loads(text)
    assert parsed["project"]["name"] == name
    assert all(d in parsed["project"]["dependencies"] for d in deps)
    for key, value in define.items():
        assert parsed["tool"]["scikit-build"]["cmake"]["define"][key] == value, key
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--cuda-architectures", help="CMAKE_CUDA_ARCHITECTURES (default: ggml's list)")
    parser.add_argument("--print", action="store_true", help="print the new pyproject.toml instead of writing it")
    args = parser.parse_args()
    path = ROOT / "pyproject.toml"
    new = rewrite(path.read_text(), args.variant, args.cuda_architectures)
    if args.print:
        sys.stdout.write(new)
    else:
        path.write_text(new)
        print(f"[wheel_variant] pyproject.toml now builds {VARIANTS[args.variant]['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
