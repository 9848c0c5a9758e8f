"""The wheel variants and the CI that builds them agree with each other and with the README."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def wheel_variant():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("wheel_variant", ROOT / "scripts" / "wheel_variant.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_variant_is_the_portable_build_under_its_own_name() -> None:
    wv = wheel_variant()
    original = (ROOT / "pyproject.toml").read_text()
    base = tomllib.loads(original)
    names = set()
    for variant in ("cpu", "cuda12", "cuda13"):
        parsed = tomllib.loads(wv.rewrite(original, variant, "90" if variant != "cpu" else None))
        project = parsed["project"]
        define = parsed["tool"]["scikit-build"]["cmake"]["define"]
        names.add(project["name"])
        assert define["LLAMABIND_PORTABLE"] == "ON"
        assert define["LLAMABIND_BUILD_EXAMPLES"] == "OFF"  # the base definitions stay
        assert set(base["project"]["dependencies"]) <= set(project["dependencies"])
        if variant == "cpu":
            assert project["name"] == "llamabind" and "GGML_CUDA" not in define
            assert project["dependencies"] == base["project"]["dependencies"]
        else:
            assert project["name"] == f"llamabind-{variant}"
            assert define["GGML_CUDA"] == "ON" and define["CMAKE_CUDA_ARCHITECTURES"] == "90"
            nvidia = [d for d in project["dependencies"] if d.startswith("nvidia-")]
            assert len(nvidia) == 2
            major = variant[-2:]
            # CUDA 12 wheels are named -cu12; CUDA 13 ones carry the major in their version.
            assert all(d.endswith(f"-cu{major}>=12.4,<13") if major == "12" else ">=13.0,<14" in d for d in nvidia)
    assert len(names) == 3
    readme = (ROOT / "README.md").read_text()
    for name in names:
        assert f"pip install {name}`" in readme


def test_workflow_builds_every_variant_and_platform() -> None:
    workflow = (ROOT / ".github" / "workflows" / "wheels.yml").read_text()
    for variant in ("cuda12", "cuda13"):
        assert f"variant: {variant}" in workflow
        assert workflow.count(f"wheel_variant.py ${{{{ matrix.variant }}}}") == 2  # linux and windows jobs
    for runner in ("ubuntu-24.04", "ubuntu-24.04-arm", "macos-13", "macos-14", "windows-2022"):
        assert re.search(rf"\b{re.escape(runner)}\b", workflow)
    cibw = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    assert cibw["environment"]["LLAMABIND_PORTABLE"] == "1"
    assert cibw["linux"]["environment"]["LLAMABIND_PORTABLE"] == "1"
    assert cibw["macos"]["environment"]["LLAMABIND_PORTABLE"] == "1"
    metal = [o for o in cibw["overrides"] if o["select"] == "*-macosx_arm64"]
    assert metal and metal[0]["config-settings"]["cmake.define.GGML_METAL"] == "ON"


@pytest.mark.parametrize("variant", ["cpu", "cuda13"])
def test_portable_switch_keeps_the_variants_cmake_definitions(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLAMABIND_PORTABLE=1 (set by build_wheel.sh and cibuildwheel) adds to the CMake
    definitions, as scikit-build-core reads them; it must not replace a variant's GGML_CUDA."""
    settings_reader = pytest.importorskip("scikit_build_core.settings.skbuild_read_settings")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(wheel_variant().rewrite((ROOT / "pyproject.toml").read_text(), variant, None))
    monkeypatch.chdir(ROOT)  # where scikit-build-core finds CMakeLists.txt
    monkeypatch.delenv("LLAMABIND_PORTABLE", raising=False)
    plain = settings_reader.SettingsReader.from_file(pyproject, {}).settings
    monkeypatch.setenv("LLAMABIND_PORTABLE", "1")
    portable = settings_reader.SettingsReader.from_file(pyproject, {}).settings
    assert portable.cmake.define == plain.cmake.define  # the variant already asks for ON
    assert portable.cmake.define["LLAMABIND_PORTABLE"] == "ON"
    assert portable.cmake.define["LLAMABIND_BUILD_EXAMPLES"] == "OFF"
    assert ("GGML_CUDA" in portable.cmake.define) == (variant != "cpu")
    assert portable.build_dir != "build/{wheel_tag}"  # never the editable build's directory


def test_portable_switch_alone_selects_the_portable_build(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_reader = pytest.importorskip("scikit_build_core.settings.skbuild_read_settings")
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("LLAMABIND_PORTABLE", raising=False)
    default = settings_reader.SettingsReader.from_file(ROOT / "pyproject.toml", {}).settings
    assert "LLAMABIND_PORTABLE" not in default.cmake.define and default.build_dir == "build/{wheel_tag}"
    monkeypatch.setenv("LLAMABIND_PORTABLE", "1")
    portable = settings_reader.SettingsReader.from_file(ROOT / "pyproject.toml", {}).settings
    assert portable.cmake.define == {**default.cmake.define, "LLAMABIND_PORTABLE": "ON"}
    assert portable.build_dir == "build/portable-{wheel_tag}"
