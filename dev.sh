#!/usr/bin/env bash
# Set-up and entry point: creates .venv on first use (torch pinned by constraints.txt, so a CPU
# machine never pulls CUDA packages) with the dev and integrations extras (transformers,
# accelerate, lightning: their recipes are tested), reinstalls when pyproject.toml or
# constraints.txt change, builds the fused kernel once, then runs:   ./dev.sh test [pytest args]   |   ./dev.sh COMMAND [args] (inside the venv)
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
    -e ".[dev,integrations]"
  touch "$stamp"
fi
# The fused engine's C++ kernel: built once into ~/.cache/rectified (about 10 s), reused after;
# without a compiler the optimizers use the foreach engine.
.venv/bin/python -m rectified.engines.build >/dev/null ||
  echo "dev.sh: fused kernel not built; the foreach engine will be used" >&2
export PATH="$PWD/.venv/bin:$PATH"
if [[ ${1:-} == test ]]; then
  shift
  exec python -m pytest "$@"
fi
exec "$@"
