"""The model's hot ops, each in two versions (plain torch and Triton), behind one switch.
(Not named `kernels`: that is a PyPI package which transformers >= 5.2x imports, and a folder of that name in
the repo root would be imported in its place.)

    import longcot_kernels as K
    K.set_backend("torch")            # or "triton"; default: "triton" when a CUDA GPU and Triton exist
    K.backend()                       # -> "torch"
    with K.use("triton"): ...         # temporarily, e.g. in tests
    y = K.rms_norm(x, weight, eps)
    q, k = K.apply_rope(q, k, positions, cos_table, sin_table)
    o = K.decode_attention(q, k_cache, v_cache, lengths, scale=None, max_len=None)
    tokens, logprobs = K.sample(logits, temperature, top_p, u)   # small batches: rows split over programs

Each op lives in its own file with its reference (`<op>_ref`, plain torch: the definition, read it first) and
its Triton version (`<op>_triton`): rmsnorm.py, rope.py, decode_attention.py, sampling.py. (logprobs.py, the
chunked log-prob of the training loss, is plain torch and is called directly by model.py.)
The dispatchers below look the function up at call time, so a test can monkeypatch e.g.
`longcot_kernels.rmsnorm.rms_norm_triton` and see the switch route to it.

Importing this package works without Triton: then the only backend is "torch" and set_backend("triton") raises.
To run the Triton kernels on a CPU (slowly), set TRITON_INTERPRET=1 before the first `import longcot_kernels`
(tests/conftest.py does). Note: the submodule decode_attention.py is reachable as
`longcot_kernels.decode_attention_mod` (or sys.modules["longcot_kernels.decode_attention"]) because the name
`longcot_kernels.decode_attention` is the dispatcher function.
"""
import contextlib
import os

import torch

from . import decode_attention as decode_attention_mod  # bound first: the name below becomes the function
from . import rmsnorm, rope, sampling
from .rmsnorm import HAS_TRITON

BACKENDS = ("torch", "triton")
_backend = "triton" if (HAS_TRITON and torch.cuda.is_available()) else "torch"


def backend():
    """Name of the current backend: "torch" or "triton"."""
    return _backend


def set_backend(name):
    """Route every op to the plain-torch references ("torch") or the Triton kernels ("triton")."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"longcot_kernels.set_backend: unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "triton":
        if not HAS_TRITON:
            raise RuntimeError("longcot_kernels.set_backend('triton'): Triton is not installed (pip install triton)")
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("longcot_kernels.set_backend('triton'): no CUDA GPU; to run the kernels on the CPU set "
                               "TRITON_INTERPRET=1 before the first `import longcot_kernels`")
    _backend = name


@contextlib.contextmanager
def use(name):
    """Context manager: `with longcot_kernels.use("triton"): ...` sets the backend and restores the previous one."""
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _needs_grad(*tensors):
    """The Triton kernels have no backward: training forwards take the torch reference (autograd)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def rms_norm(x, weight, eps=1e-6):
    """x (..., D), weight (D,) -> (..., D). See longcot_kernels/rmsnorm.py."""
    if _backend == "triton" and not _needs_grad(x, weight):
        return rmsnorm.rms_norm_triton(x, weight, eps)
    return rmsnorm.rms_norm_ref(x, weight, eps)


def apply_rope(q, k, positions, cos_table, sin_table):
    """q (B, T, Hq, Dh), k (B, T, Hkv, Dh), positions (B, T), tables (P, Dh/2) -> (q_out, k_out). See rope.py."""
    if _backend == "triton" and not _needs_grad(q, k):
        return rope.apply_rope_triton(q, k, positions, cos_table, sin_table)
    return rope.apply_rope_ref(q, k, positions, cos_table, sin_table)


def decode_attention(q, k_cache, v_cache, lengths, scale=None, max_len=None):
    """q (B, Hq, Dh), caches (B, Hkv, S, Dh), lengths (B,) -> (B, Hq, Dh). `max_len` (optional Python int
    >= lengths.max()) spares the Triton path a GPU->CPU sync. See longcot_kernels/decode_attention.py."""
    if _backend == "triton":
        return decode_attention_mod.decode_attention_triton(q, k_cache, v_cache, lengths, scale, max_len=max_len)
    return decode_attention_mod.decode_attention_ref(q, k_cache, v_cache, lengths, scale)


def sample(logits, temperature, top_p, u):
    """logits (B, V), temperature (0 = greedy), top_p in (0, 1], u (B,) uniform -> (tokens int64, logprobs fp32).
    See longcot_kernels/sampling.py."""
    if _backend == "triton":
        return sampling.sample_triton(logits, temperature, top_p, u)
    return sampling.sample_ref(logits, temperature, top_p, u)
