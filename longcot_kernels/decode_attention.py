"""Attention for one new token per sequence against a KV cache (the decode step of generation).

    out[b, h] = softmax(q[b, h] . K[b, g(h), :L_b]^T * scale) @ V[b, g(h), :L_b]      (Vaswani et al., 2017, eq. 1)

with grouped-query attention (Ainslie et al., 2023): query head h reads kv head g(h) = h // (Hq / Hkv).
Row b attends to cache positions [0, lengths[b]); the current token's k/v are already written at
lengths[b] - 1. A row with length 0 returns zeros (not NaN).

Parts:
  decode_attention_ref(q, k_cache, v_cache, lengths, scale)     plain torch, the definition
  decode_attention_triton(...)                                   split-KV ("flash-decoding") Triton kernels
Called through `longcot_kernels.decode_attention` (longcot_kernels/__init__.py). Tested in
tests/test_kernels.py, timed in bench/bench_kernels.py.

Why split-KV. In decode there is one query per (row, head), so the work is reading the cache: for Qwen2.5-7B
with a 16K cache that is 16K * 4 kv heads * 128 * 2 (K and V) * 2 bytes = 33 MB per layer, and the speed
limit is memory bandwidth. A kernel with one program per (row, kv head) would run 4 programs for a batch of
one and leave ~128 of the GPU's 132 SMs idle. So the sequence is cut into `num_splits` chunks:

  1. _split_kernel, grid (B, Hkv, num_splits): each program takes ALL the query heads of one kv group
     (Hq/Hkv of them, padded to 16 rows so tl.dot can use tensor cores), so each K/V tile is read once per
     group, not once per query head. It runs an online softmax (Milakov & Gimelshein, 2018) over its chunk
     and writes the unnormalised partial result (running max m, sum l, accumulator acc) to an fp32 workspace.
  2. _combine_kernel, grid (B, Hq): rescales the partials to a common max and divides:
     out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s.

Split heuristic (`choose_num_splits`): aim at ~2 programs per SM (132 SMs on an H100), i.e.
num_splits = ceil(2 * SMs / (B * Hkv)), but never more splits than BLOCK_N-sized tiles in the longest row and
never more than 64 (to bound the combine's work). Batch 1 with 4 kv heads and a 16K cache: 64 splits (256
programs); batch 64: 2 splits. The grid depends only on host values (CUDA-graph friendly): the longest length
is read from `lengths` (one GPU->CPU sync) unless the caller passes `max_len`, any host-side bound >=
lengths.max() such as the cache capacity (the sampler does: no sync in the hot loop). Each program then sizes
its chunk from its OWN row's current length, chunk_b = ceil(ceil(L_b / num_splits) / BLOCK_N) * BLOCK_N, so
all the splits of a row share its work evenly whether the row is 300 or 16K tokens long and however loose
max_len is (sizing chunks from max_len instead would leave most programs idle early in a long generation).

Numerics: loads are cast to fp32; softmax is in fp32 with exp2 (scores are multiplied by scale * log2(e)).
tl.dot on fp32 inputs uses TF32 tensor cores on a GPU for bf16/fp16 caches: q and k come from bf16/fp16 so they
are exact in TF32 (<= 10 mantissa bits; the scale is applied after the dot to keep it so), and the
probabilities p are rounded to nearest TF32 first (Triton would otherwise truncate them), a relative error
<= 2^-11 per term, below bf16's own 2^-9. An fp32 cache uses "ieee" fp32 dots (exact but slower; tests only).

Memory layout: the caches may be views with arbitrary strides (e.g. a slice of a bigger preallocated cache,
or (B, S, Hkv, Dh) permuted): all four strides are passed to the kernel. q may be strided too.
Departures from the paper: none (the paper does not discuss kernels); this is a standard decoding kernel.
"""
import math

import torch

from .rmsnorm import HAS_TRITON, check_triton_device

if HAS_TRITON:
    import triton
    import triton.language as tl

MAX_SPLITS = 64  # bound on num_splits: the combine kernel holds (splits, Dh) fp32 values in registers
DEFAULT_SMS = 132  # H100 SXM; used when no GPU is visible (CPU interpreter) so the heuristic stays testable


def decode_attention_ref(q, k_cache, v_cache, lengths, scale=None):
    """q (B, Hq, Dh); caches (B, Hkv, S, Dh); lengths (B,) -> (B, Hq, Dh) in q.dtype, softmax in fp32."""
    B, Hq, Dh, Hkv, S = _check_inputs(q, k_cache, v_cache, lengths)
    scale = 1.0 / math.sqrt(Dh) if scale is None else scale
    G = Hq // Hkv
    qg = q.float().reshape(B, Hkv, G, Dh)  # (B, Hkv, G, Dh): heads h = g_kv * G + i share kv head g_kv
    scores = torch.einsum("bkgd,bksd->bkgs", qg, k_cache.float()) * scale  # (B, Hkv, G, S)
    valid = torch.arange(S, device=q.device)[None, :] < lengths.to(q.device)[:, None]  # (B, S)
    valid = valid[:, None, None, :]  # (B, 1, 1, S)
    p = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    p = p.masked_fill(~valid, 0.0)  # a length-0 row is all -inf -> NaN after softmax; this zeroes it
    out = torch.einsum("bkgs,bksd->bkgd", p, v_cache.float())  # (B, Hkv, G, Dh)
    return out.reshape(B, Hq, Dh).to(q.dtype)


def _check_inputs(q, k_cache, v_cache, lengths):
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"decode_attention: expected q (B, Hq, Dh) and k_cache == v_cache shape (B, Hkv, S, Dh), "
                         f"got q {tuple(q.shape)}, k {tuple(k_cache.shape)}, v {tuple(v_cache.shape)}")
    B, Hq, Dh = q.shape
    Bk, Hkv, S, Dhk = k_cache.shape
    if Bk != B or Dhk != Dh:
        raise ValueError(f"decode_attention: cache batch/head dim {Bk}/{Dhk} does not match q's {B}/{Dh}")
    if Hq % Hkv:
        raise ValueError(f"decode_attention: Hq={Hq} must be a multiple of Hkv={Hkv} (grouped-query attention)")
    if lengths.shape != (B,) or lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"decode_attention: lengths must be ({B},) int32/int64, got {tuple(lengths.shape)} "
                         f"{lengths.dtype}")
    return B, Hq, Dh, Hkv, S


def choose_num_splits(batch, kv_heads, max_len, block_n, num_sms=DEFAULT_SMS):
    """How many chunks to cut each row into: enough (row, kv head, chunk) programs for ~2 per SM, at most one
    chunk per BLOCK_N tile of the longest row, at most MAX_SPLITS."""
    tiles = max(1, -(-max_len // block_n))  # BLOCK_N tiles in the longest row
    want = -(-2 * num_sms // max(1, batch * kv_heads))  # ceil(2 * SMs / programs without splitting)
    return max(1, min(want, tiles, MAX_SPLITS))


def row_chunk(length, num_splits, block_n):
    """Tokens per chunk of a row of `length` tokens: whole tiles, num_splits chunks cover [0, length).
    The split kernel computes the same per row (kept here so the rule is readable and tested)."""
    per_split = -(-length // num_splits)  # ceil
    return -(-per_split // block_n) * block_n  # rounded up to whole tiles


if HAS_TRITON:
    @triton.jit
    def _split_kernel(q_ptr, k_ptr, v_ptr, len_ptr, m_ptr, l_ptr, acc_ptr,
                      sqb, sqh, sqd, skb, skh, sks, skd, svb, svh, svs, svd,
                      S, G, NUM_SPLITS, qk_scale,
                      DH: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
                      PRECISION: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        kvh = tl.program_id(1).to(tl.int64)
        split = tl.program_id(2)
        length = tl.minimum(tl.load(len_ptr + b).to(tl.int32), S)  # never read past the cache capacity
        chunk = tl.cdiv(tl.cdiv(length, NUM_SPLITS), BLOCK_N) * BLOCK_N  # this row's chunk (= row_chunk)
        start = split * chunk
        end = tl.minimum(start + chunk, length)  # this program's tokens: [start, end), maybe empty

        offs_g = tl.arange(0, BLOCK_G)  # (BLOCK_G,) query heads of this group (padded to >= 16 rows)
        offs_d = tl.arange(0, DH)  # (DH,)
        heads = kvh * G + offs_g  # (BLOCK_G,) query head index
        gmask = offs_g < G
        q = tl.load(q_ptr + b * sqb + heads[:, None] * sqh + offs_d[None, :] * sqd,
                    mask=gmask[:, None], other=0.0).to(tl.float32)  # (BLOCK_G, DH)

        m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)  # running max (log2 units)
        l_i = tl.zeros([BLOCK_G], dtype=tl.float32)  # running sum of exp2(s - m_i)
        acc = tl.zeros([BLOCK_G, DH], dtype=tl.float32)  # running sum of exp2(s - m_i) * v
        k_base = k_ptr + b * skb + kvh * skh
        v_base = v_ptr + b * svb + kvh * svh
        for n0 in range(start, end, BLOCK_N):  # every iteration holds >= 1 valid token, so m_i becomes finite
            offs_n = n0 + tl.arange(0, BLOCK_N)  # (BLOCK_N,) cache positions
            nmask = offs_n < end
            kt = tl.load(k_base + offs_n[None, :] * sks + offs_d[:, None] * skd,
                         mask=nmask[None, :], other=0.0).to(tl.float32)  # (DH, BLOCK_N): K^T tile
            s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_G, BLOCK_N) scores, log2 units
            s = tl.where(nmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))  # (BLOCK_G,)
            alpha = tl.exp2(m_i - m_new)  # rescale of the old partial sums (0 on the first tile)
            p = tl.exp2(s - m_new[:, None])  # (BLOCK_G, BLOCK_N), 0 at masked positions
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + offs_n[:, None] * svs + offs_d[None, :] * svd,
                        mask=nmask[:, None], other=0.0).to(tl.float32)  # (BLOCK_N, DH)
            if PRECISION == "tf32":  # round p to nearest TF32 (tensor cores would truncate the low 13 bits)
                p = ((p.to(tl.int32, bitcast=True) + 0x1000) & -8192).to(tl.float32, bitcast=True)
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
            m_i = m_new

        # workspace layout: m, l (B, Hq, NUM_SPLITS); acc (B, Hq, NUM_SPLITS, DH); all contiguous fp32
        row = (b * G * tl.num_programs(1) + heads) * NUM_SPLITS + split  # (BLOCK_G,) flat (b, h, split)
        tl.store(m_ptr + row, m_i, mask=gmask)
        tl.store(l_ptr + row, l_i, mask=gmask)
        tl.store(acc_ptr + row[:, None] * DH + offs_d[None, :], acc, mask=gmask[:, None])

    @triton.jit
    def _combine_kernel(m_ptr, l_ptr, acc_ptr, o_ptr, sob, soh, sod, Hq, NUM_SPLITS,
                        BLOCK_S: tl.constexpr, DH: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1).to(tl.int64)
        offs_s = tl.arange(0, BLOCK_S)  # (BLOCK_S,) splits
        offs_d = tl.arange(0, DH)
        smask = offs_s < NUM_SPLITS
        row = (b * Hq + h) * NUM_SPLITS + offs_s  # (BLOCK_S,)
        m = tl.load(m_ptr + row, mask=smask, other=float("-inf"))  # empty chunks have m = -inf, l = 0
        l = tl.load(l_ptr + row, mask=smask, other=0.0)
        acc = tl.load(acc_ptr + row[:, None] * DH + offs_d[None, :], mask=smask[:, None], other=0.0)  # (BLOCK_S, DH)
        m_max = tl.max(m, axis=0)
        m_max = tl.where(m_max == float("-inf"), 0.0, m_max)  # length-0 row: keep exp2 finite (weights become 0)
        w = tl.exp2(m - m_max)  # (BLOCK_S,) rescale each split to the common max
        denom = tl.sum(w * l, axis=0)
        num = tl.sum(w[:, None] * acc, axis=0)  # (DH,)
        out = num / tl.where(denom > 0, denom, 1.0)  # length 0: num = 0 -> zeros, not NaN
        tl.store(o_ptr + b * sob + h * soh + offs_d * sod, out.to(o_ptr.dtype.element_ty))


def decode_attention_triton(q, k_cache, v_cache, lengths, scale=None, max_len=None, num_splits=None,
                            block_n=None):
    """Same contract as decode_attention_ref. Extra knobs: max_len (int, >= lengths.max(); avoids a sync),
    num_splits (force a split count; tests use it), block_n (tokens per tile, power of two >= 16)."""
    B, Hq, Dh, Hkv, S = _check_inputs(q, k_cache, v_cache, lengths)
    check_triton_device(q, k_cache, v_cache, lengths)
    if Dh < 16 or Dh & (Dh - 1):
        raise ValueError(f"decode_attention_triton: head dim must be a power of two >= 16, got {Dh}")
    scale = 1.0 / math.sqrt(Dh) if scale is None else scale
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if B == 0:
        return out
    if max_len is None:
        max_len = int(lengths.max())  # GPU->CPU sync; pass max_len to avoid it
    max_len = max(1, min(int(max_len), S))
    if block_n is None:
        block_n = 64 if Dh <= 64 else 32  # keeps one fp32 K and V tile (BLOCK_N x Dh) at <= 4K values each
    if q.is_cuda:
        num_sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    else:
        num_sms = DEFAULT_SMS
    if num_splits is None:
        num_splits = choose_num_splits(B, Hkv, max_len, block_n, num_sms)
    G = Hq // Hkv
    block_g = max(16, triton.next_power_of_2(G))  # tl.dot needs >= 16 rows on older Triton versions
    ws_m = torch.empty(B, Hq, num_splits, dtype=torch.float32, device=q.device)
    ws_l = torch.empty_like(ws_m)
    ws_acc = torch.empty(B, Hq, num_splits, Dh, dtype=torch.float32, device=q.device)
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    lengths = lengths.to(q.device)
    _split_kernel[(B, Hkv, num_splits)](
        q, k_cache, v_cache, lengths, ws_m, ws_l, ws_acc,
        *q.stride(), *k_cache.stride(), *v_cache.stride(),
        S, G, num_splits, scale * 1.4426950408889634,  # log2(e): exp(x) = exp2(x * log2(e))
        DH=Dh, BLOCK_G=block_g, BLOCK_N=block_n, PRECISION=precision, num_warps=4)
    _combine_kernel[(B, Hq)](ws_m, ws_l, ws_acc, out, *out.stride(), Hq, num_splits,
                             BLOCK_S=triton.next_power_of_2(num_splits), DH=Dh,
                             num_warps=4)
    return out
