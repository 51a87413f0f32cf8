#!/usr/bin/env bash
# Install napari-volmicro and run the main job on the bundled real sample
# (the Purkinje neuron stack): compress it, decode it, report size and quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/volmicro demo "$@"
