#!/usr/bin/env bash
# Fresh machine -> compress and decompress a sample with the default model, sizes next to xz.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python scripts/demo.py "${1:-../shared/corpus/alice29.txt}" "${2:-12000}"
