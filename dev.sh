#!/usr/bin/env bash
# Set-up and entry point: creates .venv on first use (torch pinned by constraints.txt, so a CPU
# machine never pulls CUDA packages), reinstalls when pyproject.toml or constraints.txt change,
# then runs:   ./dev.sh test [pytest args]   |   ./dev.sh COMMAND [args] (inside the venv)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp || constraints.txt -nt $stamp ]]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
    torch==2.13.0
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
    -e ".[dev]"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
if [[ ${1:-} == test ]]; then
  shift
  exec python -m pytest "$@"
fi
exec "$@"
