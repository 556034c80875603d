#!/usr/bin/env bash
# The wheels the GPU machine lacks (Python 3.12) into .whl/ (git-ignored), within what one device call carries.
# Thin wrapper of python -m finetune.dev.gpu_wheels; run from anywhere, on a machine that reaches the package index.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python -m finetune.dev.gpu_wheels "$@"
