"""Sampling speed: longcot's sampler (sample.generate) against Hugging Face transformers' `generate`, on the
same random weights of real model shapes, next to the memory-bandwidth roofline.

    python bench/bench_sample.py                               # every case on one H100 (~10 min: better split)
    python bench/bench_sample.py --cases 7b-b1,7b-16k --out bench/results/bench_sample_7b.json
    python bench/bench_sample.py --cases 1.5b-b1,1.5b-b128,1.5b-b64 --out bench/results/bench_sample_1.5b.json
    python bench/bench_sample.py --cases 1.5b-b64 --hf none    # ours only, no transformers comparison
    python bench/bench_sample.py --smoke                       # tiny model on the CPU: shows the script runs
    python bench/bench_sample.py --smoke --cases tiny-b1 --hf none

What is measured. Weights are random (normal, std 0.02), bf16, built directly on the GPU with the shapes of
Qwen2.5-1.5B and Qwen2.5-Math-7B; no checkpoint is needed. Prompts are random token ids. Generation never
stops early: the model's EOS id is set to vocab_size, an id no logit row has, and the tokenizer is a stub
(NoStopTokenizer) whose EOS is that same id, so every row runs to max_new_tokens. Each call is timed with
torch.cuda.synchronize() and a wall clock around a whole `generate`, after an identical warm-up call (Triton
compiles, CUDA-graph capture, torch.compile of transformers' static cache all happen there). Reported:
  end-to-end tokens/s  batch * new_tokens / time of generate(new_tokens): what a user sees (prefill included);
  decode tokens/s      batch * (new_tokens - 1) / (time(new_tokens) - time(1)): the per-step decode rate, without
                       the fixed costs of a call (prefill, CUDA-graph capture, first sample);
  roofline tokens/s    batch / (bytes per decode step / copy bandwidth). Bytes per step = every weight once
                       (an untied input embedding is not counted: a step reads only `batch` rows of it) + the
                       K and V cache at each row's current length, averaged over the decode steps. The bandwidth
                       is that of a large device-to-device copy measured in the same run (read + write bytes);
  % roofline           decode tokens/s / roofline tokens/s;
  transformers         the same weights loaded into AutoModelForCausalLM (parameter names are Hugging Face's, so
                       the state dict is assigned as is, sharing memory), sampling with the same temperature and
                       top-p (top-k off), with `cache_implementation="static"` (the fair comparison: it compiles
                       the decode step) and with the default dynamic cache; end-to-end tokens/s and our ratio.
The timed calls reuse the KV cache and the captured decode-step graph of the warm-up call (generate's
keep_cache=True); `graph_setup_s` in the JSON is how long the warm-up call's capture took, `graph_reused` says
the timed calls did not capture again.

Targets (one H100 SXM, from the project's goals) are printed beside each case; for 7b-16k the target applies
to decode tokens/s (the 16K-token prefill is not part of it), for the others to end-to-end tokens/s, and for
1.5b-b64 to the ratio over transformers' generate (default cache). Results go to --out as JSON, rewritten
after every case so a run cut short keeps what it measured.

Not from the paper: engineering support only (the paper samples with vLLM). On a CPU the numbers say nothing
about speed; --smoke only shows that every path executes.
"""
import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]  # the repo's modules, and this file for bench_train/bench_ppo

import model as M  # noqa: E402
import sample as S  # noqa: E402

# ---- arguments (every one has a default) ----
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--cases", default="all", help="comma-separated case names from CASES, or 'all'")
parser.add_argument("--hf", default="auto", choices=["auto", "none", "static", "dynamic", "both"],
                    help="transformers comparisons: auto = each case's own list (CASES), or force one choice")
parser.add_argument("--max-new", type=int, default=0, help="new tokens per row for every case (0: the case's own)")
parser.add_argument("--reps", type=int, default=2, help="timed calls of our sampler per case (median reported)")
parser.add_argument("--hf-reps", type=int, default=1, help="timed calls of transformers' generate (slow; 1 is enough)")
parser.add_argument("--temperature", type=float, default=0.7, help="the paper's sampling temperature")
parser.add_argument("--top-p", type=float, default=0.95, help="the paper's nucleus size")
parser.add_argument("--copy-mib", type=int, default=2048, help="size of the bandwidth-measuring copy (MiB)")
parser.add_argument("--seed", type=int, default=0, help="weights, prompts and sampling are seeded")
parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "bench_sample.json"),
                    help="where the numbers are written as JSON")
parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 2 cases, 16 new tokens")

# ---- model shapes (Hugging Face config.json values) ----
QWEN_1_5B = M.Config(  # Qwen/Qwen2.5-1.5B
    arch="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
    num_kv_heads=2, head_dim=128, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=131072,
    tie_word_embeddings=True)
QWEN_MATH_7B = M.Config(  # Qwen/Qwen2.5-Math-7B (max_position_embeddings 4096; longer contexts are allowed here)
    arch="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
    num_kv_heads=4, head_dim=128, rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=4096,
    tie_word_embeddings=False)
SHAPES = {"1.5b": QWEN_1_5B, "7b": QWEN_MATH_7B, "tiny": M.TINY}


@dataclass
class Case:
    model: str  # key of SHAPES
    batch: int  # rows decoded together (= prompts, one sample each)
    prompt: int  # prompt tokens per row
    new: int  # new tokens per row
    target: float  # goal: tokens/s, or the ratio over transformers for target_on == "ratio"
    target_on: str = "e2e"  # "e2e" | "decode" | "ratio": which measured number the target applies to
    hf: tuple = ()  # transformers variants run by default ("static", "dynamic")
    note: str = ""  # reference numbers from the project's goals


CASES = {
    "7b-b1": Case("7b", 1, 128, 512, 150, "e2e", ("static", "dynamic"),
                  "roofline ~210; transformers 11 (default cache), 92 (static)"),
    "7b-16k": Case("7b", 1, 16384, 256, 140, "decode", (), "plain SDPA decode ~91"),
    "1.5b-b1": Case("1.5b", 1, 128, 512, 600, "e2e", ()),
    "1.5b-b128": Case("1.5b", 128, 128, 512, 20000, "e2e", ()),
    "1.5b-b64": Case("1.5b", 64, 128, 512, 20, "ratio", ("static", "dynamic"), "target: >= 20x transformers"),
}
SMOKE_CASES = {
    "tiny-b1": Case("tiny", 1, 128, 16, 0, "e2e", ("dynamic",)),
    "tiny-b8": Case("tiny", 8, 128, 16, 0, "ratio", ("dynamic",)),
}


# ----------------------------------------------------------------------------------------------------
# Helpers shared with bench_train.py and bench_ppo.py
# ----------------------------------------------------------------------------------------------------
def random_model(cfg: M.Config, device, dtype, seed=0, std=0.02, value_head=False) -> M.CausalLM:
    """A CausalLM of `cfg`'s shape with random weights, allocated directly in `dtype` on `device` (built on the
    meta device first, so a 7B model never exists in fp32). Init as Hugging Face's: normal(0, std) matrices,
    zero biases, unit norm weights."""
    with torch.device("meta"):
        model = M.CausalLM(dataclasses.replace(cfg), value_head=value_head)  # own copy of the config
    model = model.to(dtype).to_empty(device=device)
    if cfg.tie_word_embeddings:  # to_empty gives each module its own tensor: tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, std, generator=g)
    return model


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """(seconds, result) of fn(), with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def copy_bandwidth(device, mib):
    """Bytes/s of a large device-to-device copy, counting read + write: the practical memory-bandwidth ceiling."""
    n = mib << 20
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch
    iters = 20 if torch.device(device).type == "cuda" else 3
    dt, _ = timed(lambda: [dst.copy_(src) for _ in range(iters)], device)
    return 2 * n * iters / dt


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def environment(device):
    env = {"device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
           "torch": torch.__version__}
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        pass
    import longcot_kernels
    env["kernels_backend"] = longcot_kernels.backend()
    return env


class NoStopTokenizer:
    """The little of a tokenizer that sample.generate uses when prompts are token-id lists (see sample.stop_ids
    and generate): eos_token_id = vocab_size, outside the logits, so no sampled token ever stops a row; no
    vocabulary, so no chat end-of-turn token is a stop id either; pad_token_id = 0, a real embedding row (pad
    is fed to idle slots, and an out-of-range id there would fault the embedding lookup; pad is never a stop
    id). decode() returns "" (sample.py decodes each finished row; the text is not needed here)."""

    def __init__(self, vocab_size):
        self.eos_token_id = vocab_size
        self.pad_token_id = 0
        self.bos_token = None

    def get_vocab(self):
        return {}

    def decode(self, ids, skip_special_tokens=True):
        return ""


# ----------------------------------------------------------------------------------------------------
# The measurements
# ----------------------------------------------------------------------------------------------------
def roofline_tokens_per_s(model, batch, prompt, new, bandwidth):
    """batch / (mean bytes per decode step / bandwidth). Decode step j (1..new-1) reads every weight once and
    each row's K, V cache at length prompt + j."""
    cfg = model.cfg
    untied_embed = model.model.embed_tokens.weight if not cfg.tie_word_embeddings else None
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p is not untied_embed)
    elem = next(model.parameters()).element_size()
    kv_per_token = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * elem  # K and V, all layers
    steps = max(new - 1, 1)
    mean_len = prompt + (steps + 1) / 2  # mean of prompt + j over j = 1..steps
    bytes_per_step = weight_bytes + batch * mean_len * kv_per_token
    return batch / (bytes_per_step / bandwidth), weight_bytes, bytes_per_step


def bench_ours(model, tok, prompts, case, args, device):
    """Our sampler: a warm-up call, then `reps` timed calls, with `new` and then with 1 new token. Each length
    keeps its KV cache and captured graph between its calls (generate(keep_cache=True)), so the timed calls
    measure the steady state; the warm-up call's capture time is reported as graph_setup_s."""
    def gen(n):
        return S.generate(model, tok, prompts, n=1, temperature=args.temperature, top_p=args.top_p,
                          max_new_tokens=n, seed=args.seed, batch_size=len(prompts), keep_cache=True)

    try:
        gen(case.new)  # warm-up: Triton compilation, cache allocation, CUDA-graph capture
        setup = S.last_stats.get("setup_s", 0.0)
        full, outs = zip(*[timed(lambda: gen(case.new), device) for _ in range(args.reps)])
        reused = S.last_stats["reused"]
        gen(1)  # another capacity: its own cache and graph
        one = [timed(lambda: gen(1), device)[0] for _ in range(args.reps)]
    finally:
        S.release_cache()
    lengths = {len(s.token_ids) for group in outs[-1] for s in group}
    if lengths != {case.new}:  # the stub tokenizer should make every row run to the limit
        raise RuntimeError(f"rows stopped early: response lengths {sorted(lengths)}, expected {case.new}")
    t_full, t_one = median(full), median(one)
    return {"time_s": t_full, "time_1_token_s": t_one, "times_s": list(full),
            "e2e_tok_s": case.batch * case.new / t_full,
            "decode_tok_s": case.batch * (case.new - 1) / max(t_full - t_one, 1e-9),
            "graph_setup_s": setup, "graph_reused": reused}


def hf_twin(model):
    """transformers' model class for our config, its parameters replaced by ours (same memory, no copy)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    d = model.cfg.to_hf()
    d.pop("architectures")
    d["eos_token_id"] = None  # ours is vocab_size (never sampled); transformers rejects ids outside the vocab
    hf_cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    p = next(model.parameters())
    with torch.device(p.device):
        hf = AutoModelForCausalLM.from_config(hf_cfg, dtype=p.dtype)
    hf.load_state_dict(model.state_dict(), strict=True, assign=True)
    hf.generation_config.eos_token_id = None  # run every row to max_new_tokens
    if p.device.type == "cuda":
        torch.cuda.empty_cache()  # transformers' own freshly initialised weights are gone
    return hf.eval()


@torch.no_grad()
def logit_difference(model, hf, device, vocab):
    """Max |ours - transformers| over the logits of a 32-token random input: shows both are the same model."""
    ids = torch.randint(0, vocab, (1, 32), device=device)
    a = model(ids, return_logits=True).logits.float()
    b = hf(ids).logits.float()
    return float((a - b).abs().max()), float(a.abs().max())


@torch.no_grad()
def bench_hf(hf, prompts, case, impl, args, device):
    """transformers' generate with sampling like ours; impl "static" (compiled decode) or "dynamic" (default)."""
    ids = torch.tensor(prompts, device=device)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=args.temperature,
              top_p=args.top_p, top_k=0, pad_token_id=0)
    if impl == "static":
        kw["cache_implementation"] = "static"

    def gen(n):
        return hf.generate(input_ids=ids, max_new_tokens=n, **kw)

    torch.manual_seed(args.seed)
    gen(case.new if impl == "static" else min(case.new, 8))  # warm-up: a static cache compiles for its own size
    times, out = zip(*[timed(lambda: gen(case.new), device) for _ in range(args.hf_reps)])
    if out[-1].shape != (case.batch, case.prompt + case.new):
        raise RuntimeError(f"transformers returned shape {tuple(out[-1].shape)}, expected "
                           f"{(case.batch, case.prompt + case.new)}")
    t = median(times)
    return {"time_s": t, "e2e_tok_s": case.batch * case.new / t}


def run_case(name, case, model, tok, args, device, bandwidth, hf_cache):
    """All measurements of one case; a failing transformers variant is recorded and does not stop the rest."""
    cuda = torch.device(device).type == "cuda"
    r = {"case": name, **dataclasses.asdict(case)}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    g = torch.Generator().manual_seed(args.seed)
    prompts = torch.randint(0, model.cfg.vocab_size, (case.batch, case.prompt), generator=g).tolist()
    r["ours"] = bench_ours(model, tok, prompts, case, args, device)
    if cuda:
        r["ours"]["peak_memory_GB"] = torch.cuda.max_memory_allocated() / 1e9
    roof, wb, bps = roofline_tokens_per_s(model, case.batch, case.prompt, case.new, bandwidth)
    r.update(roofline_tok_s=roof, weight_bytes=wb, bytes_per_step=bps,
             roofline_frac=r["ours"]["decode_tok_s"] / roof)
    variants = case.hf if args.hf == "auto" else {"none": (), "both": ("static", "dynamic")}.get(args.hf, (args.hf,))
    r["hf"] = {}
    for impl in variants:
        try:
            if "model" not in hf_cache:
                hf_cache["model"] = hf_twin(model)
                r["hf_logit_max_abs_diff"], r["logit_max_abs"] = logit_difference(
                    model, hf_cache["model"], device, model.cfg.vocab_size)
            res = bench_hf(hf_cache["model"], prompts, case, impl, args, device)
            res["ours_over_hf"] = r["ours"]["e2e_tok_s"] / res["e2e_tok_s"]
            r["hf"][impl] = res
        except Exception as e:  # e.g. torch.compile failing on the machine: keep our numbers
            traceback.print_exc()
            r["hf"][impl] = {"error": f"{type(e).__name__}: {e}"}
    measured = {"e2e": r["ours"]["e2e_tok_s"], "decode": r["ours"]["decode_tok_s"],
                "ratio": r["hf"].get("dynamic", {}).get("ours_over_hf")}[case.target_on]
    r["target_met"] = None if (measured is None or not case.target) else bool(measured >= case.target)
    return r


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------
def fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)


def print_table(results):
    print(f"\ndevice {results['env']['device']}, copy bandwidth {results['copy_GBps']:.0f} GB/s, "
          f"kernels backend {results['env']['kernels_backend']}")
    head = (f"{'case':10s} {'B':>4s} {'prompt+new':>11s} {'e2e tok/s':>10s} {'decode':>10s} {'roofline':>10s} "
            f"{'%roof':>6s} {'HF static':>10s} {'HF dflt':>9s} {'x static':>8s} {'x dflt':>7s} "
            f"{'target':>14s} {'met':>4s}")
    print(head)
    print("-" * len(head))
    for r in results["cases"]:
        if "error" in r:
            print(f"{r['case']:10s} error: {r['error']}")
            continue
        hs, hd = r["hf"].get("static", {}), r["hf"].get("dynamic", {})
        tgt = {"e2e": f">={r['target']:,.0f} e2e", "decode": f">={r['target']:,.0f} dec",
               "ratio": f">={r['target']:.0f}x dflt"}[r["target_on"]] if r["target"] else "-"
        met = {None: "-", True: "yes", False: "NO"}[r["target_met"]]
        print(f"{r['case']:10s} {r['batch']:4d} {r['prompt']:>5d}+{r['new']:<5d} {fmt(r['ours']['e2e_tok_s']):>10s} "
              f"{fmt(r['ours']['decode_tok_s']):>10s} {fmt(r['roofline_tok_s']):>10s} "
              f"{fmt(100 * r['roofline_frac'], '.0f'):>5s}% {fmt(hs.get('e2e_tok_s')):>10s} "
              f"{fmt(hd.get('e2e_tok_s')):>9s} {fmt(hs.get('ours_over_hf'), '.1f'):>8s} "
              f"{fmt(hd.get('ours_over_hf'), '.1f'):>7s} {tgt:>14s} {met:>4s}")
    for r in results["cases"]:
        errs = {k: v["error"] for k, v in r.get("hf", {}).items() if "error" in v}
        if errs:
            print(f"  {r['case']}: transformers failed: {errs}")
        if r.get("note"):
            print(f"  {r['case']}: {r['note']}")


def main():
    args = parser.parse_args()
    table = SMOKE_CASES if args.smoke else CASES
    names = list(table) if args.cases == "all" else [c.strip() for c in args.cases.split(",")]
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; known: {', '.join(table)}")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU: these cases need one (use --smoke for a CPU run of tiny shapes)")
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    torch.manual_seed(args.seed)
    bandwidth = copy_bandwidth(device, 64 if args.smoke else args.copy_mib)
    results = {"env": environment(device), "copy_GBps": bandwidth / 1e9, "args": vars(args), "cases": []}
    print(f"{results['env']}  copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    failed = False
    for shape in dict.fromkeys(table[n].model for n in names):  # one model at a time, in first-use order
        cases = [(n, table[n]) for n in names if table[n].model == shape]
        if args.max_new:
            cases = [(n, dataclasses.replace(c, new=args.max_new)) for n, c in cases]
        if args.smoke:
            model, _ = M.load("tiny", dtype=dtype, device=device, seed=args.seed)
        else:
            cfg = SHAPES[shape]
            longest = max(c.prompt + c.new for _, c in cases)
            cfg = dataclasses.replace(cfg, max_position_embeddings=max(cfg.max_position_embeddings, longest))
            model = random_model(cfg, device, dtype, seed=args.seed)
        model.eval()
        model.cfg.eos_token_id = model.cfg.vocab_size  # no sampled id equals it: rows never stop early
        tok = NoStopTokenizer(model.cfg.vocab_size)
        hf_cache = {}
        print(f"model {shape}: {model.num_params() / 1e9:.3f}B parameters, {dtype}")
        for name, case in cases:
            print(f"case {name}: batch {case.batch}, {case.prompt} prompt + {case.new} new tokens ...", flush=True)
            try:
                r = run_case(name, case, model, tok, args, device, bandwidth, hf_cache)
            except Exception as e:  # e.g. out of memory: record it, go on with the next case
                traceback.print_exc()
                r, failed = {"case": name, "error": f"{type(e).__name__}: {e}"}, True
            results["cases"].append(r)
            write_json(args.out, results)
            if "ours" in r:
                print(f"  ours {r['ours']['e2e_tok_s']:,.0f} tok/s end-to-end, {r['ours']['decode_tok_s']:,.0f} decode "
                      f"({100 * r['roofline_frac']:.0f}% of roofline {r['roofline_tok_s']:,.0f}); transformers: "
                      + ", ".join(f"{k} {v.get('e2e_tok_s', float('nan')):,.0f} tok/s" for k, v in r["hf"].items()),
                      flush=True)
        del model, hf_cache
        if device == "cuda":
            torch._dynamo.reset()  # drop transformers' compiled graphs with their memory
            torch.cuda.empty_cache()
    print_table(results)
    print(f"wrote {args.out}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
