#!/usr/bin/env bash
# Set up if needed, then run the whole test suite (slow tests with the real model included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -m "slow or not slow" -q -p no:cacheprovider "$@"
