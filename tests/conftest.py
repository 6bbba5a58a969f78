"""Shared test setup.

Triton kernels run on a CPU through Triton's interpreter. The variable must be set before any
`@triton.jit` function is defined, i.e. before the first `import longcot_kernels`, so it lives here.
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


# Tests that read ../shared/data skip when it is absent, with a reason starting "../shared/data not found".
# LONGCOT_REQUIRE_DATA=1 (set by .ci/run when the folder exists) turns those skips into failures, so a test
# that silently stopped finding the data cannot pass as skipped.
import pytest  # noqa: E402

DATA_SKIP = "../shared/data not found"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("LONGCOT_REQUIRE_DATA") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if DATA_SKIP in reason:
            report.outcome = "failed"
            report.longrepr = f"LONGCOT_REQUIRE_DATA=1 but the test skipped: {reason}"
