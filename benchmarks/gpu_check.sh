#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, in one command, from the repository root of an
# installed checkout (`pip install -e ".[test]"` with a CUDA build of torch):
#
#     bash benchmarks/gpu_check.sh            # ~2 GB checkpoints; SIZE_GB=8 for larger ones
#
# 1. the tests marked `cuda` (CUDA against the CPU engine: full checkpoints on both axes,
#    PEFT adapters, DoRA layers, the array layer), which skip everywhere else;
# 2. bench_compare on --device cuda, which writes its "bench_compare_gpu" section of
#    reports/benchmarks.md with `cat` of the same files on this host as the read-bandwidth
#    reference (the GPU is not the bottleneck: the host's reads and copies are).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device here (CPU build of torch, or no GPU)" >&2
    exit 2
fi
python -m pytest -q -m cuda -rs tests
python benchmarks/bench_compare.py --device cuda --size-gb "${SIZE_GB:-2}" --repeat 3 \
    --workdir "${WORKDIR:-/tmp/dora-diag-bench-gpu}"
