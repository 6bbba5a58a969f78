"""Token sampling with temperature and nucleus (top-p) truncation, and the log-probability PPO needs.

The caller supplies the randomness: u (B,) uniform in [0, 1). Given u the result is deterministic, so a run is
reproducible from a seed and the Triton kernel can be tested for exact agreement with the reference.

Semantics (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration", eq. 2-3):
    p       = softmax(logits.float() / temperature)                           (V,)
    tau     = the largest value with  sum(p[p >= tau]) >= top_p               nucleus = {j : p_j >= tau}
              (the smallest set of most likely tokens with mass >= top_p; every token tied at tau is in it)
    token   = the first index j of the nucleus where the running sum of p over the nucleus, in vocabulary order,
              exceeds u * (nucleus mass)                                      (inverse-CDF draw)
    logprob = log_softmax(logits.float() / temperature)[token]                (the FULL tempered distribution,
              not the truncated one: it is the behaviour policy's log-prob that PPO's ratio needs)
    temperature == 0: token = argmax (first index of the max), logprob = log_softmax(logits.float())[token].
    top_p >= 1: no truncation (the nucleus is the whole vocabulary; no threshold is computed at all).
    Rounding: if u * mass is not below the last running sum (fp32 rounding with u close to 1), the token is the
    last nucleus token with p > 0.

Parts:
  sample_ref(logits, temperature, top_p, u)       plain torch: a full sort and cumsum, the definition
  sample_triton(logits, temperature, top_p, u)    Triton, no sort: one program per row once the batch fills the
                                                  GPU, else each row split over several (choose_sample_splits)
  sample_split_triton(..., splits)                the split version (end of file): chunks of the vocabulary, the
                                                  same threshold search with its partial masses combined per pass
Called through `longcot_kernels.sample` (longcot_kernels/__init__.py). Tested in tests/test_kernels.py, timed in
bench/bench_kernels.py.

How the Triton kernel finds tau without sorting. For p >= 0 the order of fp32 values is the order of their bit
patterns read as integers, and every p in [0, 1] has a pattern in [0, 0x3F800000] (< 2^30). mass(t) =
sum(p[p >= t]) only falls as t grows, so tau is found by a search on the integer t: keep lo, hi with
mass(lo) >= top_p > mass(hi) (lo = 0 holds by definition: "everything"; hi = bits(1.0) + 1 has mass 0).
Each pass over the vocabulary:
  * evaluates NT = 8 thresholds t_k = lo + k (hi - lo) / 8 at once (a (BLOCK, 8) compare, summed per column)
    and keeps the eighth [t_j, t_j+1) where the mass crosses top_p: 3 bits per pass;
  * also finds the smallest and largest pattern present inside [lo, hi), and pulls the new ends in to them
    (no p lies in the gaps, so no mass changes). When a single distinct value is left, hi = lo + 1 at once.
When hi = lo + 1, tau = lo exactly: no tolerance, and ties at tau are in by construction (the test is p >= tau).
At most 10 passes (ceil(30 / 3)); later ones are skipped once exact. Every pass recomputes p with the same
instructions, so all masses compare identical values and are monotone in t (float addition is monotone).

Cost, in passes over the row's V logits (each re-reads V values; for a 152K vocabulary, from L2):
    greedy: 1 (max + argmax + sum-exp)      top_p = 1: 2 (max/sum-exp online, then the draw)
    top_p < 1: 2 + 3..10 search passes. Simulated on random logits: V = 8: 3-5; V = 1000: 4-7;
    V = 152064: 4-6 for peaked rows (logits ~ 6 N(0,1)), 8-10 for flat ones (~ N(0,1)).
Per element a search pass does ~40 simple operations (the 8 compares dominate). A full sort costs
O(V log V) work and a (B, V) index buffer; here there is no extra memory. The price: one row runs on one SM,
so batch 1 is latency-bound while a large batch fills the GPU (bench/bench_kernels.py prints both).

Small batches: sample_split_triton cuts each row into C chunks of whole BLOCKs (choose_sample_splits: ~2
programs per SM, >= MIN_CHUNK entries each; batch 1 at V = 152064: 50 chunks of 3072) and runs the same steps
as separate launches, each with grid (B, C) (or (B,)), so no program waits for another: chunk max and sum-exp;
SEARCH_PASSES + 1 search launches, launch k first narrowing [lo, hi) from launch k - 1's per-chunk partial
masses and data bounds (every program of a row computes the same interval from the same numbers; the chunk-0
program stores it for launch k + 1), then adding up its own chunk's partials (two buffers alternate, so no
launch reads what it writes); each chunk's nucleus mass; the draw, which picks the chunk where the running
mass passes u * total and scans that chunk only. 14 launches, no host sync, grids fixed by (B, V): CUDA-graph
capturable. p is computed from the row's combined max and sum by the same instructions everywhere.

Where results may differ from the reference: p comes from two different exp implementations and is summed in
two different orders, so the two agree to ~1e-7 relative. The token can differ only if u * mass lies within
that distance of a cumulative boundary, or the nucleus mass within it of top_p (the tests measure this margin).
Departures from the paper: none in the math. The uniform numbers come from the caller instead of an internal
generator, so sampling is reproducible from a seed and the two versions can be compared exactly.
"""
import torch

from .rmsnorm import HAS_TRITON, check_triton_device

if HAS_TRITON:
    import triton
    import triton.language as tl

NT = 8  # thresholds evaluated per search pass (power of two): log2(8) = 3 bits of the threshold per pass
SEARCH_PASSES = 10  # ceil(30 / 3): p in [0, 1] has fewer than 2^30 bit patterns (an upper bound; most rows stop early)
ONE_BITS = 0x3F800000  # bit pattern of 1.0f; every probability's pattern is <= this
MAX_BLOCK = 1024  # vocabulary entries per loop step


def sample_ref(logits, temperature, top_p, u):
    """logits (B, V) float, temperature float >= 0, top_p in (0, 1], u (B,) in [0, 1) ->
    tokens (B,) int64, logprobs (B,) float32."""
    _check_inputs(logits, temperature, top_p, u)
    z = logits.float()  # (B, V)
    if temperature == 0:  # greedy
        tokens = z.argmax(dim=-1)  # first index of the max
        return tokens, torch.log_softmax(z, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    z = z / temperature
    p = torch.softmax(z, dim=-1)  # (B, V)
    w = p
    if top_p < 1:
        p_sorted = p.sort(dim=-1, descending=True).values  # (B, V)
        mass_sorted = p_sorted.cumsum(dim=-1)  # (B, V) mass of the k+1 most likely tokens
        k = (mass_sorted < top_p).sum(dim=-1, keepdim=True).clamp(max=p.shape[-1] - 1)  # first k reaching top_p
        tau = p_sorted.gather(-1, k)  # (B, 1) smallest probability in the nucleus
        w = torch.where(p >= tau, p, torch.zeros_like(p))  # ties at tau are in (Holtzman et al. eq. 2)
    running = w.cumsum(dim=-1)  # (B, V) running sum over the nucleus, vocabulary order
    target = u.float()[:, None] * running[:, -1:]  # (B, 1) u * nucleus mass
    tokens = (running <= target).sum(dim=-1)  # first index with running > target (V if none)
    last = p.shape[-1] - 1 - (w > 0).flip(-1).int().argmax(dim=-1)  # last nucleus token with p > 0
    tokens = torch.minimum(tokens, last)  # u * mass rounded up to the total: take the last token
    logprobs = torch.log_softmax(z, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)  # full distribution
    return tokens, logprobs


def _check_inputs(logits, temperature, top_p, u):
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"sample: logits must be a (B, V) float tensor, got {tuple(logits.shape)} {logits.dtype}")
    if not (temperature >= 0):
        raise ValueError(f"sample: temperature must be >= 0 (0 = greedy), got {temperature}")
    if not (0 < top_p <= 1):
        raise ValueError(f"sample: top_p must be in (0, 1], got {top_p}")
    if u.shape != (logits.shape[0],):
        raise ValueError(f"sample: u must be ({logits.shape[0]},), one uniform number per row, got {tuple(u.shape)}")


if HAS_TRITON:
    @triton.jit
    def _sample_kernel(logits_ptr, stride_row, u_ptr, tok_ptr, lp_ptr, V, temperature, top_p,
                       GREEDY: tl.constexpr, TOP_P: tl.constexpr, BLOCK: tl.constexpr,
                       NT: tl.constexpr, SEARCH_PASSES: tl.constexpr, ONE_BITS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride_row
        offs = tl.arange(0, BLOCK)  # (BLOCK,)
        BIG: tl.constexpr = 2147483647  # "no token yet"

        # ---- pass 1: max and sum of exp (online, Milakov & Gimelshein 2018); argmax for greedy ----
        m = tl.full([], float("-inf"), tl.float32)
        s = tl.zeros([], tl.float32)
        best = tl.zeros([], tl.int32)
        for start in range(0, V, BLOCK):
            idx = start + offs
            mask = idx < V
            z = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32)
            if not GREEDY:
                z = tl.math.div_rn(z, temperature)
            blk_max = tl.max(z, axis=0)
            if GREEDY:
                best = tl.where(blk_max > m, start + tl.argmax(z, axis=0), best)  # strict: keep the first max
            m_new = tl.maximum(m, blk_max)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a block of -inf logits must not give NaN
            s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(z - m_safe), axis=0)
            m = m_new
        log_s = tl.log(s)

        if GREEDY:
            tl.store(tok_ptr + row, best.to(tl.int64))
            tl.store(lp_ptr + row, -log_s)  # z[best] - m - log(s) with z[best] = m
        else:
            inv_s = 1.0 / s
            tau = tl.zeros([], tl.int32)  # bit pattern of the threshold; 0 = keep every token
            mass = s * inv_s  # nucleus mass; the whole vocabulary unless top-p truncates
            if TOP_P:
                # ---- passes 2..11: search tau on the integer bit pattern, NT thresholds per pass ----
                kk = tl.arange(0, NT)  # (NT,)
                lo = tl.zeros([], tl.int64)  # mass(lo) >= top_p (lo = 0: "all tokens", true by definition)
                hi = tl.full([], ONE_BITS + 1, tl.int64)  # mass(hi) = 0 < top_p
                masses = tl.zeros([NT], tl.float32)
                j = tl.zeros([], tl.int32)
                for _ in range(SEARCH_PASSES):
                    if hi - lo > 1:  # not yet exact (later passes are skipped once it is)
                        span = hi - lo
                        t = (lo + (kk.to(tl.int64) * span) // NT).to(tl.int32)  # (NT,) thresholds, t[0] = lo
                        acc = tl.zeros([BLOCK, NT], tl.float32)  # per-lane partial masses, reduced once per pass
                        vmin = tl.full([BLOCK], BIG, tl.int32)  # per lane: smallest pattern inside [lo, hi)
                        vmax = tl.full([BLOCK], -1, tl.int32)  # per lane: largest pattern inside [lo, hi)
                        for start in range(0, V, BLOCK):
                            idx = start + offs
                            x = tl.load(base + idx, mask=idx < V, other=float("-inf")).to(tl.float32)
                            p = tl.exp(tl.math.div_rn(x, temperature) - m) * inv_s  # (BLOCK,) as in pass 1
                            bits = p.to(tl.int32, bitcast=True)  # (BLOCK,) ordered like p, since p >= 0
                            acc += tl.where(bits[:, None] >= t[None, :], p[:, None], 0.0)  # (BLOCK, NT)
                            inside = (bits >= lo) & (bits < hi)
                            vmin = tl.minimum(vmin, tl.where(inside, bits, BIG))
                            vmax = tl.maximum(vmax, tl.where(inside, bits, -1))
                        masses = tl.sum(acc, axis=0)  # (NT,) mass(t_k) = sum of p over p >= t_k
                        # mass falls as t grows, so "mass >= top_p" holds on a prefix k = 0..j: keep [t_j, t_j+1).
                        # (j = 0 if even t_0 fails: only lo = 0 with a rounded total < top_p; lo then stays at
                        # the smallest p, which keeps every token, the intended fallback)
                        j = tl.maximum(tl.sum((masses >= top_p).to(tl.int32), axis=0) - 1, 0)
                        new_hi = tl.where(j + 1 < NT, lo + ((j + 1).to(tl.int64) * span) // NT, hi)
                        new_lo = lo + (j.to(tl.int64) * span) // NT
                        # shrink to the data: no p lies in [lo, vmin) or (vmax, hi), so moving the ends there
                        # changes no mass. If one distinct value is left, this makes hi = lo + 1: done early.
                        lo = tl.minimum(tl.maximum(new_lo, tl.min(vmin, axis=0)), new_hi - 1)
                        hi = tl.maximum(tl.minimum(new_hi, tl.max(vmax, axis=0) + 1), lo + 1)
                tau = lo.to(tl.int32)  # hi == lo + 1 now, so tau = lo exactly (ties at tau are included)
                mass = tl.sum(tl.where(kk == j, masses, 0.0), axis=0)  # mass(tau), from the last pass

            # ---- last pass: inverse-CDF draw over the nucleus in vocabulary order ----
            target = tl.load(u_ptr + row).to(tl.float32) * mass
            running = tl.zeros([], tl.float32)  # running sum of nucleus probabilities before this block
            first_hit = tl.full([BLOCK], BIG, tl.int32)  # per lane: first index whose running sum > target
            last_nz = tl.full([BLOCK], -1, tl.int32)  # per lane: last nucleus index with p > 0 (rounding fallback)
            for start in range(0, V, BLOCK):
                idx = start + offs
                mask = idx < V
                x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32)
                p = tl.exp(tl.math.div_rn(x, temperature) - m) * inv_s  # (BLOCK,), 0 outside the vocabulary
                w = tl.where(p.to(tl.int32, bitcast=True) >= tau, p, 0.0)  # (BLOCK,) nucleus probabilities
                c = running + tl.cumsum(w, axis=0)  # (BLOCK,) running sum, inclusive
                first_hit = tl.minimum(first_hit, tl.where((c > target) & mask, idx, BIG))
                last_nz = tl.maximum(last_nz, tl.where(w > 0, idx, -1))
                running = tl.max(c, axis=0)  # c never decreases: its max is its last value
            token = tl.min(first_hit, axis=0)
            token = tl.where(token == BIG, tl.maximum(tl.max(last_nz, axis=0), 0), token)
            z_tok = tl.math.div_rn(tl.load(base + token).to(tl.float32), temperature)
            tl.store(tok_ptr + row, token.to(tl.int64))
            tl.store(lp_ptr + row, z_tok - m - log_s)  # log_softmax at the token, full distribution


def sample_triton(logits, temperature, top_p, u, splits=None):
    """Same contract as sample_ref. Rows may be strided (e.g. logits[:, -1, :]); the vocabulary dimension
    must have stride 1, else the wrapper copies. splits: programs per row (default choose_sample_splits: one
    per row once the batch fills the GPU, several for small batches: sample_split_triton); greedy: always one."""
    _check_inputs(logits, temperature, top_p, u)
    check_triton_device(logits, u)
    B, V = logits.shape
    if splits is None and temperature != 0 and B > 0:
        sms = torch.cuda.get_device_properties(logits.device).multi_processor_count if logits.is_cuda \
            else DEFAULT_SMS
        splits = choose_sample_splits(B, V, sms)
    if splits is not None and splits > 1 and temperature != 0:
        return sample_split_triton(logits, temperature, top_p, u, splits)
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    u = u.float().contiguous()
    tokens = torch.empty(B, dtype=torch.int64, device=logits.device)
    logprobs = torch.empty(B, dtype=torch.float32, device=logits.device)
    if B == 0:
        return tokens, logprobs
    block = min(MAX_BLOCK, triton.next_power_of_2(V))
    greedy = temperature == 0
    _sample_kernel[(B,)](logits, logits.stride(0), u, tokens, logprobs, V,
                         1.0 if greedy else float(temperature), float(top_p),
                         GREEDY=greedy, TOP_P=(not greedy) and top_p < 1, BLOCK=block,
                         NT=NT, SEARCH_PASSES=SEARCH_PASSES, ONE_BITS=ONE_BITS,
                         num_warps=8 if block >= 1024 else 4)
    return tokens, logprobs


# ----------------------------------------------------------------------------------------------------
# Split version: several programs per row (small batches)
# ----------------------------------------------------------------------------------------------------
MIN_CHUNK = 2048  # vocabulary entries per program at least (below that, launches cost more than they save)
MAX_SPLITS = 64  # programs per row at most (the per-row combines hold BLOCK_C values)
DEFAULT_SMS = 132  # H100 SXM; used when no GPU is visible (CPU interpreter) so the heuristic stays testable


def choose_sample_splits(batch, vocab, num_sms=DEFAULT_SMS):
    """Programs per row: 1 when the batch alone fills the GPU (>= one row per SM), else enough for ~2 programs
    per SM, each with >= MIN_CHUNK entries, at most MAX_SPLITS. Qwen's V = 152064: batch 1 -> 64, 8 -> 33,
    64 -> 5, 132 -> 1."""
    if batch >= num_sms:
        return 1
    want = -(-2 * num_sms // max(1, batch))
    return max(1, min(want, -(-vocab // MIN_CHUNK), MAX_SPLITS))


def split_block(vocab, splits):
    """Vocabulary entries per loop step of the split kernels: a chunk's size rounded up to a power of two,
    in [16, MAX_BLOCK]."""
    return max(16, min(MAX_BLOCK, 1 << (-(-vocab // splits) - 1).bit_length()))


def split_chunks(vocab, splits, block):
    """(entries per chunk, number of chunks): whole BLOCKs, `splits` chunks at most covering [0, vocab)."""
    chunk = -(-(-(-vocab // splits)) // block) * block
    return chunk, -(-vocab // chunk)


if HAS_TRITON:
    @triton.jit
    def _row_max_sum(m_ptr, s_ptr, row, C, BLOCK_C: tl.constexpr):
        """The row's max M and sum S = sum exp(z - M), combined from its chunks' (m, s): the same instructions in
        every kernel, so every program of a row sees bit-identical M and S (and so identical p)."""
        offs = tl.arange(0, BLOCK_C)
        cm = offs < C
        m = tl.load(m_ptr + row * C + offs, mask=cm, other=float("-inf"))
        s = tl.load(s_ptr + row * C + offs, mask=cm, other=0.0)
        M = tl.max(m, axis=0)
        M_safe = tl.where(M == float("-inf"), 0.0, M)
        S = tl.sum(tl.where(m == float("-inf"), 0.0, s * tl.exp(m - M_safe)), axis=0)
        return M, S

    @triton.jit
    def _split_stats_kernel(logits_ptr, stride_row, m_ptr, s_ptr, V, C, CHUNK, temperature,
                            BLOCK: tl.constexpr):
        """Grid (B, C): each chunk's max m_c and sum exp(z - m_c) (online, as pass 1 of _sample_kernel)."""
        row = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1)
        base = logits_ptr + row * stride_row
        offs = tl.arange(0, BLOCK)
        start = c * CHUNK
        end = tl.minimum(start + CHUNK, V)
        m = tl.full([], float("-inf"), tl.float32)
        s = tl.zeros([], tl.float32)
        for b0 in range(start, end, BLOCK):
            idx = b0 + offs
            z = tl.load(base + idx, mask=idx < end, other=float("-inf")).to(tl.float32)
            z = tl.math.div_rn(z, temperature)
            m_new = tl.maximum(m, tl.max(z, axis=0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(z - m_safe), axis=0)
            m = m_new
        tl.store(m_ptr + row * C + c, m)
        tl.store(s_ptr + row * C + c, s)

    @triton.jit
    def _split_bounds(lohi_ptr, mass_ptr, vmin_ptr, vmax_ptr, row, C, PASS, PASSES, top_p,
                      NT: tl.constexpr, BLOCK_C: tl.constexpr, ONE_BITS: tl.constexpr):
        """The search interval [lo, hi) before pass PASS: read the one before pass PASS - 1 and narrow it with
        that pass's per-chunk partial masses (the rule of _sample_kernel). Every program computes it alike."""
        if PASS == 0:
            lo = tl.zeros([], tl.int64)
            hi = tl.full([], ONE_BITS + 1, tl.int64)
        else:
            lo = tl.load(lohi_ptr + (row * (PASSES + 1) + PASS - 1) * 2)
            hi = tl.load(lohi_ptr + (row * (PASSES + 1) + PASS - 1) * 2 + 1)
            if hi - lo > 1:  # pass PASS - 1 ran: its partials are in buffer (PASS - 1) % 2
                buf = (PASS - 1) % 2
                offs_c = tl.arange(0, BLOCK_C)
                kk = tl.arange(0, NT)
                cm = offs_c < C
                part = (buf * tl.num_programs(0) + row) * C + offs_c  # (BLOCK_C,) flat (buffer, row, chunk)
                masses = tl.sum(tl.load(mass_ptr + part[:, None] * NT + kk[None, :], mask=cm[:, None], other=0.0),
                                axis=0)  # (NT,) mass(t_k) over the whole row
                vmin = tl.min(tl.load(vmin_ptr + part, mask=cm, other=2147483647), axis=0)
                vmax = tl.max(tl.load(vmax_ptr + part, mask=cm, other=-1), axis=0)
                span = hi - lo
                j = tl.maximum(tl.sum((masses >= top_p).to(tl.int32), axis=0) - 1, 0)
                new_hi = tl.where(j + 1 < NT, lo + ((j + 1).to(tl.int64) * span) // NT, hi)
                new_lo = lo + (j.to(tl.int64) * span) // NT
                lo2 = tl.minimum(tl.maximum(new_lo, vmin.to(tl.int64)), new_hi - 1)
                hi = tl.maximum(tl.minimum(new_hi, vmax.to(tl.int64) + 1), lo2 + 1)
                lo = lo2
        return lo, hi

    @triton.jit
    def _split_search_kernel(logits_ptr, stride_row, m_ptr, s_ptr, lohi_ptr, mass_ptr, vmin_ptr, vmax_ptr,
                             V, C, CHUNK, PASS, PASSES, temperature, top_p,
                             BLOCK: tl.constexpr, BLOCK_C: tl.constexpr, NT: tl.constexpr,
                             ONE_BITS: tl.constexpr):
        """Grid (B, C), launched once per search pass PASS = 0..PASSES-1 (and once more with PASS = PASSES to
        store the final interval). Each program narrows [lo, hi) from the previous pass's partials (program
        c = 0 stores it for the next launch), then, if not exact, adds up its chunk's mass above each of the NT
        thresholds and the smallest / largest bit pattern inside [lo, hi): partials into buffer PASS % 2."""
        row = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1)
        lo, hi = _split_bounds(lohi_ptr, mass_ptr, vmin_ptr, vmax_ptr, row, C, PASS, PASSES, top_p,
                               NT, BLOCK_C, ONE_BITS)
        if c == 0:
            tl.store(lohi_ptr + (row * (PASSES + 1) + PASS) * 2, lo)
            tl.store(lohi_ptr + (row * (PASSES + 1) + PASS) * 2 + 1, hi)
        if (PASS < PASSES) & (hi - lo > 1):
            BIG: tl.constexpr = 2147483647
            M, S = _row_max_sum(m_ptr, s_ptr, row, C, BLOCK_C)
            inv_s = 1.0 / S
            base = logits_ptr + row * stride_row
            offs = tl.arange(0, BLOCK)
            kk = tl.arange(0, NT)
            span = hi - lo
            t = (lo + (kk.to(tl.int64) * span) // NT).to(tl.int32)  # (NT,) thresholds, t[0] = lo
            acc = tl.zeros([BLOCK, NT], tl.float32)
            vmin = tl.full([BLOCK], BIG, tl.int32)
            vmax = tl.full([BLOCK], -1, tl.int32)
            start = c * CHUNK
            end = tl.minimum(start + CHUNK, V)
            for b0 in range(start, end, BLOCK):
                idx = b0 + offs
                x = tl.load(base + idx, mask=idx < end, other=float("-inf")).to(tl.float32)
                p = tl.exp(tl.math.div_rn(x, temperature) - M) * inv_s  # (BLOCK,)
                bits = p.to(tl.int32, bitcast=True)
                acc += tl.where(bits[:, None] >= t[None, :], p[:, None], 0.0)  # (BLOCK, NT)
                inside = (bits >= lo) & (bits < hi)
                vmin = tl.minimum(vmin, tl.where(inside, bits, BIG))
                vmax = tl.maximum(vmax, tl.where(inside, bits, -1))
            part = ((PASS % 2) * tl.num_programs(0) + row) * C + c  # int64: row is
            tl.store(mass_ptr + part * NT + kk, tl.sum(acc, axis=0))
            tl.store(vmin_ptr + part, tl.min(vmin, axis=0))
            tl.store(vmax_ptr + part, tl.max(vmax, axis=0))

    @triton.jit
    def _split_mass_kernel(logits_ptr, stride_row, m_ptr, s_ptr, lohi_ptr, w_ptr, V, C, CHUNK, PASSES,
                           temperature, TOP_P: tl.constexpr, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
        """Grid (B, C): each chunk's nucleus mass, sum of p over p >= tau (tau = lo of the final interval)."""
        row = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1)
        M, S = _row_max_sum(m_ptr, s_ptr, row, C, BLOCK_C)
        inv_s = 1.0 / S
        tau = tl.zeros([], tl.int32)
        if TOP_P:
            tau = tl.load(lohi_ptr + (row * (PASSES + 1) + PASSES) * 2).to(tl.int32)
        base = logits_ptr + row * stride_row
        offs = tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], tl.float32)
        start = c * CHUNK
        end = tl.minimum(start + CHUNK, V)
        for b0 in range(start, end, BLOCK):
            idx = b0 + offs
            x = tl.load(base + idx, mask=idx < end, other=float("-inf")).to(tl.float32)
            p = tl.exp(tl.math.div_rn(x, temperature) - M) * inv_s
            acc += tl.where(p.to(tl.int32, bitcast=True) >= tau, p, 0.0)
        tl.store(w_ptr + row * C + c, tl.sum(acc, axis=0))

    @triton.jit
    def _split_draw_kernel(logits_ptr, stride_row, m_ptr, s_ptr, lohi_ptr, w_ptr, u_ptr, tok_ptr, lp_ptr,
                           V, C, CHUNK, PASSES, temperature, TOP_P: tl.constexpr, BLOCK: tl.constexpr,
                           BLOCK_C: tl.constexpr):
        """Grid (B,): the inverse-CDF draw. The chunk where the running nucleus mass (chunk by chunk, in
        vocabulary order) first exceeds u * total, then the token inside it, scanning that chunk only."""
        row = tl.program_id(0).to(tl.int64)
        BIG: tl.constexpr = 2147483647
        M, S = _row_max_sum(m_ptr, s_ptr, row, C, BLOCK_C)
        inv_s = 1.0 / S
        tau = tl.zeros([], tl.int32)
        if TOP_P:
            tau = tl.load(lohi_ptr + (row * (PASSES + 1) + PASSES) * 2).to(tl.int32)
        offs_c = tl.arange(0, BLOCK_C)
        cm = offs_c < C
        w = tl.load(w_ptr + row * C + offs_c, mask=cm, other=0.0)  # (BLOCK_C,) chunk nucleus masses
        cum = tl.cumsum(w, axis=0)  # (BLOCK_C,) inclusive, never decreasing
        target = tl.load(u_ptr + row).to(tl.float32) * tl.max(cum, axis=0)  # u * nucleus mass
        cidx = tl.min(tl.where((cum > target) & cm, offs_c, BIG), axis=0)
        cidx = tl.where(cidx == BIG, tl.max(tl.where((w > 0) & cm, offs_c, -1), axis=0), cidx)  # rounding
        cidx = tl.maximum(cidx, 0)
        running = tl.max(tl.where(offs_c < cidx, cum, 0.0), axis=0)  # mass of the chunks before it
        base = logits_ptr + row * stride_row
        offs = tl.arange(0, BLOCK)
        first_hit = tl.full([BLOCK], BIG, tl.int32)
        last_nz = tl.full([BLOCK], -1, tl.int32)
        start = cidx * CHUNK
        end = tl.minimum(start + CHUNK, V)
        for b0 in range(start, end, BLOCK):
            idx = b0 + offs
            mask = idx < end
            x = tl.load(base + idx, mask=mask, other=float("-inf")).to(tl.float32)
            p = tl.exp(tl.math.div_rn(x, temperature) - M) * inv_s
            wp = tl.where(p.to(tl.int32, bitcast=True) >= tau, p, 0.0)
            cs = running + tl.cumsum(wp, axis=0)
            first_hit = tl.minimum(first_hit, tl.where((cs > target) & mask, idx, BIG))
            last_nz = tl.maximum(last_nz, tl.where(wp > 0, idx, -1))
            running = tl.max(cs, axis=0)
        token = tl.min(first_hit, axis=0)
        token = tl.where(token == BIG, tl.maximum(tl.max(last_nz, axis=0), 0), token)
        z_tok = tl.math.div_rn(tl.load(base + token).to(tl.float32), temperature)
        tl.store(tok_ptr + row, token.to(tl.int64))
        tl.store(lp_ptr + row, z_tok - M - tl.log(S))


def sample_split_triton(logits, temperature, top_p, u, splits=None, block=None):
    """Same contract as sample_ref, each row's work split over `splits` programs (default choose_sample_splits):
    for small batches, where one program per row leaves most of the GPU idle. Launches, all with grids that
    depend only on (B, V), so a CUDA graph can hold them: chunk stats (B, C); with top_p < 1 the threshold
    search, SEARCH_PASSES + 1 launches (B, C) (each narrows [lo, hi) from the last one's partial masses, then
    adds its own); chunk nucleus masses (B, C); the draw (B,). Greedy rows take the one-program kernel
    (a single pass). The result equals sample_ref's as sample_triton's does (sums in another order)."""
    _check_inputs(logits, temperature, top_p, u)
    check_triton_device(logits, u)
    B, V = logits.shape
    if temperature == 0 or B == 0:
        return sample_triton(logits, temperature, top_p, u, splits=1)  # greedy: one pass, one program per row
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    u = u.float().contiguous()
    dev = logits.device
    if splits is None:
        sms = torch.cuda.get_device_properties(dev).multi_processor_count if logits.is_cuda else DEFAULT_SMS
        splits = choose_sample_splits(B, V, sms)
    block = block or split_block(V, splits)
    chunk, C = split_chunks(V, splits, block)
    block_c = max(16, triton.next_power_of_2(C))
    warps = 8 if block >= 1024 else 4
    m_ws = torch.empty(B, C, dtype=torch.float32, device=dev)
    s_ws = torch.empty_like(m_ws)
    w_ws = torch.empty_like(m_ws)
    lohi = torch.empty(B, SEARCH_PASSES + 1, 2, dtype=torch.int64, device=dev)
    tokens = torch.empty(B, dtype=torch.int64, device=dev)
    logprobs = torch.empty(B, dtype=torch.float32, device=dev)
    T = float(temperature)
    top = top_p < 1
    _split_stats_kernel[(B, C)](logits, logits.stride(0), m_ws, s_ws, V, C, chunk, T, BLOCK=block, num_warps=warps)
    if top:
        mass_ws = torch.empty(2, B, C, NT, dtype=torch.float32, device=dev)
        vmin_ws = torch.empty(2, B, C, dtype=torch.int32, device=dev)
        vmax_ws = torch.empty_like(vmin_ws)
        for p in range(SEARCH_PASSES + 1):
            _split_search_kernel[(B, C)](logits, logits.stride(0), m_ws, s_ws, lohi, mass_ws, vmin_ws, vmax_ws,
                                         V, C, chunk, p, SEARCH_PASSES, T, float(top_p), BLOCK=block,
                                         BLOCK_C=block_c, NT=NT, ONE_BITS=ONE_BITS, num_warps=warps)
    _split_mass_kernel[(B, C)](logits, logits.stride(0), m_ws, s_ws, lohi, w_ws, V, C, chunk, SEARCH_PASSES, T,
                               TOP_P=top, BLOCK=block, BLOCK_C=block_c, num_warps=warps)
    _split_draw_kernel[(B,)](logits, logits.stride(0), m_ws, s_ws, lohi, w_ws, u, tokens, logprobs, V, C, chunk,
                             SEARCH_PASSES, T, TOP_P=top, BLOCK=block, BLOCK_C=block_c, num_warps=warps)
    return tokens, logprobs
