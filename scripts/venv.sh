#!/usr/bin/env bash
# Build (or reuse) .venv with Python 3.12 and the package installed with its dev, timeseries
# and docs extras.
# Sourced by scripts/test, scripts/run and scripts/docs so each works on a fresh machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
find_python() {
    if PYENV_VERSION=3.12.1 python3.12 --version >/dev/null 2>&1; then
        echo "env PYENV_VERSION=3.12.1 python3.12"; return
    fi
    if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/3.12.1/bin/python3.12" ]; then
        echo "$(pyenv root)/versions/3.12.1/bin/python3.12"; return
    fi
    for p in python3.13 python3.12 python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
            echo "$p"; return
        fi
    done
    echo "error: Python >= 3.12 not found (try pyenv install 3.12)" >&2
    exit 2
}
if [ ! -x "$venv/bin/python" ]; then
    $(find_python) -m venv "$venv"
fi
stamp="$venv/.bayesrnn-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[dev,timeseries,docs]"
    touch "$stamp"
fi
