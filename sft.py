"""Supervised fine-tuning on (prompt, response) pairs: the paper's long-CoT / short-CoT SFT stage.

    python sft.py                                  # tiny model, classroom task, long CoT, ~5 CPU minutes
    python sft.py --cot short                      # the same with short CoT traces
    python sft.py --model qwen-math-7b --data sft_long.jsonl --out runs/sft-7b   # a real run (GPU)
    torchrun --standalone --nproc_per_node 8 sft.py --model qwen-math-7b --data sft_long.jsonl

Reads top to bottom as the algorithm: data -> batches -> (loss on response tokens, AdamW, warmup + cosine)
-> periodic held-out evaluation (sample.py + verify.py) -> checkpoint. The loss is the mean negative
log-likelihood over all response tokens of an optimizer step (every token weighs the same, whatever its
sequence or rank), so one process and N processes compute the same update. Writes OUT/args.json,
OUT/metrics.jsonl and OUT/checkpoint-N/ (Hugging Face format + sharded trainer state; OUT/latest names the newest,
dist.py); a run restarted with the same --out resumes exactly (weights, optimizer, schedule, data position, RNG).

Departures from the paper: the paper trains with OpenRLHF on traces distilled from QwQ-32B-Preview (long)
and Qwen2.5-Math-72B-Instruct (short), 2-3 epochs, lr 5e-6 (7B); the classroom defaults here are sized for
a 0.8M-parameter character-level model on a CPU. Length-bucketed padded batches instead of packing.
"""
import argparse
import json
import math
import os
import random
import signal
import sys
import time

import torch

import dist
import model as M


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="SFT on (prompt, response) JSONL or the classroom task")
    a = ap.add_argument
    a("--model", default="tiny", help="alias, HF dir or hub id to start from")
    a("--data", default="classroom", help="'classroom' or a JSONL with prompt/response per line")
    a("--cot", default="long", choices=["long", "short"], help="classroom traces: long or short CoT")
    a("--digits", type=int, default=3, help="classroom: digits per operand, train and held-out (3: minutes on a CPU)")
    a("--max-digits", type=int, default=0, help="classroom: a mix of sizes, digits..max-digits per problem (0: none)")
    a("--n-train", type=int, default=2000, help="classroom training problems (x 8 epochs / 16 = 1000 steps)")
    a("--eval-data", default="classroom", help="'classroom', a benchmark name (data.py) or a JSONL of problems")
    a("--n-eval", type=int, default=200, help="held-out problems for the periodic evaluation")
    a("--out", default="runs/sft", help="run directory: args, metrics, checkpoint (resumed if present)")
    a("--epochs", type=float, default=8.0, help="passes over the data (paper: 2-3; the tiny model needs ~1000 steps)")
    a("--batch-size", type=int, default=16, help="sequences per step, all ranks (tiny model: steps matter more than batch)")
    a("--micro-batch-size", type=int, default=16, help="sequences per forward/backward (memory)")
    a("--lr", type=float, default=3e-3, help="peak lr (tiny model; the paper's 7B SFT uses ~5e-6)")
    a("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    a("--warmup", type=float, default=0.05, help="fraction of steps of linear warmup")
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    a("--grad-clip", type=float, default=1.0, help="max global gradient norm")
    a("--max-len", type=int, default=1024, help="prompt + response tokens kept per example")
    a("--eval-every", type=int, default=0, help="steps between evaluations (0: only at the end)")
    a("--save-every", type=int, default=100, help="steps between checkpoints")
    a("--keep-checkpoints", type=int, default=1, help="complete checkpoints kept (older ones are deleted)")
    a("--dist-timeout", type=float, default=120, help="minutes a rank waits for the others (NCCL's default 10 "
      "kills ranks waiting for rank 0 to write a checkpoint)")
    a("--eval-max-new-tokens", type=int, default=400, help="sampling budget at evaluation")
    a("--eval-temperature", type=float, default=0.7, help="paper's evaluation temperature")
    a("--eval-top-p", type=float, default=0.95, help="paper's evaluation top-p")
    a("--seed", type=int, default=0, help="data order, init of the tiny model, sampling")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on GPU, fp32 on CPU")
    a("--grad-ckpt", action="store_true", help="gradient checkpointing (memory for compute)")
    a("--max-steps", type=int, default=0, help="stop after this many steps (0: epochs decide)")
    a("--rope-theta", type=float, help="RoPE theta to train with, with positions raised to --max-len (saved in the "
      "checkpoint's config); 0: the start's own [qwen-math-7b: model.LONG_CONTEXT; others: the start's]")
    a("--kill-at-step", type=int, default=0, help="testing: SIGKILL this process after that step")
    a("--allow-changed-args", action="store_true", help="resume a run in --out although its saved arguments "
      "differ (the change is recorded in args.json); without it such a resume is refused")
    return ap.parse_args(argv)


# flags that may differ when a run resumes: they do not change what it computes (test hooks, checkpoint
# bookkeeping, timeouts, memory); any other difference from OUT/args.json is refused (dist.resume_args)
RESUME_FREE = ("kill_at_step", "dist_timeout", "keep_checkpoints", "save_every", "grad_ckpt", "allow_changed_args")


def check_args(args):
    """Every flag, before any model loads or any work: `error: --flag: got X, expected Y`, exit status 2."""
    import data
    req = dist.require
    req(args.epochs > 0, "--epochs", args.epochs, "a number > 0")
    req(args.max_steps >= 0, "--max-steps", args.max_steps, "an integer >= 0 (0: --epochs decide)")
    req(args.batch_size >= 1, "--batch-size", args.batch_size, "an integer >= 1")
    req(args.micro_batch_size >= 1, "--micro-batch-size", args.micro_batch_size, "an integer >= 1")
    world = int(os.environ.get("WORLD_SIZE", 1))
    req(args.batch_size % (args.micro_batch_size * world) == 0, "--batch-size", args.batch_size,
        f"a multiple of --micro-batch-size x ranks ({args.micro_batch_size} x {world})")
    req(args.lr > 0, "--lr", args.lr, "a number > 0")
    req(0 <= args.min_lr_ratio <= 1, "--min-lr-ratio", args.min_lr_ratio, "a number in [0, 1]")
    req(0 <= args.warmup <= 1, "--warmup", args.warmup, "a fraction of the steps in [0, 1]")
    req(args.weight_decay >= 0, "--weight-decay", args.weight_decay, "a number >= 0")
    req(args.grad_clip > 0, "--grad-clip", args.grad_clip, "a number > 0")
    req(args.max_len >= 2, "--max-len", args.max_len, "an integer >= 2 (prompt and response tokens)")
    req(args.rope_theta is None or args.rope_theta >= 0, "--rope-theta", args.rope_theta, "a number >= 0")
    req(args.eval_every >= 0, "--eval-every", args.eval_every, "an integer >= 0 (0: only at the end)")
    req(args.save_every >= 1, "--save-every", args.save_every, "an integer >= 1")
    req(args.keep_checkpoints >= 1, "--keep-checkpoints", args.keep_checkpoints, "an integer >= 1")
    req(args.dist_timeout > 0, "--dist-timeout", args.dist_timeout, "minutes > 0")
    req(args.eval_max_new_tokens >= 1, "--eval-max-new-tokens", args.eval_max_new_tokens, "an integer >= 1")
    req(args.eval_temperature >= 0, "--eval-temperature", args.eval_temperature, ">= 0 (0: greedy)")
    req(0 < args.eval_top_p <= 1, "--eval-top-p", args.eval_top_p, "a number in (0, 1]")
    req(args.n_train >= 1, "--n-train", args.n_train, "an integer >= 1")
    req(args.n_eval >= 1, "--n-eval", args.n_eval, "an integer >= 1")
    req(1 <= args.digits <= 18, "--digits", args.digits, "an integer in 1..18")
    req(args.max_digits == 0 or args.digits <= args.max_digits <= 18, "--max-digits", args.max_digits,
        f"0 (no mix) or an integer in --digits ({args.digits})..18")
    req(args.kill_at_step >= 0, "--kill-at-step", args.kill_at_step, "an integer >= 0")
    if args.data == "classroom":
        req(args.n_train >= args.batch_size, "--n-train", args.n_train, f"at least one batch "
            f"(--batch-size {args.batch_size})")
    try:  # the files are read here once, before the model loads (again after it, for the tokenizer)
        if args.data != "classroom":
            n = len(data.load_jsonl(args.data, required=("prompt", "response")))
            req(n >= args.batch_size, "--data", f"{args.data} ({n} examples)", f"at least one batch "
                f"(--batch-size {args.batch_size})")
    except data.DataError as e:
        dist.arg_error("--data", str(e))
    try:
        if args.eval_data != "classroom":
            rows = data.load_jsonl(args.eval_data) if data.looks_like_path(args.eval_data) \
                else data.load_benchmark(args.eval_data)
            req(rows, "--eval-data", args.eval_data, "a non-empty problem set")
    except data.DataError as e:
        dist.arg_error("--eval-data", str(e))
    dist.check_writable("--out", args.out)
    return dist.resume_args(args.out, vars(args), ignore=RESUME_FREE, allow=args.allow_changed_args)


# ----------------------------------------------------------------------------------------------------
# Data: tokenise, bucket by length, pad
# ----------------------------------------------------------------------------------------------------
def tokenize(rows, tok, eos_id, max_len):
    """[(ids, n_prompt)]: prompt tokens then response tokens + EOS, cut to max_len."""
    from sample import encode_prompt
    out = []
    for r in rows:
        p = encode_prompt(tok, r["prompt"])
        resp = tok(r["response"], add_special_tokens=False)["input_ids"] + [eos_id]
        out.append(((p + resp)[:max_len], len(p)))
    return out


def batch_plan(lengths, micro, seed, epoch):
    """Length-bucketed micro-batches for one epoch: shuffle, sort within windows of 50 micro-batches so each
    micro-batch has similar lengths (little padding), then shuffle the micro-batches. Deterministic in
    (seed, epoch), which is what makes resuming at a data position exact."""
    rng = random.Random(seed * 1000003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = micro * 50
    batches = []
    for s in range(0, len(idx), window):
        chunk = sorted(idx[s:s + window], key=lambda i: lengths[i])
        batches += [chunk[j:j + micro] for j in range(0, len(chunk), micro)]
    rng.shuffle(batches)
    return [b for b in batches if len(b) == micro]  # equal-size micro-batches: every rank does the same work


def collate(examples, pad_id, device):
    """Right-padded (B, T) ids, next-token labels and the response-token loss mask. No attention mask: the model
    attends causally, so the padding on the right can never reach a real token (model.CausalLM.forward)."""
    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    loss_mask = torch.zeros(len(examples), T, dtype=torch.float32)
    for b, (x, n_prompt) in enumerate(examples):
        ids[b, :len(x)] = torch.tensor(x)
        loss_mask[b, n_prompt - 1:len(x) - 1] = 1  # position t predicts token t+1: response tokens only
    labels = torch.roll(ids, -1, dims=1)  # (B, T) labels[t] = ids[t+1] (last column is masked out)
    return ids.to(device), labels.to(device), loss_mask.to(device)


# ----------------------------------------------------------------------------------------------------
# Loss and schedule
# ----------------------------------------------------------------------------------------------------
def sft_loss(model, ids, labels, loss_mask, n_tokens):
    """Sum of response-token NLL / n_tokens (the response tokens of the whole optimizer step on all ranks).
    Returns (loss, metrics)."""
    out = model(ids, labels=labels)
    nll = -(out.logprobs * loss_mask).sum()  # (B, T) -> scalar
    return nll / n_tokens, {"nll_sum": nll.item(), "tokens": loss_mask.sum().item()}


def lr_at(step, total, peak, warmup_steps, min_ratio):
    """Linear warmup to `peak`, then cosine decay to peak * min_ratio (step counts from 0)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    prog = (step - warmup_steps) / max(1, total - warmup_steps)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))


def load_train_rows(args, tok):
    import data
    if args.data == "classroom":
        mix = args.max_digits > args.digits  # a mix repeats small problems rather than run out of them
        rows = data.classroom(args.n_train, seed=args.seed, split="train", digits=args.digits,
                              max_digits=args.max_digits or None, distinct=not mix)
        return data.sft_rows(rows, cot=args.cot, tokenizer=tok)
    rows = data.load_jsonl(args.data, required=("prompt", "response"))
    for r in rows:  # distilled rows keep the problem: re-format it with the student's own chat template
        if "problem" in r:
            r["prompt"] = data.format_prompt(r["problem"], tok, r.get("options"))
    return rows


def load_eval_rows(args):
    import data
    if args.eval_data == "classroom":
        return data.classroom(args.n_eval, seed=args.seed + 1, split="test", digits=args.digits,
                              max_digits=args.max_digits or None)
    if data.looks_like_path(args.eval_data):
        return data.load_jsonl(args.eval_data)[:args.n_eval]
    return data.load_benchmark(args.eval_data)[:args.n_eval]


def run_eval(args, model, tok, rows, step, dtype):
    """Held-out accuracy and length from a plain copy of the weights (FSDP-safe: no collectives inside)."""
    from eval import evaluate
    from sample import decode_copy
    net = decode_copy(model, dtype=dtype) if dist.world() > 1 else model
    metrics, _ = evaluate(net, tok, rows, temperature=args.eval_temperature, top_p=args.eval_top_p,
                          max_new_tokens=args.eval_max_new_tokens, seed=args.seed + step)
    return metrics


def main(argv=None):
    args = parse_args(argv)
    saved_args = check_args(args)
    rank, world, device = dist.init(args.dist_timeout)
    dtype = dist.compute_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        dist.write_atomic(os.path.join(args.out, "args.json"), json.dumps(saved_args, indent=2))

    # model: fp32 master weights; bf16 compute via FSDP's mixed precision or autocast
    theta = M.LONG_CONTEXT.get(args.model, {}).get("rope_theta") if args.rope_theta is None else args.rope_theta
    model, tok = M.load(args.model, dtype=torch.float32, device=device, seed=args.seed, rope_theta=theta or None,
                        max_positions=args.max_len if theta else None)
    model.gradient_checkpointing = args.grad_ckpt
    model = dist.shard(model, param_dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.95))

    # data
    examples = tokenize(load_train_rows(args, tok), tok, model.cfg.eos_token_id, args.max_len)
    eval_rows = load_eval_rows(args)
    micro_per_step = args.batch_size // args.micro_batch_size
    if args.batch_size % (args.micro_batch_size * world):
        raise ValueError(f"--batch-size {args.batch_size} must be a multiple of --micro-batch-size x ranks "
                         f"({args.micro_batch_size} x {world})")
    steps_per_epoch = len(batch_plan([len(e[0]) for e in examples], args.micro_batch_size, args.seed, 0)) // micro_per_step
    if steps_per_epoch == 0:
        raise ValueError(f"{len(examples)} examples are fewer than one batch of {args.batch_size}")
    total = int(args.epochs * steps_per_epoch)
    if args.max_steps:
        total = min(total, args.max_steps)
    if total < 1:  # (known only now: the steps per epoch depend on the tokenised lengths)
        raise ValueError(f"--epochs {args.epochs} x {steps_per_epoch} steps per epoch is less than one step")
    warmup = max(1, int(args.warmup * total))

    step = 0
    ckpt, state = dist.load_checkpoint(args.out, {"model": model}, {"model": opt})
    if ckpt:
        step = state["step"]
        dist.print0(f"resumed from {ckpt} at step {step}")
    log = dist.metrics_log(args.out, "step", step if ckpt else None)  # drops rows of steps about to run again
    lengths = [len(e[0]) for e in examples]
    bar = None
    if rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=step, desc="sft", dynamic_ncols=True)
    t_last, tok_count = time.time(), 0
    plan, plan_epoch = None, None

    while step < total:
        # ---- the micro-batches of this step (data position = step) ----
        epoch, k = divmod(step, steps_per_epoch)
        if plan_epoch != epoch:  # once per epoch: re-planning every step (a sort of all the problems) took ~15%
            # of replicate.py's long-CoT SFT stages and ~30% of its short-CoT ones (64,120 problems)
            plan, plan_epoch = batch_plan(lengths, args.micro_batch_size, args.seed, epoch), epoch
        micro = plan[k * micro_per_step:(k + 1) * micro_per_step]
        n_tokens = max(1, sum(max(0, len(examples[i][0]) - examples[i][1]) for mb in micro for i in mb))
        lr = lr_at(step, total, args.lr, warmup, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        # ---- forward/backward on this rank's share; FSDP averages grads over ranks, hence * world ----
        model.train()
        nll = 0.0
        for mb in micro[rank::world]:
            ids, labels, mask = collate([examples[i] for i in mb], tok.pad_token_id, device)
            with dist.autocast(device, dtype):
                loss, m = sft_loss(model, ids, labels, mask, n_tokens)
            (loss * world).backward()
            nll += m["nll_sum"]
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        if not torch.isfinite(grad_norm):
            raise RuntimeError(f"step {step}: non-finite gradient norm ({grad_norm}); weights left unchanged")
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        # ---- log ----
        loss_val = dist.sum_tensor(torch.tensor([nll], dtype=torch.float64)).item() / n_tokens
        tok_count += n_tokens
        now = time.time()
        row = {"step": step, "loss": loss_val, "lr": lr, "grad_norm": float(grad_norm), "epoch": step / steps_per_epoch,
               "tokens_per_s": tok_count / max(now - t_last, 1e-9)}
        log(row)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr:.2e}", refresh=False)
        if args.kill_at_step and step == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash, for the resume test: no cleanup, no final save
        if (args.eval_every and step % args.eval_every == 0) and step < total:
            ev = run_eval(args, model, tok, eval_rows, step, dtype)
            log({"step": step, **{f"eval/{k}": v for k, v in ev.items()}})
            dist.print0(f"\nstep {step}: held-out accuracy {ev['accuracy']:.3f}, mean length {ev['mean_length']:.0f}")
        if step % args.save_every == 0 or step == total:
            ckpt = dist.save_checkpoint(args.out, step, {"model": model}, {"model": opt}, tok, {"step": step},
                                        keep=args.keep_checkpoints)
        t_last, tok_count = time.time(), 0
    if bar:
        bar.close()

    ev = run_eval(args, model, tok, eval_rows, step, dtype)
    log({"step": step, **{f"eval/{k}": v for k, v in ev.items()}})
    if rank == 0:  # marks the run finished (ppo.py reuses a finished classroom SFT run)
        dist.write_atomic(os.path.join(args.out, "done.json"), json.dumps(ev))
    dist.print0(f"checkpoint: {ckpt} (loadable with model.load)")
    dist.print0(f"held-out accuracy {ev['accuracy']:.2f} (n={ev['n']}), mean response length {ev['mean_length']:.0f} tokens")
    return ev


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    dist.cleanup()  # under torchrun: the ranks meet, the group goes, the process ends here
