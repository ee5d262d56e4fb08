#!/usr/bin/env bash
# The GPU check: every GPU-only code path once, about 6 minutes on one H100 (docs/benchmarks.md).
# Run from the repository root after README's set-up:  bash benchmarks/gpu_check.sh [--only NAME ...]
# Evidence: $OUT if set, else benchmarks/results/gpu_check/. Exit 0: all passed; 1: a check failed;
# 2: no CUDA device (one line, nothing run).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
exec python -m benchmarks.gpu_check "$@"
