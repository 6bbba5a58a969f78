"""Training-step speed and memory: one PPO policy-loss step (forward + backward + AdamW) on a random-weight
Qwen2.5-1.5B, with longcot's chunked log-probs against the naive full-logits path, in the same run.

    python bench/bench_train.py                       # one H100: 4 x 2048 tokens, both paths
    python bench/bench_train.py --batch 8 --seq 4096  # other shapes
    python bench/bench_train.py --smoke               # tiny model on the CPU: shows the script runs

The step. Random tokens (B, T); labels = the next token; model forward -> per-token log-probs at the rollout
temperature -> ppo.policy_loss (clipped surrogate against fixed "old" log-probs and random advantages) ->
backward -> gradient clipping at 1.0 -> AdamW step (torch's default foreach implementation, as ppo.py).
Precision (--precision): "amp" (default) keeps fp32 master weights, gradients and AdamW states, and runs the
forward/backward under torch.autocast(bfloat16), which is what sft.py does on one GPU; "bf16" stores weights,
gradients and optimizer states in bf16 (half the memory, less exact updates). Gradient checkpointing is on
(model.gradient_checkpointing; --no-grad-ckpt turns it off).
The two paths:
  (a) chunked  model(ids, labels=..., temperature=...) -> longcot_kernels/logprobs.py: logits live one (chunk, V)
               fp32 block at a time and are recomputed in backward;
  (b) naive    model(ids, return_logits=True) -> (B, T, V) bf16 logits -> fp32 / temperature -> log_softmax
               -> gather: the full logits, their fp32 copy and log-softmax all live in memory.

Reported per path (median over --steps timed steps after --warmup steps):
  tokens/s     B * T / step time;
  MFU          model FLOPs / step time / peak. Model FLOPs per step (PaLM's convention, Chowdhery et al. 2022,
               App. B; recomputation by checkpointing is not counted):
                   6 * N * B * T  +  12 * L * (H * Dh) * T^2 * B
               N = parameters that take part in matrix multiplies (all, except an untied input embedding,
               which is a lookup); L layers; H * Dh = attention width (= hidden size for Qwen2.5); the
               attention term counts the full T x T score matrix (causal masking not subtracted), forward
               and backward. Peak = --peak-tflops (989 = H100 SXM dense bf16);
  peak memory  torch.cuda.max_memory_allocated over the timed steps, in total and above the memory held
               before the step (weights + optimizer states: what the step itself adds).
Targets (one H100): MFU >= 40% (transformers measured 33%) and peak memory of (a) <= 60% of (b).

Gradient check: before timing, one small step checks that every parameter receives a nonzero gradient. The
Triton kernels behind longcot_kernels.rms_norm / .apply_rope (the default backend on a GPU) have no
backward, so if the check fails under them the benchmark says so and switches to the "torch" backend (differentiable
references), recording both facts in the JSON; a wrong-gradient step would give meaningless speed.
Results go to --out as JSON. Not from the paper: engineering support only. On a CPU (--smoke) the numbers
say nothing about speed or memory.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

import longcot_kernels  # noqa: E402
import model as M  # noqa: E402
from bench_sample import SHAPES, environment, median, random_model, sync, timed, write_json  # noqa: E402
from ppo import policy_loss  # noqa: E402

# ---- arguments (every one has a default) ----
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", default="1.5b", choices=["1.5b", "7b"],
                    help="shape (bench_sample.SHAPES); 7b fits one 80 GB GPU only with --precision bf16, if at all")
parser.add_argument("--batch", type=int, default=4, help="sequences per step")
parser.add_argument("--seq", type=int, default=2048, help="tokens per sequence")
parser.add_argument("--steps", type=int, default=5, help="timed steps per path (median reported)")
parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path first (allocator, AdamW states)")
parser.add_argument("--paths", default="chunked,naive", help="which of chunked,naive to run, in that order")
parser.add_argument("--precision", default="amp", choices=["amp", "bf16"],
                    help="amp: fp32 master weights + bf16 autocast; bf16: everything in bf16")
parser.add_argument("--no-grad-ckpt", action="store_true", help="turn gradient checkpointing off")
parser.add_argument("--chunk", type=int, default=1024, help="rows per log-prob chunk (model.logprob_chunk)")
parser.add_argument("--temperature", type=float, default=0.7, help="log-probs are taken at the rollout temperature")
parser.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (value irrelevant to speed)")
parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s (H100 SXM: 989)")
parser.add_argument("--seed", type=int, default=0, help="weights and data are seeded")
parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "bench_train.json"),
                    help="where the numbers are written as JSON")
parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 2 x 64 tokens, 2 steps")


def model_flops(model, batch, seq):
    """Model FLOPs of one training step (forward + backward): 6 N B T + 12 L (H Dh) T^2 B (PaLM, App. B)."""
    cfg = model.cfg
    untied_embed = model.model.embed_tokens.weight if not cfg.tie_word_embeddings else None
    n = sum(p.numel() for name, p in model.named_parameters()
            if p is not untied_embed and not name.startswith("value_head"))
    return 6 * n * batch * seq + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq ** 2 * batch


def missing_gradients(model, device, vocab, autocast):
    """Names of parameters with no (or an all-zero) gradient after one small log-prob backward."""
    ids = torch.randint(0, vocab, (1, 16), device=device)
    model.zero_grad(set_to_none=True)
    with autocast():
        out = model(ids, labels=torch.roll(ids, -1, 1), temperature=1.0)
    out.logprobs.sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    model.zero_grad(set_to_none=True)
    return bad


def training_backend(model, device, vocab, autocast):
    """Keep the current kernels backend if gradients reach every parameter under it, else switch to "torch".
    Returns a dict for the JSON report."""
    info = {"backend_default": longcot_kernels.backend()}
    bad = missing_gradients(model, device, vocab, autocast)
    if bad and longcot_kernels.backend() != "torch":
        print(f"WARNING: with kernels backend {longcot_kernels.backend()!r}, {len(bad)} parameters get no gradient "
              f"(e.g. {bad[:3]}): its kernels have no backward. Switching to the 'torch' backend for training.")
        info["params_without_grad_default_backend"] = len(bad)
        longcot_kernels.set_backend("torch")
        bad = missing_gradients(model, device, vocab, autocast)
    if bad:
        raise RuntimeError(f"{len(bad)} parameters get no gradient even with the torch backend, e.g. {bad[:3]}")
    info["backend_used"] = longcot_kernels.backend()
    return info


def naive_logprobs(model, ids, labels, temperature):
    """Path (b): full (B, T, V) logits, fp32 log-softmax, gather. -> (B, T) fp32."""
    logits = model(ids, return_logits=True).logits  # (B, T, V), bf16 under autocast
    logp_all = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V) fp32
    return logp_all.gather(-1, labels[..., None]).squeeze(-1)  # (B, T)


def main():
    args = parser.parse_args()
    if args.smoke:
        args.batch, args.seq, args.steps, args.warmup = 2, 64, 2, 1
    elif not torch.cuda.is_available():
        parser.error("no CUDA GPU (use --smoke for a CPU run of tiny shapes)")
    paths = [p.strip() for p in args.paths.split(",")]
    if not paths or any(p not in ("chunked", "naive") for p in paths):
        parser.error(f"--paths {args.paths!r}: expected a comma-separated subset of chunked,naive")
    device = "cpu" if args.smoke else "cuda"
    cuda = device == "cuda"
    torch.manual_seed(args.seed)

    # ---- model, optimizer, data ----
    weight_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    if args.smoke:
        model, _ = M.load("tiny", dtype=weight_dtype, device=device, seed=args.seed)
    else:
        model = random_model(SHAPES[args.model], device, weight_dtype, seed=args.seed)
    model.gradient_checkpointing = not args.no_grad_ckpt
    model.logprob_chunk = args.chunk
    model.train()
    V = model.cfg.vocab_size

    def autocast():  # bf16 compute on the GPU in "amp"; nothing to do for bf16 weights or on the CPU
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and args.precision == "amp")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    B, T = args.batch, args.seq
    ids = torch.randint(0, V, (B, T), device=device)
    labels = torch.roll(ids, -1, dims=1)  # (B, T) next token; the last column is masked out below
    mask = torch.ones(B, T, device=device)
    mask[:, -1] = 0
    old_logp = torch.full((B, T), -math.log(V), device=device)  # ~ a uniform model: ratios near 1
    adv = torch.randn(B, T, device=device)
    n_tokens = mask.sum()
    backend_info = training_backend(model, device, V, autocast)

    def step(path):
        with autocast():
            if path == "chunked":
                logp = model(ids, labels=labels, temperature=args.temperature).logprobs  # (B, T) fp32
            else:
                logp = naive_logprobs(model, ids, labels, args.temperature)
        loss, _ = policy_loss(logp, old_logp, adv, mask, 0.2, "token-mean", n_tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    flops = model_flops(model, B, T)
    results = {"env": environment(device), "args": vars(args), **backend_info, "params": model.num_params(),
               "model_flops_per_step": flops, "paths": {}}
    print(f"{results['env']}\nmodel {args.model if not args.smoke else 'tiny'}: {model.num_params() / 1e9:.3f}B "
          f"parameters, {B} x {T} tokens, precision {args.precision}, grad ckpt {model.gradient_checkpointing}, "
          f"kernels backend {longcot_kernels.backend()}; {flops / 1e12:.1f} TFLOP per step")
    for path in paths:
        for _ in range(args.warmup):
            step(path)
        sync(device)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated() if cuda else 0  # weights + AdamW states (grads are freed)
        times, losses = zip(*[timed(lambda: step(path), device) for _ in range(args.steps)])
        t = median(times)
        r = {"step_s": t, "times_s": list(times), "loss": losses[-1], "tokens_per_s": B * T / t,
             "tflops": flops / t / 1e12, "mfu": flops / t / (args.peak_tflops * 1e12)}
        if cuda:
            peak = torch.cuda.max_memory_allocated()
            r.update(peak_memory_GB=peak / 1e9, held_GB=held / 1e9, peak_above_held_GB=(peak - held) / 1e9,
                     peak_reserved_GB=torch.cuda.max_memory_reserved() / 1e9)
        results["paths"][path] = r
        write_json(args.out, results)
        print(f"  {path}: {t * 1e3:.0f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, MFU {100 * r['mfu']:.1f}%"
              + (f", peak {r['peak_memory_GB']:.1f} GB" if cuda else ""), flush=True)

    # ---- summary ----
    p = results["paths"]
    if "chunked" in p and "naive" in p and cuda:
        results["memory_ratio"] = p["chunked"]["peak_memory_GB"] / p["naive"]["peak_memory_GB"]
        results["memory_ratio_above_held"] = p["chunked"]["peak_above_held_GB"] / p["naive"]["peak_above_held_GB"]
    write_json(args.out, results)
    print(f"\ndevice {results['env']['device']}, peak {args.peak_tflops:.0f} TFLOP/s, kernels backend "
          f"{results['backend_used']} (default {results['backend_default']})")
    head = (f"{'path':8s} {'ms/step':>8s} {'tokens/s':>9s} {'TFLOP/s':>8s} {'MFU':>6s} {'peak GB':>8s} "
            f"{'above held':>10s} {'target':>18s}")
    print(head)
    print("-" * len(head))
    for path, r in p.items():
        mem = f"{r['peak_memory_GB']:8.1f} {r['peak_above_held_GB']:10.1f}" if cuda else f"{'n/a':>8s} {'n/a':>10s}"
        ok = "yes" if r["mfu"] >= 0.40 else "NO"
        print(f"{path:8s} {r['step_s'] * 1e3:8.0f} {r['tokens_per_s']:9,.0f} {r['tflops']:8.1f} "
              f"{100 * r['mfu']:5.1f}% {mem} {'MFU>=40%: ' + ok if path == 'chunked' else '':>18s}")
    if "memory_ratio" in results:
        ok = "yes" if results["memory_ratio"] <= 0.60 else "NO"
        print(f"peak memory chunked / naive: {100 * results['memory_ratio']:.0f}% in total, "
              f"{100 * results['memory_ratio_above_held']:.0f}% above weights + optimizer states "
              f"(target <= 60%: {ok})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
