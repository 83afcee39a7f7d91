#!/usr/bin/env bash
# Regenerate docs/img/report.png: run the demo, render its HTML report in headless Chromium.
# Needs `make demo` to have created .venv, and Debian's chromium package.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
root=$(pwd)
(cd "$work" && HF_HUB_OFFLINE=1 PYTHONPATH="$root" "$root/.venv/bin/python" -m wasteaudit demo -o "$work/report.html" >/dev/null)
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --no-first-run --user-data-dir="$work/chromium" --hide-scrollbars --window-size=1400,1000 \
  --screenshot="docs/img/report.png" "file://$work/report.html" >/dev/null 2>&1
rm -rf "$work"
echo "docs/img/report.png"
