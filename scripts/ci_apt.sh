#!/usr/bin/env bash
# System packages for CI: Chromium for the browser tests of `llmzip show` (tests/test_show.py
# skips them without /usr/bin/chromium). Installs only as root and only if it is missing.
set -euo pipefail
if [ "$(id -u)" = 0 ] && [ ! -x /usr/bin/chromium ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi
