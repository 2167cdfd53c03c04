#!/usr/bin/env bash
# GPU discovery script for spark.{driver,executor}.resource.gpu.discoveryScript: prints the
# resource JSON Spark expects, e.g. {"name": "gpu", "addresses": ["0","1"]}, listing the GPUs
# nvidia-smi sees in this container or YARN-isolated process. Same contract as Spark's own
# examples/src/main/scripts/getGpusResources.sh.
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "getGpusResources.sh: nvidia-smi not found; this executor has no usable GPU" >&2
    exit 1
fi
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e 's/^[[:space:]]*//' -e 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
