"""RMSNorm: a plain-torch reference and a Triton kernel with the same result.

    y = weight * (x / sqrt(mean(x^2) + eps))          (Zhang & Sennrich, 2019, eq. 4)

The exact order of operations follows Hugging Face's LlamaRMSNorm / Qwen2RMSNorm, which both models use:
the statistics are taken in fp32, the normalised value is rounded back to x's dtype, and only then multiplied
by the weight (so in bf16 there are two roundings, and we reproduce both).

Parts:
  rms_norm_ref(x, weight, eps)          plain torch, the definition
  rms_norm_triton(x, weight, eps)       one Triton program per row
Called through `longcot_kernels.rms_norm`, which picks one of them (see longcot_kernels/__init__.py).
Tested in tests/test_kernels.py, timed in bench/bench_kernels.py.

Memory layout: the wrapper views x as (rows, D). Rows may have any stride; the last dimension must have
stride 1, otherwise the wrapper makes a contiguous copy (`.contiguous()`). The output is a new contiguous tensor.
Not from the paper: the paper does not discuss kernels; this is the standard Llama/Qwen2 layer.
"""
import os

import torch

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # importing `longcot_kernels` must work without Triton (then only the reference exists)
    HAS_TRITON = False

MAX_ONE_BLOCK = 8192  # rows up to this width are held in registers at once; wider rows are processed in a loop


def rms_norm_ref(x, weight, eps=1e-6):
    """x (..., D) any float dtype, weight (D,) -> (..., D) with dtype promote(weight, x) (= x.dtype when equal)."""
    _check_inputs(x, weight)
    h = x.float()  # (..., D) statistics in fp32, as in Hugging Face
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)  # x / RMS(x)   (Zhang & Sennrich eq. 4)
    return weight * h.to(x.dtype)  # round to x's dtype first, then scale (matches HF's two roundings)


def _check_inputs(x, weight):
    if x.dim() < 1 or weight.dim() != 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"rms_norm: expected x (..., D) and weight (D,), got x {tuple(x.shape)} and weight "
                         f"{tuple(weight.shape)}")
    if not x.is_floating_point() or not weight.is_floating_point():
        raise TypeError(f"rms_norm: x and weight must be floating point, got {x.dtype} and {weight.dtype}")


def check_triton_device(*tensors):
    """Triton needs CUDA tensors, or CPU tensors under the interpreter (TRITON_INTERPRET=1 before import)."""
    if not HAS_TRITON:
        raise RuntimeError("kernels: Triton is not installed; use the 'torch' backend")
    for t in tensors:
        if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("kernels: Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 set before "
                               f"`import longcot_kernels` to run them on the CPU); got a tensor on {t.device}")


if HAS_TRITON:
    @triton.jit
    def _rms_norm_kernel(x_ptr, w_ptr, y_ptr, stride_x, stride_y, D, eps,
                         BLOCK: tl.constexpr, ONE_BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # int64: row * stride may exceed 2^31 for big batches
        x_row = x_ptr + row * stride_x
        y_row = y_ptr + row * stride_y
        offs = tl.arange(0, BLOCK)  # (BLOCK,)
        if ONE_BLOCK:  # the whole row fits: read x once
            mask = offs < D
            h = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)  # (BLOCK,)
            r = tl.rsqrt(tl.sum(h * h, axis=0) / D + eps)  # scalar: 1 / RMS(x)
            n = (h * r).to(x_ptr.dtype.element_ty).to(tl.float32)  # round to x's dtype, as HF does
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(y_row + offs, (w * n).to(y_ptr.dtype.element_ty), mask=mask)
        else:  # wide row: one pass for the sum of squares, a second to normalise (the row is re-read from cache)
            acc = tl.zeros([BLOCK], dtype=tl.float32)  # (BLOCK,) per-lane partial sums
            for start in range(0, D, BLOCK):
                mask = start + offs < D
                h = tl.load(x_row + start + offs, mask=mask, other=0.0).to(tl.float32)
                acc += h * h
            r = tl.rsqrt(tl.sum(acc, axis=0) / D + eps)
            for start in range(0, D, BLOCK):
                mask = start + offs < D
                h = tl.load(x_row + start + offs, mask=mask, other=0.0).to(tl.float32)
                n = (h * r).to(x_ptr.dtype.element_ty).to(tl.float32)
                w = tl.load(w_ptr + start + offs, mask=mask, other=0.0).to(tl.float32)
                tl.store(y_row + start + offs, (w * n).to(y_ptr.dtype.element_ty), mask=mask)


def rms_norm_triton(x, weight, eps=1e-6, block=None):
    """Same contract as rms_norm_ref. `block` (a power of two) forces the looped kernel; tests use it."""
    _check_inputs(x, weight)
    check_triton_device(x, weight)
    D = x.shape[-1]
    x2 = x.reshape(-1, D)  # (rows, D): a view when possible
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    w = weight.contiguous()
    out_dtype = torch.promote_types(x.dtype, weight.dtype)
    y = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    if x2.shape[0] == 0:
        return y.reshape(x.shape)
    if block is None:
        block = triton.next_power_of_2(D)
        one_block = block <= MAX_ONE_BLOCK
        if not one_block:
            block = 4096
    else:
        if block & (block - 1):
            raise ValueError(f"rms_norm_triton: block must be a power of two, got {block}")
        one_block = block >= D
    num_warps = 8 if block >= 4096 else (4 if block >= 1024 else 2)  # ~16 fp32 values per thread or fewer
    _rms_norm_kernel[(x2.shape[0],)](x2, w, y, x2.stride(0), y.stride(0), D, eps,
                                     BLOCK=block, ONE_BLOCK=one_block, num_warps=num_warps)
    return y.reshape(x.shape)
