#!/usr/bin/env bash
# System packages for CI, each installed only as root and only if missing:
#  - a C compiler: llmzip builds its attention kernel (llmzip/engine/kernels/) on first use;
#  - Chromium for the browser tests of `llmzip show` (tests/test_show.py skips them
#    without /usr/bin/chromium).
set -euo pipefail
want=()
command -v cc >/dev/null 2>&1 || want+=(gcc libc6-dev)
[ -x /usr/bin/chromium ] || want+=(chromium)
if [ "$(id -u)" = 0 ] && [ ${#want[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
fi
