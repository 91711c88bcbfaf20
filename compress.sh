#!/usr/bin/env bash
# Package a checkpoint as a self-contained solution.pyz for the device.
#   ./compress.sh runs/NAME/best.pt [-o solution.pyz] [--force] [--precision fp16|fp32|int8] [--input-size N]
#                 [--timer model|wall] [--python "/usr/bin/env python3.6"] [--no-verify]
#                 [--backend tensorrt]   also ship model.onnx; the device builds a TensorRT engine
#   ./compress.sh [options]    the newest runs/*/best.pt -> evaluation/solution.pyz, so that
#                              `cd evaluation && ./evaluate.bash solution.pyz` scores it; an existing
#                              evaluation/solution.pyz is replaced, and stderr says so
# An existing -o file is replaced only with --force; -o may never be the checkpoint.
# A thin wrapper over `lowpower package` (see --help); works from any folder,
# with paths taken relative to the folder it is called from.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
else
    PYTHON="$(command -v python3)"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m lowpower package "$@"
