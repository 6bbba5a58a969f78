"""Rotary position embedding (RoPE): a plain-torch reference and a Triton kernel with the same result.

Each pair (x[i], x[i + Dh/2]) of a query/key head is rotated by the angle pos * theta_i (Su et al., 2021,
"RoFormer", eq. 34), in the non-interleaved "rotate half" layout used by Hugging Face Llama/Qwen2:

    x1, x2 = x[..., :Dh/2], x[..., Dh/2:]          c = cos_table[pos], s = sin_table[pos]   (Dh/2,)
    out    = cat(x1 * c - x2 * s,  x2 * c + x1 * s)

The tables (P, Dh/2) fp32 are built by the model and already hold any rope scaling (e.g. Llama-3's); this file
only applies them. Math is done in fp32 and the result is rounded to the input dtype once. (Hugging Face
multiplies in the input dtype, so in bf16 results may differ from HF by one bf16 rounding; ours is the more
accurate one.) Positions are arbitrary per row and token (left padding, decode with T = 1, packed rows).

Parts:
  apply_rope_ref(q, k, positions, cos_table, sin_table)      plain torch
  apply_rope_triton(...)                                      one Triton program per (b, t) token: it loads
                                                              cos/sin once and rotates all q and k heads
Called through `longcot_kernels.apply_rope` (longcot_kernels/__init__.py). Tested in tests/test_kernels.py, timed in
bench/bench_kernels.py.

Memory layout: q, k and positions may have any strides (passed to the kernel; q/k often are views of a fused
qkv projection). Tables must have a contiguous last dimension (else copied). Outputs are new contiguous tensors.
Precondition of the Triton path (not checked, a check would cost a GPU->CPU sync per layer):
0 <= positions < P. The reference raises an IndexError instead.
"""
import torch

from .rmsnorm import HAS_TRITON, check_triton_device

if HAS_TRITON:
    import triton
    import triton.language as tl


def apply_rope_ref(q, k, positions, cos_table, sin_table):
    """q (B, T, Hq, Dh), k (B, T, Hkv, Dh), positions (B, T) int, tables (P, Dh/2) -> (q_out, k_out)."""
    _check_inputs(q, k, positions, cos_table, sin_table)
    cos = cos_table.float()[positions][:, :, None, :]  # (B, T, 1, Dh/2) broadcast over heads
    sin = sin_table.float()[positions][:, :, None, :]

    def rotate(x):
        h = x.float()
        x1, x2 = h.chunk(2, dim=-1)  # (B, T, H, Dh/2) each
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)  # RoFormer eq. 34

    return rotate(q), rotate(k)


def _check_inputs(q, k, positions, cos_table, sin_table):
    if q.dim() != 4 or k.dim() != 4 or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"apply_rope: expected q (B, T, Hq, Dh) and k (B, T, Hkv, Dh), got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    Dh = q.shape[-1]
    if Dh % 2:
        raise ValueError(f"apply_rope: head dim must be even, got {Dh}")
    if positions.shape != q.shape[:2] or positions.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"apply_rope: positions must be (B, T) = {tuple(q.shape[:2])} int32/int64, got "
                         f"{tuple(positions.shape)} {positions.dtype}")
    for name, t in (("cos_table", cos_table), ("sin_table", sin_table)):
        if t.dim() != 2 or t.shape[1] != Dh // 2:
            raise ValueError(f"apply_rope: {name} must be (P, Dh/2 = {Dh // 2}), got {tuple(t.shape)}")


if HAS_TRITON:
    @triton.jit
    def _rotate_heads(x_ptr, o_ptr, sxh, sxd, soh, sod, H, c, s, HALF,
                      BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
        """Rotate the H heads of one token. x_ptr/o_ptr point at head 0, element 0; c, s are (BLOCK_D,) fp32."""
        offs_h = tl.arange(0, BLOCK_H)[:, None]  # (BLOCK_H, 1)
        offs_d = tl.arange(0, BLOCK_D)[None, :]  # (1, BLOCK_D)
        mask = (offs_h < H) & (offs_d < HALF)  # (BLOCK_H, BLOCK_D)
        x1 = tl.load(x_ptr + offs_h * sxh + offs_d * sxd, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_ptr + offs_h * sxh + (offs_d + HALF) * sxd, mask=mask, other=0.0).to(tl.float32)
        c2 = c[None, :]
        s2 = s[None, :]
        o1 = x1 * c2 - x2 * s2  # RoFormer eq. 34, first half
        o2 = x2 * c2 + x1 * s2  # second half
        tl.store(o_ptr + offs_h * soh + offs_d * sod, o1.to(o_ptr.dtype.element_ty), mask=mask)
        tl.store(o_ptr + offs_h * soh + (offs_d + HALF) * sod, o2.to(o_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _rope_kernel(q_ptr, k_ptr, qo_ptr, ko_ptr, pos_ptr, cos_ptr, sin_ptr,
                     sqb, sqt, sqh, sqd, skb, skt, skh, skd,
                     sqob, sqot, sqoh, sqod, skob, skot, skoh, skod,
                     spb, spt, s_tab, T, Hq, Hkv, HALF,
                     BLOCK_HQ: tl.constexpr, BLOCK_HKV: tl.constexpr, BLOCK_D: tl.constexpr):
        pid = tl.program_id(0)
        b = (pid // T).to(tl.int64)
        t = (pid % T).to(tl.int64)
        pos = tl.load(pos_ptr + b * spb + t * spt).to(tl.int64)  # this token's position
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < HALF
        c = tl.load(cos_ptr + pos * s_tab + offs_d, mask=dmask, other=0.0).to(tl.float32)  # (BLOCK_D,)
        s = tl.load(sin_ptr + pos * s_tab + offs_d, mask=dmask, other=0.0).to(tl.float32)
        _rotate_heads(q_ptr + b * sqb + t * sqt, qo_ptr + b * sqob + t * sqot, sqh, sqd, sqoh, sqod,
                      Hq, c, s, HALF, BLOCK_HQ, BLOCK_D)
        _rotate_heads(k_ptr + b * skb + t * skt, ko_ptr + b * skob + t * skot, skh, skd, skoh, skod,
                      Hkv, c, s, HALF, BLOCK_HKV, BLOCK_D)


def apply_rope_triton(q, k, positions, cos_table, sin_table):
    """Same contract as apply_rope_ref; strides of q, k, positions are used as they are."""
    _check_inputs(q, k, positions, cos_table, sin_table)
    check_triton_device(q, k, positions, cos_table, sin_table)
    B, T, Hq, Dh = q.shape
    Hkv = k.shape[2]
    cos = cos_table.float()
    sin = sin_table.float()
    if cos.stride(-1) != 1 or sin.stride(-1) != 1 or cos.stride(0) != sin.stride(0):
        cos, sin = cos.contiguous(), sin.contiguous()
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    if B * T == 0:
        return q_out, k_out
    half = Dh // 2
    block_d = triton.next_power_of_2(half)
    block_hq = triton.next_power_of_2(Hq)
    block_hkv = triton.next_power_of_2(Hkv)
    num_warps = 4 if block_hq * block_d >= 2048 else 2
    _rope_kernel[(B * T,)](q, k, q_out, k_out, positions, cos, sin,
                           *q.stride(), *k.stride(), *q_out.stride(), *k_out.stride(),
                           *positions.stride(), cos.stride(0), T, Hq, Hkv, half,
                           BLOCK_HQ=block_hq, BLOCK_HKV=block_hkv, BLOCK_D=block_d, num_warps=num_warps)
    return q_out, k_out
