#!/usr/bin/env bash
# The one prepared GPU run of issue 17 (8 minutes at most): installs the carried wheels (.whl/, made by
# recipes/bench/gpu_wheels.sh), then runs python -m finetune.dev.gpu_check; JSON + log land in $OUT (or runs/gpu-check).
#   bash recipes/bench/gpu_check.sh --dry-run     # the plan and the wheel check, on any machine
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" != "--dry-run" ] && ls .whl/*.whl > /dev/null 2>&1; then
  timeout 20 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="/tmp/site/bin:$PATH"
fi
exec python3 -m finetune.dev.gpu_check "$@"
