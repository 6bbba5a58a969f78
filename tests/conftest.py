"""Shared test setup.

Triton kernels run on a CPU through Triton's interpreter. The variable must be set before any
`@triton.jit` function is defined, i.e. before the first `import kernels`, so it lives here.
"""
import os
import sys

try:
    import torch
    _has_gpu = torch.cuda.is_available()
except ImportError:  # torch missing: let the import errors surface in the tests themselves
    _has_gpu = False
if not _has_gpu:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests import the top-level modules (model, sample, ...) from the repository root
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
