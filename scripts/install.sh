#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install napari-volmicro into it, with optional extras.
# Usage: scripts/install.sh [EXTRAS]   e.g. scripts/install.sh test
# PyTorch: pip takes torch from the package index it is configured with; on plain PyPI that is a
# CUDA build of several GB on Linux. For the CPU-only build, point VOLMICRO_TORCH_INDEX at
# PyTorch's CPU wheel index (it is installed from there first, the rest from the usual index):
#   VOLMICRO_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    for cand in python3.11 python3.12 python3.13 python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
           "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            py="$cand"; break
        fi
    done
fi
[ -n "$py" ] || { echo "install.sh: Python >= 3.11 not found (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "${VOLMICRO_TORCH_INDEX:-}" ]; then
    torch_spec=$(sed -n 's/^ *"\(torch[<>=!~][^"]*\)",.*/\1/p' pyproject.toml | head -n 1)
    .venv/bin/python -m pip install --quiet "${torch_spec:-torch}" --index-url "$VOLMICRO_TORCH_INDEX"
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet -e "$spec"
