"""Time each kernel in kernels/ (Triton vs the plain-torch reference) at the shapes of real models.

    python bench/bench_kernels.py                  # on a CUDA GPU: a table of median times and bandwidths
    python bench/bench_kernels.py --compile-only   # any machine: compile every kernel variant for sm_90 (H100)

On a GPU each op is timed with triton.testing.do_bench (median of repeated runs, caches warm). Memory-bound ops
also report achieved bandwidth (bytes that must be read + written, divided by time) next to a measured
device-to-device copy, the practical ceiling. Shapes: Qwen2.5-7B (D=3584, Hq=28, Hkv=4, Dh=128,
V=152064) and Qwen2.5-1.5B (D=1536).

On a CPU there is nothing meaningful to time: the script says so and runs tiny shapes through Triton's
interpreter (TRITON_INTERPRET=1) only to show that every path executes; those numbers say nothing about speed.

--compile-only runs Triton's NVIDIA compiler (bundled with the triton wheel; no GPU needed) on each kernel
variant the wrappers can launch, with the argument types of a real bf16 call. The interpreter accepts some code
the compiler rejects (types of loop-carried values, dot shapes), so tests/test_kernels.py runs this on CI.
Exit code 3 = the toolchain is not available here (the test then skips).
Not from the paper: engineering support only.
"""
import argparse
import os
import statistics
import sys
import time

import torch

# ---- arguments (every one has a default) ----
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--compile-only", action="store_true", help="compile all kernel variants for sm_90 and exit")
parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up time in ms (GPU)")
parser.add_argument("--rep", type=int, default=100, help="do_bench measuring time in ms (GPU)")
parser.add_argument("--seed", type=int, default=0, help="random inputs are seeded so runs compare")

CUDA = torch.cuda.is_available()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compile_only():
    """Compile every kernel variant for sm_90 without a GPU. Returns the number compiled."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource, make_backend
        backend = make_backend(GPUTarget("cuda", 90, 32))
    except Exception as e:  # no triton, no NVIDIA backend, or an API this script does not know
        print(f"compile-only: Triton's NVIDIA toolchain is not usable here ({type(e).__name__}: {e})")
        sys.exit(3)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("compile-only: unset TRITON_INTERPRET (the kernels would be defined as interpreted functions)")
        sys.exit(3)
    import longcot_kernels
    from longcot_kernels import rmsnorm, rope, sampling
    da = longcot_kernels.decode_attention_mod

    def build(fn, pointers, floats, consts, num_warps=4):
        """Ints default to i32; `consts` are constexprs (and strides equal to 1, which Triton specialises)."""
        sig = {}
        for name in fn.arg_names:
            sig[name] = "constexpr" if name in consts else pointers.get(name, "fp32" if name in floats else "i32")
        src = ASTSource(fn=fn, signature=sig, constexprs=consts)
        options = backend.parse_options({"num_warps": num_warps, "num_stages": 3})
        t0 = time.perf_counter()
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options.__dict__)
        shown = {n: v for n, v in consts.items() if not n.startswith("s")}
        print(f"  {fn.__name__:18s} {str(shown):90s} shared {k.metadata.shared:6d} B  {time.perf_counter() - t0:.1f} s")

    bf = "*bf16"
    build(rmsnorm._rms_norm_kernel, dict(x_ptr=bf, w_ptr=bf, y_ptr=bf), ("eps",), dict(BLOCK=4096, ONE_BLOCK=True), 8)
    build(rmsnorm._rms_norm_kernel, dict(x_ptr=bf, w_ptr=bf, y_ptr=bf), ("eps",), dict(BLOCK=4096, ONE_BLOCK=False), 8)
    build(rope._rope_kernel, dict(q_ptr=bf, k_ptr=bf, qo_ptr=bf, ko_ptr=bf, pos_ptr="*i64", cos_ptr="*fp32",
                                  sin_ptr="*fp32"), (),
          dict(sqd=1, skd=1, sqod=1, skod=1, BLOCK_HQ=32, BLOCK_HKV=4, BLOCK_D=64))
    ptrs = dict(q_ptr=bf, k_ptr=bf, v_ptr=bf, len_ptr="*i32", m_ptr="*fp32", l_ptr="*fp32", acc_ptr="*fp32")
    for dh, block_n, precision in ((128, 32, "tf32"), (64, 64, "tf32"), (128, 32, "ieee")):
        if precision == "ieee":
            ptrs = dict(ptrs, q_ptr="*fp32", k_ptr="*fp32", v_ptr="*fp32")
        build(da._split_kernel, ptrs, ("qk_scale",),
              dict(sqd=1, skd=1, svd=1, DH=dh, BLOCK_G=16, BLOCK_N=block_n, PRECISION=precision))
    build(da._combine_kernel, dict(m_ptr="*fp32", l_ptr="*fp32", acc_ptr="*fp32", o_ptr=bf), (),
          dict(sod=1, BLOCK_S=64, DH=128))
    for greedy, top_p in ((True, False), (False, False), (False, True)):
        build(sampling._sample_kernel, dict(logits_ptr=bf, u_ptr="*fp32", tok_ptr="*i64", lp_ptr="*fp32"),
              ("temperature", "top_p"), dict(GREEDY=greedy, TOP_P=top_p, BLOCK=1024, NT=sampling.NT,
                                              SEARCH_PASSES=sampling.SEARCH_PASSES, ONE_BITS=sampling.ONE_BITS), 8)
    f32, i64, i32 = "*fp32", "*i64", "*i32"  # the split sampler (small batches): 6 variants
    build(sampling._split_stats_kernel, dict(logits_ptr=bf, m_ptr=f32, s_ptr=f32), ("temperature",),
          dict(BLOCK=1024), 8)
    build(sampling._split_search_kernel, dict(logits_ptr=bf, m_ptr=f32, s_ptr=f32, lohi_ptr=i64, mass_ptr=f32,
                                              vmin_ptr=i32, vmax_ptr=i32), ("temperature", "top_p"),
          dict(BLOCK=1024, BLOCK_C=64, NT=sampling.NT, ONE_BITS=sampling.ONE_BITS), 8)
    for top_p in (False, True):
        build(sampling._split_mass_kernel, dict(logits_ptr=bf, m_ptr=f32, s_ptr=f32, lohi_ptr=i64, w_ptr=f32),
              ("temperature",), dict(TOP_P=top_p, BLOCK=1024, BLOCK_C=64), 8)
        build(sampling._split_draw_kernel, dict(logits_ptr=bf, m_ptr=f32, s_ptr=f32, lohi_ptr=i64, w_ptr=f32,
                                                u_ptr=f32, tok_ptr=i64, lp_ptr=f32),
              ("temperature",), dict(TOP_P=top_p, BLOCK=1024, BLOCK_C=64), 8)
    return 16


def timer(fn, args):
    """Median milliseconds of fn(): triton's do_bench on a GPU, a few wall-clock runs on a CPU."""
    if CUDA:
        import triton.testing
        return triton.testing.do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    args = parser.parse_args()
    if args.compile_only:
        n = compile_only()
        print(f"compiled {n} kernel variants for sm_90")
        return
    if not CUDA:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before `import longcot_kernels` (defines the kernels)
    import longcot_kernels
    from longcot_kernels import rmsnorm, rope, sampling
    da = longcot_kernels.decode_attention_mod
    torch.manual_seed(args.seed)
    dev = "cuda" if CUDA else "cpu"
    dt = torch.bfloat16 if CUDA else torch.float32
    if CUDA:
        print(f"device: {torch.cuda.get_device_name()}")
        n = 256 * 2 ** 20  # 256 MiB copied
        src, dst = torch.empty(n, dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)
        copy_gbs = 2 * n / (timer(lambda: dst.copy_(src), args) * 1e-3) / 1e9  # read + write
        print(f"device-to-device copy: {copy_gbs:.0f} GB/s (bytes read + written)")
    else:
        print("No CUDA GPU: this benchmark needs one. Running TINY shapes through the Triton interpreter only to "
              "exercise every path; the times below say nothing about kernel speed.")
        copy_gbs = float("nan")

    rows = []  # (op, shape, ms torch, ms triton, bytes moved or None)

    def bench(op, shape, ref_fn, tri_fn, nbytes=None):
        rows.append((op, shape, timer(ref_fn, args), timer(tri_fn, args), nbytes))

    # rms_norm: read x, write y (weight is negligible)
    for N, D in ((4096, 3584), (4096, 1536)) if CUDA else ((8, 48),):
        x, w = torch.randn(N, D, device=dev, dtype=dt), torch.randn(D, device=dev, dtype=dt)
        bench("rms_norm", f"{N}x{D}", lambda: rmsnorm.rms_norm_ref(x, w, 1e-6),
              lambda: rmsnorm.rms_norm_triton(x, w, 1e-6), 2 * x.numel() * x.element_size())

    # rope at decode: q and k read and written
    B, T, Hq, Hkv, Dh = (64, 1, 28, 4, 128) if CUDA else (2, 1, 4, 2, 16)
    q = torch.randn(B, T, Hq, Dh, device=dev, dtype=dt)
    k = torch.randn(B, T, Hkv, Dh, device=dev, dtype=dt)
    P = 32768 if CUDA else 64
    ang = torch.arange(P, device=dev)[:, None] * torch.rand(Dh // 2, device=dev)[None, :]
    cos, sin = ang.cos(), ang.sin()
    pos = torch.randint(0, P, (B, T), device=dev)
    bench("apply_rope", f"B{B} T{T} Hq{Hq} Hkv{Hkv} Dh{Dh}", lambda: rope.apply_rope_ref(q, k, pos, cos, sin),
          lambda: rope.apply_rope_triton(q, k, pos, cos, sin), 2 * (q.numel() + k.numel()) * q.element_size())

    # decode attention (Qwen2.5-7B heads): K and V of every valid position read once, q read, out written
    Hq, Hkv, Dh = (28, 4, 128) if CUDA else (4, 2, 16)
    for B, S in ((1, 16384), (64, 2048)) if CUDA else ((1, 40), (3, 20)):
        q = torch.randn(B, Hq, Dh, device=dev, dtype=dt)
        kc = torch.randn(B, Hkv, S, Dh, device=dev, dtype=dt)
        vc = torch.randn(B, Hkv, S, Dh, device=dev, dtype=dt)
        lens = torch.full((B,), S, device=dev, dtype=torch.int32)
        nbytes = (2 * kc.numel() + 2 * q.numel()) * kc.element_size()
        bench("decode_attention", f"B{B} S{S} Hq{Hq} Hkv{Hkv} Dh{Dh}",
              lambda: da.decode_attention_ref(q, kc, vc, lens),
              lambda: da.decode_attention_triton(q, kc, vc, lens, max_len=S), nbytes)

    # sampling over Qwen's vocabulary
    V = 152064 if CUDA else 3000
    for B in (1, 128) if CUDA else (2,):
        logits = torch.randn(B, V, device=dev, dtype=dt) * 3
        u = torch.rand(B, device=dev)
        for temperature, top_p in ((1.0, 1.0), (1.0, 0.95), (0.0, 1.0)):
            bench("sample", f"B{B} V{V} T{temperature} top_p{top_p}",
                  lambda: sampling.sample_ref(logits, temperature, top_p, u),
                  lambda: sampling.sample_triton(logits, temperature, top_p, u),
                  B * V * logits.element_size())  # one read of the logits: the floor, not what 12 passes cost

    print(f"\n{'op':18s} {'shape':38s} {'torch ms':>10s} {'triton ms':>10s} {'speedup':>8s} {'triton GB/s':>12s} "
          f"{'% of copy':>9s}")
    for op, shape, t_ref, t_tri, nbytes in rows:
        gbs = nbytes / (t_tri * 1e-3) / 1e9 if nbytes else float("nan")
        print(f"{op:18s} {shape:38s} {t_ref:10.4f} {t_tri:10.4f} {t_ref / t_tri:7.2f}x {gbs:12.0f} "
              f"{100 * gbs / copy_gbs:8.0f}%")
    print("\nGB/s counts the bytes the op must move (for sample: one read of the logits, although the top-p path "
          "makes 12 passes, mostly from L2).")


if __name__ == "__main__":
    main()
