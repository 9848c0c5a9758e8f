"""Which of llama.cpp's backends this installation runs on, and how they were built.

A portable llamabind (the wheels on PyPI, or any build with ``LLAMABIND_PORTABLE=ON``) ships
several builds of ggml's CPU backend, one per instruction-set level, and loads the best one
the processor supports when the package is imported; GPU wheels add a CUDA or Metal backend
module. A build from source with the default settings has one CPU backend compiled for the
build machine (``-march=native``) linked into the extension. :func:`backend_info` tells
which case applies and what was picked::

    >>> info = llamabind.backend_info()
    >>> info["cpu_variant"], info["backends"][-1]["features"].get("AVX2")
    ('haswell', '1')
"""

from __future__ import annotations

from typing import List, Optional, TypedDict, cast

from . import _core

__all__ = ["BackendDescription", "BackendInfo", "backend_info"]


class BackendDescription(TypedDict):
    """One backend registered with ggml."""

    name: str
    """ggml's name for it: ``"CPU"``, ``"CUDA"``, ``"Metal"``, ..."""
    library: Optional[str]
    """The module file it was loaded from; ``None`` when it is built into the extension."""
    variant: Optional[str]
    """For a backend shipped in several builds (the CPU backend of a portable build): the build
    that was picked, e.g. ``"haswell"``, ``"icelake"``, ``"armv8.2_2"``; otherwise ``None``."""
    features: dict[str, str]
    """What the backend was compiled with, as ggml reports it (``{"AVX2": "1", ...}`` for the CPU,
    ``{"ARCHS": "900", ...}`` for CUDA)."""
    devices: int
    """How many devices it drives."""


class BackendInfo(TypedDict):
    """The answer of :func:`backend_info`."""

    dynamic: bool
    """True when backends are modules loaded at run time (a portable build)."""
    directory: Optional[str]
    """Where the modules were loaded from (``None`` when they are built in)."""
    cpu_variant: Optional[str]
    """The CPU backend build picked for this processor in a portable build (``"haswell"``,
    ``"sapphirerapids"``, ``"armv8.2_2"``, ...); ``None`` when the CPU backend is built into the
    extension (a source build, compiled for the build machine unless ``GGML_NATIVE=OFF``)."""
    gpu_offload: bool
    """Whether a GPU backend is loaded and has a device, so ``n_gpu_layers`` takes effect."""
    rpc: bool
    """Whether ggml's RPC backend is available: ``Llama(rpc_servers=...)`` spreads a model over
    other machines, ``llamabind rpc-server`` serves this one (README, "Several machines")."""
    rpc_protocol: Optional[str]
    """The RPC protocol version spoken (``"7.0.0"``; workers must share the major version), or
    ``None`` without the RPC backend."""
    backends: List[BackendDescription]
    """Every backend in use, in ggml's order (GPU backends first, the CPU last)."""


def backend_info() -> BackendInfo:
    """Which backends llamabind uses and which build of each: see :class:`BackendInfo`.

    ``llamabind.system_info()`` gives the same features in llama.cpp's one-line format.
    """
    backends = cast(List[BackendDescription], _core.backends())
    dynamic = bool(_core.dynamic_backends())
    cpu = next((b for b in backends if b["name"] == "CPU"), None)
    cpu_variant = cpu["variant"] if cpu is not None and dynamic else None
    rpc = any(b["name"] == "RPC" for b in backends)
    return BackendInfo(
        dynamic=dynamic,
        directory=_core.backend_directory() or None,
        cpu_variant=cpu_variant,
        gpu_offload=bool(_core.supports_gpu_offload()),
        rpc=rpc,
        rpc_protocol=_core.rpc_protocol_version() if rpc else None,
        backends=backends,
    )
