#!/usr/bin/env bash
# Create (or reuse) a private virtual environment with Arize Phoenix for the slow export test.
#
# Phoenix has a large dependency tree of its own, so it never goes into the project's .venv:
# it lives in its own venv (default /tmp/wasteaudit-phoenix-venv), installed from PyPI once and
# reused while the pinned version matches. Prints the venv's python on the last line of stdout.
#
#   tests/support/phoenix_env.sh            # create/reuse, print the interpreter path
#   PHOENIX_VENV=/path PHOENIX_VERSION=x.y.z tests/support/phoenix_env.sh
set -euo pipefail

VENV="${PHOENIX_VENV:-/tmp/wasteaudit-phoenix-venv}"
VERSION="${PHOENIX_VERSION:-20.26.1}"
PYTHON="${PHOENIX_BASE_PYTHON:-python3}"
STAMP="$VENV/.wasteaudit-phoenix-$VERSION"

if [ ! -f "$STAMP" ] || [ ! -x "$VENV/bin/phoenix" ]; then
  # a lock so that two test processes do not build the same venv at once
  exec 9>"${VENV%/}.lock"
  flock -w 1200 9
  if [ ! -f "$STAMP" ] || [ ! -x "$VENV/bin/phoenix" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "arize-phoenix==$VERSION" >&2
    touch "$STAMP"
  fi
fi
echo "$VENV/bin/python"
