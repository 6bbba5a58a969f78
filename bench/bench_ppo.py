"""Where the time of one PPO iteration goes: sample / score / old log-probs / reference / critic / advantage /
train, on a random-weight Qwen2.5-1.5B, with ppo.py's own functions.

    python bench/bench_ppo.py                                  # one H100: 8 prompts x 8 samples x 1024 new tokens
    python bench/bench_ppo.py --n-prompts 16 --max-new 2048    # other sizes
    python bench/bench_ppo.py --smoke                          # tiny model on the CPU: shows the script runs

`ppo_iteration` below is ppo.main's iteration without the distributed plumbing, logging and checkpoints,
calling the same pure functions (build_sequences, response_mask, micro_batches, forward_response, kl_penalty,
multi_gamma_advantages, masked_whiten, policy_loss, value_loss) and reward.reward_tensor, in the same order:
  sample     refresh the bf16 sampling copy of the policy (sample.decode_copy) and sample n responses per
             prompt (sample.generate, temperature 0.7, top-p 1.0 as ppo.py); no response stops early (the EOS
             id is outside the vocabulary, see bench_sample.NoStopTokenizer), so every one has --max-new tokens;
  score      correctness = a random coin per response (a random model cannot answer; the verifier is not run)
             -> reward.reward_tensor (cosine reward + dense repetition penalty, the paper's settings) and the
             padded (prompt + response) batch;
  old_logp   policy log-probs, no gradient, in token-budget micro-batches (ppo.py computes these with the
             reference and critic in one loop; they are timed apart here);
  reference  frozen bf16 reference log-probs;
  critic     values of the critic (a second trainable copy with a value head);
  advantage  KL penalty folded into the reward, multi-gamma returns, whitening (on the CPU, as ppo.py);
  train      one epoch of shuffled minibatches (--train-batch samples per AdamW step) of micro-batches:
             policy_loss + value_loss, backward, gradient clipping, AdamW steps for actor and critic.
Precision (--precision): "amp" (default) keeps policy and critic in fp32 (master weights, AdamW states) and
runs their forwards under bf16 autocast, as sft.py does on one GPU; "fp32" runs them without autocast, as
ppo.py currently does on one GPU. The reference and the sampling copy are bf16. Gradient checkpointing on.
Training uses a kernels backend whose ops have gradients (see bench_train.training_backend); sampling and
scoring keep the default one. A warm-up iteration of the same size runs first (Triton compilation, AdamW
state allocation); the table shows the measured iteration(s). Results go to --out as JSON.
Departures from ppo.py: no verifier, no FSDP, one process. Not from the paper: engineering support only.
On a CPU (--smoke) the numbers say nothing about speed.
"""
import argparse
import os
import random
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

import longcot_kernels  # noqa: E402
import model as M  # noqa: E402
import reward as RW  # noqa: E402
from bench_sample import SHAPES, NoStopTokenizer, environment, random_model, sync, write_json  # noqa: E402
from bench_train import training_backend  # noqa: E402
from ppo import (build_sequences, forward_response, kl_penalty, masked_whiten, micro_batches, trim,  # noqa: E402
                 multi_gamma_advantages, policy_loss, response_mask, value_loss)
from sample import decode_copy, generate  # noqa: E402

# ---- arguments (every one has a default) ----
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--n-prompts", type=int, default=8, help="prompts per iteration")
parser.add_argument("--n-samples", type=int, default=8, help="responses per prompt (8 x 8 = 64 samples)")
parser.add_argument("--prompt-len", type=int, default=128, help="random prompt tokens")
parser.add_argument("--max-new", type=int, default=1024, help="new tokens per response (all reach it)")
parser.add_argument("--ragged", action="store_true", help="cut each response to a seeded length in [max-new/8, "
                    "max-new] before scoring, as real rollouts end at different lengths (micro-batches at their width)")
parser.add_argument("--train-batch", type=int, default=32, help="samples per AdamW step")
parser.add_argument("--micro-tokens", type=int, default=16384, help="padded tokens per forward (ppo.py's default)")
parser.add_argument("--micro-batch", type=int, default=4, help="rows per forward at most (ppo.py's default)")
parser.add_argument("--precision", default="amp", choices=["amp", "fp32"],
                    help="amp: fp32 master weights + bf16 autocast; fp32: no autocast (ppo.py on one GPU today)")
parser.add_argument("--no-grad-ckpt", action="store_true", help="turn gradient checkpointing off")
parser.add_argument("--temperature", type=float, default=0.7, help="rollout temperature, log-probs taken at it")
parser.add_argument("--kl-coef", type=float, default=0.01, help="the paper's KL penalty beta")
parser.add_argument("--iters", type=int, default=1, help="measured iterations")
parser.add_argument("--warmup-iters", type=int, default=1, help="untimed iterations first")
parser.add_argument("--seed", type=int, default=0, help="weights, prompts, sampling and coins are seeded")
parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "bench_ppo.json"),
                    help="where the numbers are written as JSON")
parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 2 x 2 samples, 16 new tokens")

PHASES = ("sample", "score", "old_logp", "reference", "critic", "advantage", "train")


def ppo_iteration(policy, critic, ref, sampler, actor_opt, critic_opt, tok, prompt_ids, args, it, device,
                  autocast, sample_dtype, train_backend):
    """One PPO iteration, timed phase by phase. Returns (seconds per phase, statistics, the sampling copy)."""
    times, t = {}, [time.perf_counter()]

    def lap(phase):  # drain the GPU, then charge the elapsed time to `phase`
        sync(device)
        now = time.perf_counter()
        times[phase], t[0] = now - t[0], now

    # ---- 1. sample: refresh the decode copy, n responses per prompt ----
    sampler = decode_copy(policy, sampler, sample_dtype)
    outs = generate(sampler, tok, prompt_ids, n=args.n_samples, temperature=args.temperature, top_p=1.0,
                    max_new_tokens=args.max_new, seed=args.seed + 100_003 * it,
                    batch_size=len(prompt_ids) * args.n_samples)
    samples = [(i, s) for i, group in enumerate(outs) for s in group]
    if args.ragged:  # rows of different lengths: what micro-batching by width is for
        cut = random.Random(args.seed * 7 + it)
        for _, s in samples:
            n = cut.randint(max(1, args.max_new // 8), len(s.token_ids))
            s.token_ids, s.logprobs, s.finish_reason = s.token_ids[:n], s.logprobs[:n], "eos"
    lap("sample")

    # ---- 2. score: random correctness -> per-token rewards; the padded batch ----
    coin = random.Random(args.seed * 31 + it)
    correct = [coin.random() < 0.5 for _ in samples]
    lengths = [len(s.token_ids) for _, s in samples]
    truncated = [s.finish_reason == "length" for _, s in samples]
    ids, starts = build_sequences([prompt_ids[i] for i, _ in samples], [s.token_ids for _, s in samples],
                                  tok.pad_token_id)  # (B, W) right-padded rows, (B,) response starts
    R = max(lengths)
    ends = starts + torch.tensor(lengths)
    resp = ids.gather(1, (starts[:, None] + torch.arange(R)).clamp(max=ids.shape[1] - 1))  # (B, R)
    rcfg = RW.RewardConfig(kind="cosine", max_len=args.max_new)  # paper: cosine + dense repetition penalty
    rewards, gammas, _ = RW.reward_tensor(correct, lengths, resp, truncated, rcfg)  # (B, R, K)
    mask = response_mask(lengths, R)  # (B, R)
    lap("score")

    # ---- 3. old log-probs, reference log-probs, values: no gradient, token-budget micro-batches ----
    order = sorted(range(len(samples)), key=lambda b: int(ends[b]))
    mbs = [[order[b] for b in mb] for mb in
           micro_batches([int(ends[b]) for b in order], args.micro_tokens, args.micro_batch)]

    @torch.no_grad()
    def score(net, values=False):
        net.eval()
        out = torch.zeros(len(samples), R)
        for mb in mbs:
            x, st, r = trim(ids, starts, lengths, mb, device)  # each micro-batch at its own width
            with autocast():
                y = forward_response(net, x, st, r, args.temperature, values)
            out[mb, :r] = (y if values else y[0]).float().cpu()
        return out

    old_lp = score(policy)
    lap("old_logp")
    ref_lp = score(ref)
    lap("reference")
    old_v = score(critic, values=True)
    lap("critic")

    # ---- 4. advantages: KL folded into the reward, multi-gamma returns (lambda = 1), whitened ----
    kl = kl_penalty(old_lp, ref_lp, mask)  # (B, R)
    rewards[..., 0] -= args.kl_coef * kl
    adv, returns = multi_gamma_advantages(rewards, old_v, mask, gammas, 1.0)
    adv = masked_whiten(adv, mask)
    lap("advantage")

    # ---- 5. train: one epoch of shuffled minibatches, each of micro-batches ----
    policy.train(), critic.train()
    perm = list(range(len(samples)))
    random.Random(args.seed * 7 + it).shuffle(perm)
    n_steps = n_micro = 0
    with longcot_kernels.use(train_backend):
        for s in range(0, len(perm), args.train_batch):
            batch = sorted(perm[s:s + args.train_batch], key=lambda b: int(ends[b]))
            n_seq = float(len(batch))  # the authors' aggregation: each response's token mean, averaged
            for mbi in micro_batches([int(ends[b]) for b in batch], args.micro_tokens, args.micro_batch):
                mb = [batch[b] for b in mbi]
                x, st, r = trim(ids, starts, lengths, mb, device)
                on = lambda t: t[mb, :r].to(device)  # noqa: E731
                with autocast():
                    lp, _ = forward_response(policy, x, st, r, args.temperature)
                    v = forward_response(critic, x, st, r, args.temperature, values=True)
                pl, _ = policy_loss(lp.float(), on(old_lp), on(adv), on(mask), 0.2, "seq-mean-token-mean", n_seq)
                vl, _ = value_loss(v, on(old_v), on(returns), on(mask), 0.2, "seq-mean-token-mean", n_seq)
                (pl + vl).backward()
                n_micro += 1
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            actor_opt.step(), critic_opt.step()
            actor_opt.zero_grad(set_to_none=True), critic_opt.zero_grad(set_to_none=True)
            n_steps += 1
    lap("train")
    stats = {"samples": len(samples), "generated_tokens": sum(lengths), "padded_len": ids.shape[1],
             "micro_batches_score": len(mbs), "micro_batches_train": n_micro, "optimizer_steps": n_steps,
             "accuracy": sum(correct) / len(correct), "mean_reward": float(rewards.sum(dim=(1, 2)).mean())}
    return times, stats, sampler


def main():
    args = parser.parse_args()
    if args.smoke:
        args.n_prompts, args.n_samples, args.prompt_len, args.max_new, args.train_batch = 2, 2, 16, 16, 2
    elif not torch.cuda.is_available():
        parser.error("no CUDA GPU (use --smoke for a CPU run of tiny shapes)")
    device = "cpu" if args.smoke else "cuda"
    cuda = device == "cuda"
    torch.manual_seed(args.seed)

    # ---- models: policy and critic train in fp32 (master weights), the reference is frozen bf16 ----
    train_dtype = torch.float32
    frozen_dtype = torch.float32 if args.smoke else torch.bfloat16
    if args.smoke:
        policy, _ = M.load("tiny", dtype=train_dtype, device=device, seed=args.seed)
        critic, _ = M.load("tiny", dtype=train_dtype, device=device, seed=args.seed, value_head=True)
        ref, _ = M.load("tiny", dtype=frozen_dtype, device=device, seed=args.seed)
    else:
        cfg = SHAPES["1.5b"]  # a 7B policy + critic with fp32 AdamW states (~240 GB) does not fit one GPU
        policy = random_model(cfg, device, train_dtype, seed=args.seed)
        critic = random_model(cfg, device, train_dtype, seed=args.seed, value_head=True)
        ref = random_model(cfg, device, frozen_dtype, seed=args.seed)
    ref.requires_grad_(False)
    V = policy.cfg.vocab_size
    for net in (policy, critic, ref):
        net.cfg.eos_token_id = V  # never sampled: every response runs to max_new
    policy.gradient_checkpointing = critic.gradient_checkpointing = not args.no_grad_ckpt
    actor_opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, betas=(0.9, 0.95), weight_decay=0.0)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    tok = NoStopTokenizer(V)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and args.precision == "amp")

    default_backend = longcot_kernels.backend()
    backend_info = training_backend(policy, device, V, autocast)  # may switch to "torch" ...
    train_backend = longcot_kernels.backend()
    longcot_kernels.set_backend(default_backend)  # ... for training only; sampling and scoring keep the default
    g = torch.Generator().manual_seed(args.seed)
    prompt_ids = torch.randint(0, V, (args.n_prompts, args.prompt_len), generator=g).tolist()

    results = {"env": environment(device), "args": vars(args), **backend_info, "params": policy.num_params(),
               "iterations": []}
    print(f"{results['env']}\nmodel {'tiny' if args.smoke else '1.5b'}: {policy.num_params() / 1e9:.3f}B "
          f"parameters; {args.n_prompts} prompts x {args.n_samples} samples x {args.max_new} new tokens; "
          f"precision {args.precision}; training backend {train_backend}")
    sampler = None
    for it in range(args.warmup_iters + args.iters):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times, stats, sampler = ppo_iteration(policy, critic, ref, sampler, actor_opt, critic_opt, tok, prompt_ids,
                                              args, it, device, autocast, frozen_dtype, train_backend)
        row = {"iteration": it, "warmup": it < args.warmup_iters, "times_s": times, "total_s": sum(times.values()),
               **stats}
        if cuda:
            row["peak_memory_GB"] = torch.cuda.max_memory_allocated() / 1e9
        results["iterations"].append(row)
        write_json(args.out, results)
        print(f"  iteration {it}{' (warm-up)' if row['warmup'] else ''}: {row['total_s']:.1f} s", flush=True)

    # ---- table: the measured iterations' mean ----
    measured = [r for r in results["iterations"] if not r["warmup"]] or results["iterations"]
    mean = {p: sum(r["times_s"][p] for r in measured) / len(measured) for p in PHASES}
    total = sum(mean.values())
    st = measured[-1]
    results["mean_times_s"], results["mean_total_s"] = mean, total
    write_json(args.out, results)
    print(f"\ndevice {results['env']['device']}; {st['samples']} samples, {st['generated_tokens']:,} generated tokens, "
          f"sequences padded to {st['padded_len']}; {st['micro_batches_train']} training micro-batches, "
          f"{st['optimizer_steps']} optimizer steps" + (f"; peak memory {st['peak_memory_GB']:.1f} GB" if cuda else ""))
    head = f"{'phase':10s} {'seconds':>8s} {'share':>6s}  {'rate':s}"
    print(head)
    print("-" * 44)
    scored = st["samples"] * st["padded_len"]  # padded tokens through each scoring forward
    rate = {"sample": f"{st['generated_tokens'] / mean['sample']:,.0f} generated tokens/s",
            "old_logp": f"{scored / mean['old_logp']:,.0f} tokens/s",
            "reference": f"{scored / mean['reference']:,.0f} tokens/s",
            "critic": f"{scored / mean['critic']:,.0f} tokens/s",
            "train": f"{scored / mean['train']:,.0f} tokens/s (actor + critic)"}
    for p in PHASES:
        print(f"{p:10s} {mean[p]:8.2f} {100 * mean[p] / total:5.1f}%  {rate.get(p, '')}")
    print(f"{'total':10s} {total:8.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
