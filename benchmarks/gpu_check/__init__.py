"""The GPU check: every GPU-only code path exercised once, one module per check
(`python -m benchmarks.gpu_check.NAME`), run together by `bash benchmarks/gpu_check.sh`."""
