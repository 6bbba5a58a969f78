#!/usr/bin/env bash
# One command for everything that needs a GPU (<= 8 minutes on one H200); --smoke runs it at toy sizes on a CPU.
# See bench/gpu_check.py for the parts, their targets and the output (bench/results/gpu_check/gpu_check.json).
cd "$(dirname "$0")/.." && exec "${PYTHON:-python}" bench/gpu_check.py "$@"
