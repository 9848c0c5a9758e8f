"""The code in README.md runs as written."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def run_python(code: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "a README example printed to stderr"
    return proc.stdout.strip().splitlines()


def test_readme_has_the_python_examples() -> None:
    assert len(blocks("python")) == 8  # two of them (the server's) run in tests/server/test_readme_examples.py


def test_readme_low_level_example_runs(smollm2_path: Path) -> None:
    (code,) = [b for b in blocks("python") if "import llamabind as lb" in b]
    lines = run_python(code)
    assert len(lines) >= 2 and lines[-1] == "(49152,) False"


def test_readme_drop_in_example_runs(smollm2_path: Path) -> None:
    (code,) = [b for b in blocks("python") if "was: from llama_cpp import Llama" in b]
    lines = run_python(code)
    assert "Paris" in lines[0] and "'completion_tokens'" in lines[0]
    assert len(lines) == 3 and all(line.strip() for line in lines)


def test_readme_async_example_runs(smollm2_path: Path) -> None:
    (code,) = [b for b in blocks("python") if "asyncio.run(main())" in b and "n_parallel" not in b]
    lines = run_python(code)
    assert lines and lines[0].strip()


def test_readme_parallel_example_runs(smollm2_path: Path) -> None:
    (code,) = [b for b in blocks("python") if "n_parallel=4" in b and "create_app" not in b]
    lines = run_python(code)
    assert len(lines) == 6
    assert lines[0].startswith("0 ") and lines[1].startswith("1 ")
    assert "|" in lines[2]
    assert [line.split(" -> ")[0] for line in lines[3:]] == ["Who wrote Hamlet?", "What is H2O?", "Name a planet."]


def test_readme_backend_info_example_runs() -> None:
    import llamabind

    (code,) = [b for b in blocks("python") if "backend_info()" in b]
    lines = run_python(code)
    info = llamabind.backend_info()
    names = [b["name"] for b in info["backends"]]
    assert lines[0] == f"{info['cpu_variant']} {names} {info['gpu_offload']}"
    assert "CPU" in names
    features = ast.literal_eval(lines[1])
    assert isinstance(features, list) and features and all(f in llamabind.system_info() for f in features)


def test_readme_cpp_example_compiles_and_runs(native_build, smollm2_path: Path, tmp_path: Path) -> None:
    """Compiles the README's C++ snippet against the library built by plain CMake."""
    (code,) = [b for b in blocks("cpp") if "llamabind.hpp" in b]
    code = code.replace('"SmolLM2-135M-Instruct.Q4_1.gguf"', f'"{smollm2_path}"')
    src = tmp_path / "readme.cpp"
    src.write_text(code)
    build = native_build.build_dir
    libs = [build / "cpp" / "libllamabind.a", build / "llama.cpp" / "src" / "libllama.a"]
    libs += sorted((build / "llama.cpp" / "ggml" / "src").rglob("libggml*.a"), key=lambda p: p.name != "libggml.a")
    includes = [ROOT / "cpp" / "include", ROOT / "extern" / "llama.cpp" / "include",
                ROOT / "extern" / "llama.cpp" / "ggml" / "include"]
    exe = tmp_path / "readme"
    cmd = ["c++", "-std=c++17", "-O1", str(src), "-o", str(exe), *[f"-I{i}" for i in includes],
           "-Wl,--start-group", *map(str, libs), "-Wl,--end-group", "-fopenmp", "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Paris" in run.stdout


def test_readme_json_and_tools_example_runs(smollm2_path: Path) -> None:
    (code,) = [b for b in blocks("python") if "class City(pydantic.BaseModel)" in b]
    lines = run_python(code)
    assert lines[0].startswith("name=") and "population=" in lines[0]
    assert lines[1].strip() in ("yes", "no")
    assert lines[2].startswith("{'name': 'get_weather', 'arguments': ")
    assert lines[3].startswith("get_weather|{") and lines[3].count("|") > 3


def test_readme_first_command_is_the_cli() -> None:
    (fresh,) = [b for b in blocks("bash") if "fetch_llama_cpp.py && " in b]
    assert fresh.strip().endswith('python3 -m llamabind run "The capital of France is"')


def test_readme_command_line_examples_run(smollm2_path: Path, tmp_path: Path) -> None:
    """Each `llamabind ...` line of the command-line section, except the interactive chat
    and the Hugging Face download, runs and prints something (threads pinned for the tests)."""
    import os
    import shlex

    from testutil import N_THREADS

    (block,) = [b for b in blocks("bash") if "llamabind run" in b and "llamabind info" in b]
    lines = [line for line in block.strip().splitlines() if "llamabind chat" not in line and "--hf" not in line]
    assert len(lines) >= 8
    threads = f"-t {N_THREADS} --threads-batch {N_THREADS}"
    # The console script of this environment, whatever PATH holds.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in lines:
        command = line.replace("llamabind run", f"llamabind run {threads}").replace(
            "llamabind embed", f"llamabind embed {threads}")
        proc = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, env=env)
        assert proc.returncode == 0, f"{line}\n{proc.stderr}"
        assert proc.stderr == "", f"{line}\n{proc.stderr}"
        assert proc.stdout.strip() or "-o " in line, line
        if "--json-schema" in line:
            import json

            schema = json.loads(shlex.split(line)[shlex.split(line).index("--json-schema") + 1])
            assert set(json.loads(proc.stdout)) >= set(schema["required"])
    assert (tmp_path / "vectors.npy").is_file()


def test_readme_cmake_package_example_is_the_tested_one() -> None:
    """The README's find_package project is examples/cpp-package (built in tests/cpp)."""
    (code,) = blocks("cmake")
    example = (ROOT / "examples" / "cpp-package" / "CMakeLists.txt").read_text()
    body = "\n".join(line for line in example.splitlines() if not line.startswith("#")).strip()
    assert code.strip() == body
