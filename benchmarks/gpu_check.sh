#!/usr/bin/env bash
# The GPU check on a lent GPU machine, from the repository root:
#   bash benchmarks/gpu_check.sh [gpu_check.py options]
# Packages missing on that machine travel as wheels in .whl/ (see docs/performance.md) and are installed
# into /tmp/site; the project itself is used from the checkout (PYTHONPATH), so the worker processes that
# `launch` spawns import it too. Results go to $OUT (the device tool's output folder) or storage/gpu_check.
set -u
OUT=${OUT:-storage/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv > "$OUT/nvidia_smi.csv" 2>&1 || true
python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
