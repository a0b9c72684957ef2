#!/usr/bin/env bash
# The Python compatibility suite: the official centrifuge-python SDK and the `cent` API
# client against the built binary (target/debug/rotor unless ROTOR_BIN is set).
# Makes tests/compat-py/.venv (gitignored), installs the pinned requirements into it and
# runs pytest; the last line printed is pytest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=tests/compat-py
venv="$suite/.venv"
# A venv left half-made (say python3-venv was missing when it was created) has no pip:
# start it again.
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$suite/requirements.txt"

export ROTOR_BIN="${ROTOR_BIN:-$PWD/target/debug/rotor}"
cd "$suite"
exec .venv/bin/python -m pytest "$@"
