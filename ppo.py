"""PPO with GAE for long chain-of-thought RL: the paper's RL stage, written out by hand.

    python ppo.py                                   # tiny model after the classroom SFT, on a CPU (~9 min)
    python ppo.py --reward classic                  # the 0/1 reward instead of the cosine one
    torchrun --standalone --nproc_per_node 8 ppo.py --model qwen-math-7b   # the paper's recipe (GPUs)

One iteration, top to bottom in `main`:
  1. rollout    sample n responses per prompt from the current policy (sample.py), log-probs at temperature
  2. reward     verify.py + reward.py: K reward types (cosine or classic; repetition penalty), each with its gamma
  3. score      per-token log-probs of the policy (old) and the frozen reference, values of the critic;
                KL penalty -beta * KL per token folded into the first reward type
  4. advantage  GAE; with several reward types and lambda = 1 each type's return is discounted with its own
                gamma and summed (the paper's multi-gamma returns), advantage = return - value; whitened
                over the whole rollout across ranks
  5. update     epochs of shuffled minibatches: clipped policy ratio, clipped value loss, gradient clipping,
                warmup + cosine schedules, gradient accumulation over token-budget micro-batches
  6. log        reward, accuracy, lengths, truncation, KL, clip fraction, approx KL, explained variance,
                entropy, value loss, tokens/s, time split; periodic held-out evaluation; checkpoint
Each piece of math is a pure function below `main`'s helpers, tested in tests/test_ppo.py.

Defaults: a model alias other than `tiny` takes the paper's recipe (PAPER below: actor lr 5e-7, critic lr 9e-6,
KL 0.01, cosine reward +2/+1 correct, -10/0 wrong, -10 exceed, repetition n=40 at -0.05, gammas (1, 0.99),
lambda 1, prompts <= 2048 tokens, up to 14,336 generated tokens, MATH train prompts). `tiny` takes CLASSROOM
(sized for a CPU). Any flag overrides either. A run restarted with the same --out resumes exactly.

Departures from the paper: the paper uses OpenRLHF with vLLM rollouts; here one sampler and one training loop.
The KL penalty is added to the first reward type's stream (discounted with its gamma). Old log-probs are
recomputed by the training forward (not taken from the sampler), as OpenRLHF does.
"""
import argparse
import json
import os
import random
import signal
import sys
import time

import torch

import dist
import model as M
from sft import lr_at  # linear warmup, then cosine decay to peak * min_ratio

PAPER = dict(  # Yeo et al. 2025, RL setup (Sec. 4, App. E)
    actor_lr=5e-7, critic_lr=9e-6, kl_coef=0.01, reward="cosine", rep_n=40, rep_penalty=-0.05,
    gamma=1.0, rep_gamma=0.99, lam=1.0, max_prompt_len=2048, max_new_tokens=14336, prompts="math_train",
    rollout_batch=512, n_samples=8, train_batch=128, micro_tokens=16384, ppo_epochs=1, iterations=100,
    warmup=0.05, eval_every=10, n_eval=500, eval_data="math500", temperature=0.7, micro_batch=4, value_clip=0.2,
)
CLASSROOM = dict(  # the tiny model on the classroom task: accuracy rises within minutes on a CPU
    actor_lr=2e-4, critic_lr=1e-3, kl_coef=0.01, reward="cosine", rep_n=40, rep_penalty=-0.05,
    gamma=1.0, rep_gamma=0.99, lam=1.0, max_prompt_len=64, max_new_tokens=400, prompts="classroom",
    rollout_batch=32, n_samples=4, train_batch=64, micro_tokens=16384, ppo_epochs=2, iterations=20,
    warmup=0.05, eval_every=5, n_eval=200, eval_data="classroom", temperature=0.7, micro_batch=64,
    value_clip=5.0,  # returns span ~12 here and the head starts at 0: a 0.2 clip would freeze the critic
)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="PPO with GAE for long-CoT RL")
    a = ap.add_argument
    a("--model", default="tiny", help="policy start: alias, HF dir, hub id; 'tiny' = classroom SFT result")
    a("--sft-out", default="runs/sft", help="tiny only: SFT run reused (or made) as the start point")
    a("--out", default="runs/ppo", help="run directory: args, metrics, checkpoint (resumed if present)")
    a("--prompts", help="'classroom', a benchmark name (data.py) or a JSONL of problems [math_train]")
    a("--eval-data", help="held-out set, as --prompts [math500]")
    a("--n-eval", type=int, help="held-out problems per evaluation [500]")
    a("--eval-every", type=int, help="iterations between evaluations [10]")
    a("--iterations", type=int, help="PPO iterations [100]")
    a("--rollout-batch", type=int, help="prompts per iteration, all ranks [512]")
    a("--n-samples", type=int, help="responses per prompt [8]")
    a("--temperature", type=float, help="rollout temperature; log-probs are taken at it [0.7]")
    a("--max-prompt-len", type=int, help="longer prompts are dropped [2048]")
    a("--max-new-tokens", type=int, help="generation limit T of the cosine reward [14336]")
    a("--reward", choices=["cosine", "classic"], help="length-scaling cosine reward or 0/1 [cosine]")
    a("--cosine", default="2,1,-10,0,-10", help="cosine reward: r0_correct,rL_correct,r0_wrong,rL_wrong,exceed")
    a("--rep-n", type=int, help="repetition n-gram size [40]")
    a("--rep-penalty", type=float, help="per repeated token, 0 disables [-0.05]")
    a("--gamma", type=float, help="discount of the correctness reward [1.0]")
    a("--rep-gamma", type=float, help="discount of the repetition penalty [0.99]")
    a("--lam", type=float, help="GAE lambda [1.0]")
    a("--kl-coef", type=float, help="beta of the per-token KL penalty [0.01]")
    a("--kl-estimator", default="k1", choices=["k1", "k3"], help="log-ratio (k1) or Schulman's k3")
    a("--actor-lr", type=float, help="policy peak lr [5e-7]")
    a("--critic-lr", type=float, help="critic peak lr [9e-6]")
    a("--min-lr-ratio", type=float, default=0.1, help="cosine schedules decay to lr * this")
    a("--warmup", type=float, help="fraction of iterations of linear warmup [0.05]")
    a("--train-batch", type=int, help="samples per optimizer step (minibatch), all ranks [128]")
    a("--micro-tokens", type=int, help="padded tokens per forward/backward (memory) [16384]")
    a("--micro-batch", type=int, help="at most this many sequences per forward [4]")
    a("--ppo-epochs", type=int, help="passes over each rollout [1]")
    a("--clip", type=float, default=0.2, help="policy ratio clip epsilon")
    a("--value-clip", type=float, help="value clip around the old values [0.2]")
    a("--grad-clip", type=float, default=1.0, help="max gradient norm, actor and critic")
    a("--seed", type=int, default=0, help="prompt order and sampling")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on GPU, fp32 on CPU")
    a("--grad-ckpt", action="store_true", help="gradient checkpointing for policy and critic")
    a("--save-every", type=int, default=10, help="iterations between checkpoints")
    a("--kill-at-step", type=int, default=0, help="testing: SIGKILL this process after that iteration")
    args = ap.parse_args(argv)
    preset = CLASSROOM if args.model == "tiny" else PAPER
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


# ----------------------------------------------------------------------------------------------------
# The math: pure functions on (B, T) response-aligned tensors; mask = 1 on generated tokens
# ----------------------------------------------------------------------------------------------------
def response_mask(lengths, T):
    """(B, T) 1 for the generated tokens (EOS included when the row stopped at EOS; a truncated row has no
    EOS, and all its max_new_tokens are actions)."""
    return (torch.arange(T)[None, :] < torch.as_tensor(lengths)[:, None]).float()


def kl_penalty(logp, ref_logp, kind="k1"):
    """Per-token KL(pi || ref) estimate from samples of pi (Schulman 2020, "Approximating KL divergence")."""
    log_ratio = logp - ref_logp  # (B, T)
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.exp(-log_ratio) - 1 + log_ratio  # >= 0, unbiased, lower variance
    raise ValueError(f"unknown KL estimator {kind!r}")


def discounted_returns(rewards, mask, gamma):
    """G_t = r_t + gamma * G_{t+1} within each row's actions. rewards, mask (B, T) -> (B, T)."""
    G = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running * mask[:, t + 1] if t + 1 < rewards.shape[1] else rewards[:, t]
        G[:, t] = running * mask[:, t]
    return G


def gae(rewards, values, mask, gamma, lam):
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16). rewards, values, mask (B, T).
    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lam A_{t+1}; after the last action V = 0.
    Returns (advantages, returns = advantages + values)."""
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros(B, dtype=rewards.dtype)
    next_val = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        m_next = mask[:, t + 1] if t + 1 < T else torch.zeros(B, dtype=rewards.dtype)
        delta = rewards[:, t] + gamma * next_val * m_next - values[:, t]
        next_adv = (delta + gamma * lam * next_adv * m_next) * mask[:, t]
        adv[:, t] = next_adv
        next_val = values[:, t]
    return adv, (adv + values) * mask


def multi_gamma_advantages(rewards, values, mask, gammas, lam):
    """rewards (B, T, K), one discount per reward type. lambda = 1: return = sum_k G^k (each discounted with its
    own gamma_k; the paper's per-reward-type discounting), advantage = return - value. One type: plain GAE.
    Returns (advantages, returns), both (B, T)."""
    if len(gammas) == 1:
        return gae(rewards[..., 0], values, mask, gammas[0], lam)
    if lam != 1.0:
        raise ValueError("several reward types with their own gammas need lambda = 1 (the paper's setting); "
                         f"got lambda={lam}")
    returns = sum(discounted_returns(rewards[..., k], mask, g) for k, g in enumerate(gammas))  # (B, T)
    return (returns - values) * mask, returns


def masked_whiten(x, mask, eps=1e-8):
    """(x - mean) / std over the masked entries of the whole rollout, on all ranks."""
    xd, md = x.double(), mask.double()  # float64 sums: in fp32, E[x^2] - E[x]^2 cancels when |mean| >> std
    s = dist.sum_tensor(torch.stack([(xd * md).sum(), (xd * xd * md).sum(), md.sum()]))
    mean = s[0] / s[2]
    var = s[1] / s[2] - mean ** 2
    return ((xd - mean) * torch.rsqrt(var.clamp(min=0) + eps)).to(x.dtype) * mask


def policy_loss(logp, old_logp, adv, mask, clip, n_tokens):
    """PPO clipped surrogate (Schulman et al. 2017, Eq. 7), summed over tokens / n_tokens. (B, T) inputs.
    Returns (loss, metrics) with clip fraction and approx KL (k3 of old vs new)."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)  # L^CLIP
    loss = -(surr * mask).sum() / n_tokens
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip).float()
        approx_kl = (ratio - 1) - log_ratio
        m = {"clip_frac_sum": (clipped * mask).sum().item(), "approx_kl_sum": (approx_kl * mask).sum().item()}
    return loss, m


def value_loss(values, old_values, returns, mask, clip, n_tokens):
    """Clipped value loss: 0.5 max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -c, c)."""
    v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * (torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2) * mask).sum() / n_tokens
    return loss, {}


def explained_variance(values, returns, mask):
    """1 - Var(R - V) / Var(R) over the masked tokens of all ranks: 1 = perfect critic, 0 = predicts the mean,
    < 0 = worse than the mean."""
    returns, mask = returns.double(), mask.double()
    err = returns - values.double()
    s = dist.sum_tensor(torch.stack([mask.sum(), (returns * mask).sum(), (returns ** 2 * mask).sum(),
                                     (err * mask).sum(), (err ** 2 * mask).sum()]))
    n = s[0].clamp(min=1)
    var_r = s[2] / n - (s[1] / n) ** 2
    var_e = s[4] / n - (s[3] / n) ** 2
    return float(1 - var_e / var_r) if var_r > 1e-12 else float("nan")


# ----------------------------------------------------------------------------------------------------
# Batching helpers
# ----------------------------------------------------------------------------------------------------
def build_sequences(prompt_ids, responses, pad_id):
    """Left-padded prompts + right-padded responses in one (B, P + R) batch, so that response token j of every
    row sits at column P + j and its log-prob comes out at column P + j - 1."""
    P = max(len(p) for p in prompt_ids)
    R = max(max(len(r) for r in responses), 1)
    B = len(responses)
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(prompt_ids, responses)):
        ids[b, P - len(p):P] = torch.tensor(p)
        ids[b, P:P + len(r)] = torch.tensor(r, dtype=torch.long)
        attn[b, P - len(p):P + len(r)] = 1
    return ids, attn, P


def micro_batches(lengths, max_tokens, max_rows):
    """Split indices (in the given order) into micro-batches of at most max_rows rows and max_tokens padded
    tokens (rows x longest)."""
    out, cur, longest = [], [], 0
    for i, n in enumerate(lengths):
        if cur and (len(cur) >= max_rows or max(longest, n) * (len(cur) + 1) > max_tokens):
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    return out


def forward_response(net, ids, attn, P, R, temperature, values=False, dtype=torch.bfloat16):
    """Response-aligned (B, R) log-probs at temperature, entropy and (critic) values."""
    labels = None if values else torch.roll(ids, -1, dims=1)  # the critic needs no log-probs
    with dist.autocast(ids.device, dtype):  # one GPU: bf16 compute on fp32 weights
        out = net(ids, attention_mask=attn, labels=labels, temperature=temperature, return_values=values)
    sl = slice(P - 1, P - 1 + R)
    if values:
        return out.values[:, sl]
    return out.logprobs[:, sl], out.entropy[:, sl]


def load_prompt_rows(spec, n, seed, split):
    import data
    if spec == "classroom":
        return data.classroom(n, seed=seed, split=split)
    if os.path.exists(spec):
        return data.load_jsonl(spec)
    return data.load_benchmark(spec)


def ensure_start(args):
    """The tiny policy starts from the classroom SFT result: reuse args.sft_out, or run sft.py to make it."""
    if args.model != "tiny":
        return args.model
    ckpt = os.path.join(args.sft_out, "checkpoint")
    done = os.path.join(args.sft_out, "done.json")
    if not os.path.exists(done):
        import sft
        dist.print0(f"no classroom SFT result in {args.sft_out}: running `python sft.py --out {args.sft_out}` first")
        sft.main(["--out", args.sft_out, "--seed", str(args.seed)])  # writes done.json when finished
    return ckpt


# ----------------------------------------------------------------------------------------------------
# Main: the PPO loop
# ----------------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    rank, world, device = dist.init()
    import reward as RW
    import verify
    from data import format_prompt
    from eval import evaluate
    from sample import decode_copy, encode_prompt, generate

    dtype = dist.compute_dtype(args.dtype, device)
    start = ensure_start(args)
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump({**vars(args), "start": start}, f, indent=2)
    torch.manual_seed(args.seed)

    # ---- models: policy and critic train (fp32 master weights), the reference is frozen ----
    policy, tok = M.load(start, dtype=torch.float32, device=device)
    critic, _ = M.load(start, dtype=torch.float32, device=device, value_head=True)  # policy weights + value head
    ref, _ = M.load(start, dtype=dtype, device=device)
    ref.requires_grad_(False)
    policy.gradient_checkpointing = critic.gradient_checkpointing = args.grad_ckpt
    policy, critic, ref = dist.shard(policy, dtype), dist.shard(critic, dtype), dist.shard(ref, dtype)
    actor_opt = torch.optim.AdamW(policy.parameters(), lr=args.actor_lr, betas=(0.9, 0.95), weight_decay=0.0)
    critic_opt = torch.optim.AdamW(critic.parameters(), lr=args.critic_lr, betas=(0.9, 0.95), weight_decay=0.0)
    try:
        r0c, rLc, r0w, rLw, exc = (float(v) for v in args.cosine.split(","))
    except ValueError:
        raise ValueError(f"--cosine {args.cosine!r}: expected five comma-separated numbers") from None
    rcfg = RW.RewardConfig(kind=args.reward, max_len=args.max_new_tokens, r0_correct=r0c, rL_correct=rLc,
                           r0_wrong=r0w, rL_wrong=rLw, exceed_reward=exc, rep_n=args.rep_n,
                           rep_penalty=args.rep_penalty, gamma=args.gamma, rep_gamma=args.rep_gamma)

    # ---- data: prompts in a seeded order per epoch; the data position is the iteration number ----
    rows = load_prompt_rows(args.prompts, 5000, args.seed, "train")
    prompts = [format_prompt(r["problem"], tok, r.get("options")) for r in rows]
    keep = [i for i, p in enumerate(prompts) if len(encode_prompt(tok, p)) <= args.max_prompt_len]
    rows, prompts = [rows[i] for i in keep], [prompts[i] for i in keep]
    eval_rows = load_prompt_rows(args.eval_data, args.n_eval, args.seed + 1, "test")[:args.n_eval]
    if args.rollout_batch % world:
        raise ValueError(f"--rollout-batch {args.rollout_batch} must be divisible by the number of ranks ({world})")

    def prompt_indices(it):
        per_epoch = len(rows) // args.rollout_batch
        epoch, k = divmod(it, per_epoch)
        order = list(range(len(rows)))
        random.Random(args.seed * 7919 + epoch).shuffle(order)
        return order[k * args.rollout_batch:(k + 1) * args.rollout_batch]

    it = 0
    ckpt = os.path.join(args.out, "checkpoint")
    models, opts = {"policy": policy, "critic": critic}, {"policy": actor_opt, "critic": critic_opt}
    if os.path.exists(os.path.join(ckpt, "trainer_state.pt")):
        it = dist.load_checkpoint(ckpt, models, opts)["iteration"]
        dist.print0(f"resumed from {ckpt} at iteration {it}")
    metrics_f = open(os.path.join(args.out, "metrics.jsonl"), "a") if rank == 0 else None
    log = lambda row: metrics_f and (metrics_f.write(json.dumps(row) + "\n"), metrics_f.flush())  # noqa: E731
    warm = max(1, int(args.warmup * args.iterations))
    sampler, stale = None, True

    def current_sampler():
        """The policy itself (one process, fp32) or a plain decode copy, re-gathered only after an update."""
        nonlocal sampler, stale
        if stale:
            sampler = decode_copy(policy, dist.full_state_dict(policy, rank0_only=False), sampler, dtype) \
                if (world > 1 or dtype != torch.float32) else policy
            stale = False
        return sampler

    def held_out(step):
        ev, _ = evaluate(current_sampler(), tok, eval_rows, temperature=0.7, top_p=0.95,
                         max_new_tokens=args.max_new_tokens, seed=10_000 + step)
        log({"iteration": step, **{f"eval/{k}": v for k, v in ev.items()}})
        return ev

    first_eval = held_out(it) if it == 0 else None
    if first_eval:
        dist.print0(f"iteration 0: held-out accuracy {first_eval['accuracy']:.3f} (n={first_eval['n']})")
    bar = None
    if rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=args.iterations, initial=it, desc="ppo", dynamic_ncols=True)

    while it < args.iterations:
        t0 = time.time()
        # ---- 1. rollout: this rank's prompts, n samples each, from a plain copy of the current policy ----
        it_prompts = prompt_indices(it)  # global, the same list on every rank
        positions = list(range(rank, len(it_prompts), world))  # this rank's share
        idx = [it_prompts[p] for p in positions]
        outs = generate(current_sampler(), tok, [prompts[i] for i in idx], n=args.n_samples,
                        temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                        seed=args.seed + 100_003 * it,
                        batch_size=max(64, len(idx) * args.n_samples), keys=positions)
        samples = [(i, s) for i, group in zip(idx, outs) for s in group]
        # global id of each local sample (position * n + k): minibatches are drawn from global ids, so that one
        # process and N processes update on the same samples
        local_of = {p * args.n_samples + k: j for j, (p, k) in
                    enumerate((p, k) for p in positions for k in range(args.n_samples))}
        t1 = time.time()

        # ---- 2. reward: verifier -> correctness; reward.py -> (B, R, K) per-token rewards and their gammas ----
        texts = [s.text for _, s in samples]
        grades = verify.grade_batch(texts, [rows[i]["answer"] for i, _ in samples],
                                    [rows[i].get("kind", "math") for i, _ in samples])
        correct = [bool(g.correct) for g in grades]
        lengths = [len(s.token_ids) for _, s in samples]
        truncated = [s.finish_reason == "length" for _, s in samples]
        prompt_ids = [encode_prompt(tok, prompts[i]) for i, _ in samples]
        ids, attn, P = build_sequences(prompt_ids, [s.token_ids for _, s in samples], tok.pad_token_id)
        R = ids.shape[1] - P
        rewards, gammas, names = RW.reward_tensor(correct, lengths, ids[:, P:], truncated, rcfg, texts=texts)
        mask = response_mask(lengths, R)  # (B, R)
        t2 = time.time()

        # ---- 3. old log-probs, reference log-probs, values (no grad), in token-budget micro-batches ----
        order = sorted(range(len(samples)), key=lambda b: lengths[b])
        mbs = micro_batches([P + lengths[b] for b in order], args.micro_tokens, args.micro_batch)
        old_lp, ref_lp, old_v, ent = (torch.zeros(len(samples), R) for _ in range(4))
        policy.eval(), critic.eval()
        with torch.no_grad():
            for j in range(dist.max_int(len(mbs))):
                mb = [order[b] for b in mbs[j]] if j < len(mbs) else [order[0]]  # extra: a dummy forward
                x, a = ids[mb].to(device), attn[mb].to(device)
                lp, e = forward_response(policy, x, a, P, R, args.temperature, dtype=dtype)
                rlp, _ = forward_response(ref, x, a, P, R, args.temperature, dtype=dtype)
                v = forward_response(critic, x, a, P, R, args.temperature, values=True, dtype=dtype)
                if j < len(mbs):
                    old_lp[mb], ent[mb], ref_lp[mb], old_v[mb] = lp.float().cpu(), e.float().cpu(), rlp.float().cpu(), v.cpu()
        kl = kl_penalty(old_lp, ref_lp, args.kl_estimator) * mask  # (B, R)
        rewards[..., 0] -= args.kl_coef * kl  # KL folded into the reward (Ouyang et al. 2022, Eq. 2)
        t3 = time.time()

        # ---- 4. advantages: multi-gamma returns (lambda = 1) or GAE; whitened across ranks ----
        adv, returns = multi_gamma_advantages(rewards, old_v, mask, gammas, args.lam)
        adv = masked_whiten(adv, mask)

        # ---- 5. update: epochs x shuffled minibatches x micro-batches, actor and critic ----
        policy.train(), critic.train()
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_frac_sum": 0.0, "approx_kl_sum": 0.0, "tokens": 0.0,
                 "grad_norm_actor": 0.0, "grad_norm_critic": 0.0}
        gen = random.Random(args.seed * 31 + it)
        n_updates = 0
        for epoch in range(args.ppo_epochs):
            perm = list(range(len(it_prompts) * args.n_samples))  # global sample ids
            gen.shuffle(perm)
            for s in range(0, len(perm), args.train_batch):
                batch = sorted((local_of[g] for g in perm[s:s + args.train_batch] if g in local_of),
                               key=lambda b: lengths[b])
                n_tok = dist.sum_tensor(mask[batch].sum().reshape(1).double()).item()  # all ranks' tokens
                mbs = micro_batches([P + lengths[b] for b in batch], args.micro_tokens, args.micro_batch)
                lr_a = lr_at(it, args.iterations, args.actor_lr, warm, args.min_lr_ratio)
                lr_c = lr_at(it, args.iterations, args.critic_lr, warm, args.min_lr_ratio)
                for g in actor_opt.param_groups:
                    g["lr"] = lr_a
                for g in critic_opt.param_groups:
                    g["lr"] = lr_c
                for j in range(dist.max_int(len(mbs))):
                    real = j < len(mbs)
                    mb = [batch[b] for b in mbs[j]] if real else [0]
                    x, a = ids[mb].to(device), attn[mb].to(device)
                    m = mask[mb].to(device) * float(real)  # a dummy micro-batch contributes zero
                    lp, _ = forward_response(policy, x, a, P, R, args.temperature, dtype=dtype)
                    pl, pm = policy_loss(lp.float(), old_lp[mb].to(device), adv[mb].to(device), m, args.clip, n_tok)
                    v = forward_response(critic, x, a, P, R, args.temperature, values=True, dtype=dtype)
                    vl, _ = value_loss(v, old_v[mb].to(device), returns[mb].to(device), m, args.value_clip, n_tok)
                    bad = torch.tensor([0.0 if (torch.isfinite(pl) and torch.isfinite(vl)) else 1.0])
                    if dist.sum_tensor(bad).item() > 0:
                        raise FloatingPointError(
                            f"iteration {it}: non-finite loss (policy {pl.item()}, value {vl.item()}); stopping "
                            f"before the optimizer step, weights unchanged (last checkpoint: {ckpt})")
                    ((pl + vl) * world).backward()  # FSDP averages gradients over ranks; the sum is wanted
                    stats["policy_loss"] += pl.item() * world  # dist.mean below turns this into the global sum
                    stats["value_loss"] += vl.item() * world
                    stats["clip_frac_sum"] += pm["clip_frac_sum"]
                    stats["approx_kl_sum"] += pm["approx_kl_sum"]
                    stats["tokens"] += float(m.sum())
                gn_a = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
                gn_c = torch.nn.utils.clip_grad_norm_(critic.parameters(), args.grad_clip)
                if not (torch.isfinite(gn_a) and torch.isfinite(gn_c)):
                    raise FloatingPointError(f"iteration {it}: non-finite gradient norm (actor {gn_a}, critic {gn_c}); "
                                             f"stopping before the optimizer step, weights unchanged")
                stats["grad_norm_actor"] += float(gn_a)
                stats["grad_norm_critic"] += float(gn_c)
                actor_opt.step(), critic_opt.step()
                actor_opt.zero_grad(set_to_none=True), critic_opt.zero_grad(set_to_none=True)
                n_updates += 1
        it += 1
        stale = True  # the policy changed: the next rollout or evaluation re-gathers its weights
        t4 = time.time()

        # ---- 6. log health signals (averaged over ranks) ----
        n_resp = mask.sum().clamp(min=1)
        seq_reward = rewards.sum(dim=(1, 2))
        local = {
            "reward": float(seq_reward.mean()), "accuracy": sum(correct) / len(correct),
            "response_length": sum(lengths) / len(lengths), "truncation_rate": sum(truncated) / len(truncated),
            "kl": float(kl.sum() / n_resp), "entropy": float((ent * mask).sum() / n_resp),
            "clip_frac": stats["clip_frac_sum"] / max(stats["tokens"], 1),
            "approx_kl": stats["approx_kl_sum"] / max(stats["tokens"], 1),
            "policy_loss": stats["policy_loss"] / max(n_updates, 1), "value_loss": stats["value_loss"] / max(n_updates, 1),
            "explained_variance": explained_variance(old_v, returns, mask),
            "grad_norm_actor": stats["grad_norm_actor"] / max(n_updates, 1),  # mean over the optimizer steps
            "grad_norm_critic": stats["grad_norm_critic"] / max(n_updates, 1),
            "tokens_per_s": world * sum(lengths) / max(t1 - t0, 1e-9),  # sampling, all ranks (mean x world)
        }
        row = {"iteration": it, **dist.mean(local), "response_length_max": dist.max_int(max(lengths)),  # all ranks
               "actor_lr": lr_a,
               "time/sample": t1 - t0, "time/score": t2 - t1, "time/ref_critic": t3 - t2, "time/train": t4 - t3}
        log(row)
        if bar:
            bar.update(1)
            bar.set_postfix(acc=f"{row['accuracy']:.2f}", len=f"{row['response_length']:.0f}",
                            kl=f"{row['kl']:.3f}", refresh=False)
        if args.kill_at_step and it == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash, for the resume test
        if it % args.eval_every == 0 or it == args.iterations:
            ev = held_out(it)
            dist.print0(f"\niteration {it}: held-out accuracy {ev['accuracy']:.3f}, length {ev['mean_length']:.0f}")
        if it % args.save_every == 0 or it == args.iterations:
            dist.save_checkpoint(ckpt, models, opts, tok, {"iteration": it})
    if bar:
        bar.close()

    # ---- summary: held-out accuracy before and after, from the metrics log (spans resumed runs) ----
    from eval import read_curves
    held = read_curves(args.out)[1] if rank == 0 else []  # (iteration, accuracy, length)
    if rank == 0:  # marks the run finished (eval.py --replicate reuses finished runs)
        with open(os.path.join(args.out, "done.json"), "w") as f:
            json.dump({"iterations": it, "held_out": held}, f)
    if held:
        print(f"held-out accuracy {held[0][1]:.2f} -> {held[-1][1]:.2f} (n={len(eval_rows)})", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    finally:
        dist.cleanup()
