"""GPU runtime libraries for the CUDA wheels, loaded before the compiled core.

``llamabind-cuda12`` and ``llamabind-cuda13`` do not bundle the CUDA runtime and cuBLAS;
they depend on NVIDIA's wheels, which install them under ``site-packages/nvidia/``. ggml
loads its CUDA module when ``llamabind._core`` is imported, and the system's library search
would not look there (on Windows not even the run path in the module applies), so this
module loads them first, by full path: the CUDA module then finds them already in the
process. Libraries it cannot find are left to the system's search (a CUDA toolkit,
``LD_LIBRARY_PATH``, ``PATH``). Builds without CUDA have no ``cuda_runtime.txt`` and skip all
of this.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# Written at build time by cmake/portable.cmake in CUDA builds: the CUDA major version.
_MARKER = _PACKAGE / "cuda_runtime.txt"
# Subdirectories of site-packages/nvidia where NVIDIA's wheels put them (CUDA 13 wheels share
# nvidia/cu13; CUDA 12 ones have one directory per library).
_SUBDIRS = ("cu13/lib", "cu13/bin", "cu13/bin/x86_64", "cuda_runtime/lib", "cuda_runtime/bin", "cublas/lib",
            "cublas/bin")

_handles: list[object] = []  # kept for the life of the process


def _names(major: str) -> list[str]:
    if sys.platform == "win32":
        return [f"cudart64_{major}.dll", f"cublasLt64_{major}.dll", f"cublas64_{major}.dll"]
    return [f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}"]


def _nvidia_roots() -> list[Path]:
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def preload_cuda_libraries() -> list[str]:
    """Loads the CUDA runtime and cuBLAS of NVIDIA's wheels when this is a CUDA build; returns
    the files it loaded (empty for other builds, or when the wheels are not installed)."""
    try:
        major = _MARKER.read_text().strip()
    except OSError:
        return []
    roots = _nvidia_roots()
    loaded: list[str] = []
    for name in _names(major):
        found = next((root / sub / name for root in roots for sub in _SUBDIRS if (root / sub / name).is_file()), None)
        if found is None:  # a layout we do not know yet
            found = next((hit for root in roots for hit in root.rglob(name) if hit.is_file()), None)
        if found is None:
            continue
        if sys.platform == "win32":
            _handles.append(os.add_dll_directory(str(found.parent)))  # for their own dependencies
        try:
            # RTLD_LOCAL (ctypes' default): the library's symbols stay out of the global scope;
            # ggml's CUDA module binds to it through its own DT_NEEDED entry.
            _handles.append(ctypes.CDLL(str(found)))
        except OSError:
            continue
        loaded.append(str(found))
    return loaded
