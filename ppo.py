"""PPO with GAE for long chain-of-thought RL: the paper's RL stage, written out by hand.

    python ppo.py                                   # tiny model after the classroom SFT, on a CPU (~9 min)
    python ppo.py --reward classic                  # the 0/1 reward instead of the cosine one
    python ppo.py --advantage reinforce             # REINFORCE: no critic
    torchrun --standalone --nproc_per_node 8 ppo.py --model qwen-math-7b   # the paper's recipe (GPUs)
    torchrun --standalone --nproc_per_node 8 ppo.py --preset 4.3 --cosine 0,10,0,0,-10 --model ...   # Sec. 4.3 A

README.md's "The paper's experiments" has one command per experiment of the paper.

One iteration, top to bottom in `main`:
  1. rollout    sample n responses per prompt from the current policy (sample.py), log-probs at temperature
  2. reward     correctness from verify.py's rules or an LLM judge (--verifier judge: judge.py, greedy, on each
                rank's share); reward.py: K reward types (cosine or classic; repetition penalty), each with its gamma
  3. score      per-token log-probs of the policy (old) and the frozen reference, values of the critic (GAE), each
                micro-batch at its own width (rows laid out prompt + response from column 0, right-padded);
                rewards clipped to [-10, 10], then the KL penalty -beta * KL / K added to each of the K types
  4. advantage  GAE; with several reward types and lambda = 1 each type's return is discounted with its own
                gamma and summed (the paper's multi-gamma returns), advantage = return - value. --advantage
                reinforce: no critic at all, the advantage is that return itself. Whitened over the whole rollout
                across ranks
  5. update     epochs of shuffled minibatches: clipped policy ratio, clipped value loss, each averaged over a
                response's own tokens then over responses (--loss-agg), gradient clipping, warmup + cosine
                schedules stepped per optimizer step, gradient accumulation over token-budget micro-batches
  6. log        reward (the task's, without KL) and the KL term, accuracy, lengths, truncation, KL, clip
                fraction, approx KL, explained variance, entropy, value loss, sampler/trainer log-prob gap,
                tokens/s, time split, the frequency of the paper's Sec. 6 reflection keywords (keywords/wait, ...;
                `eval.py --plot OUT` draws them); periodic held-out evaluation; checkpoint
Each piece of math is a pure function below `main`'s helpers, tested in tests/test_ppo.py.

Loss aggregation (--loss-agg). seq-mean-token-mean (the authors', both presets): each response's loss is the
mean over its own tokens, then responses are averaged, so every response counts the same and a token of a
short response weighs more than one of a long response (28x between 500 and 14K tokens). token-mean: the sum
over all tokens / their number, so every token counts the same and long responses dominate the gradient.
Both shape how length moves under RL, which is what the paper studies.

Defaults: a model alias other than `tiny` takes the paper's recipe (PAPER below, the authors' Sec. 4.2 script
line by line: 512 prompts x 16 samples, train batch 512, 2 epochs, 112 rollouts, actor lr 5e-7, critic lr 9e-6,
KL 0.01 (k1), cosine reward +2/+1 correct, -10/0 wrong, -10 exceed (margin 16), repetition n=40 at -0.05,
gammas (1, 0.99), lambda 1, prompts <= 2048 tokens, up to 14,336 generated tokens, rollouts at temperature 1.0
and top-p 1.0, MATH train prompts). Evaluation samples at the paper's 0.7 / 0.95. `tiny` takes CLASSROOM
(sized for a CPU). --preset names another set: a section of the paper (4.1, 4.3, 4.4, 4.6, 5.2, below PAPER:
what that section's launch script changes). Any flag overrides a preset. --model qwen-math-7b also takes a raised
RoPE theta (model.LONG_CONTEXT; --rope-theta). A run restarted with the same --out resumes exactly.
`python ppo.py --model qwen-math-7b --plan --gpus 8 --gpu-memory 80` prints the memory plan (plan.py).

Departures from the authors' code (eddycmu/demystify-long-cot, an OpenRLHF fork):
  * One sampler and one training loop in one process per GPU (theirs: vLLM engines and Ray actors). Old
    log-probs are recomputed by the training forward (not taken from the sampler), as OpenRLHF does.
  * Micro-batches are packed by a token budget (theirs: 1 sequence); with seq-mean-token-mean this changes
    memory and speed only, not the loss.
  * A truncated response keeps its last sampled token and gets the exceed reward there; theirs overwrites
    that token with EOS (experience_maker.py:829-830) and trains the model to emit it.
  * Prompts longer than --max-prompt-len are dropped; theirs truncates them (experience_maker.py:164-179).
  * The verifier grades the response; theirs grades the decoded prompt + response (experience_maker.py:598).
  * The critic's value head starts at zero with a bias; theirs N(0, 1/(hidden+1)), no bias.
  * The per-episode prompt order and the 3% warmup are ours in detail (their dataloader drops the last
    incomplete batch of each episode: 14 rollouts of 512 from MATH's 7,500 prompts, as our 112 iterations).
  * CLASSROOM: rollouts at temperature 0.7 (the 0.8M-parameter model is too noisy at 1.0), exceed margin 0.
  * The rule-based runs of Sec. 5.2 grade with their `symeval` score function (S52 rule_* scripts:65), the others
    with `hendrycks` (CLI:370); every rule-based run here grades with verify.py. The judge: judge.py's Departures.
  * qwen-math-7b's RoPE theta (40,000 with 16,384 positions) is not the paper's value, which could not be read here
    (model.LONG_CONTEXT says how it was chosen).
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
from sft import lr_at  # linear warmup, then cosine decay to peak * min_ratio

# The paper's recipe, as the authors ran it: the Sec. 4.2 run "active scaling of CoT length" (cosine reward +
# repetition penalty), eddycmu/demystify-long-cot @ 29fddcc, read on 2026-11-30. S42 below is its launch script
# openrlhf/scripts/section_4__impact_of_reward_design_on_long_cot/section_4.2__active_scaling_of_cot_length__
# cosine_repetition_penalty.sh; CLI is openrlhf/cli/train_ppo_ray.py (defaults the script does not override).
PAPER = dict(
    rollout_batch=512,  # S42:74 --rollout_batch_size 512 (prompts per rollout)
    n_samples=16,  # S42:75 --n_samples_per_prompt 16 (Sec. 4.1 and 4.4 runs use 8 with 1 epoch)
    train_batch=512,  # S42:72 --train_batch_size 512 (sequences per optimizer step)
    ppo_epochs=2,  # S42:77 --max_epochs 2
    iterations=112,  # S42:78 --num_episodes 8 x (7,500 MATH train prompts // 512 = 14 rollouts per episode)
    actor_lr=5e-7,  # S42:85 --actor_learning_rate
    critic_lr=9e-6,  # S42:86 --critic_learning_rate
    kl_coef=0.01,  # S42:87 --init_kl_coef, fixed (CLI:334 no --kl_target)
    kl_estimator="k1",  # CLI:337-339 --use_kl_estimator_k3 off: the log-ratio
    lam=1.0,  # S42:79 --lambd 1
    gamma=1.0, rep_gamma=0.99,  # S42:80 --gamma 1,0.99 (cosine reward, then repetition: --remote_rm_url order, S42:58)
    reward="cosine", cosine="2,1,-10,0,-10",  # S42:62-65 correct 2 -> 1, wrong -10 -> 0; S42:59 exceed -10
    exceed_margin=16,  # openrlhf/reward/common.py:9 MAX_LEN_MARGIN = 16 (gen_len + 16 >= max_len exceeds)
    rep_n=40, rep_penalty=-0.05,  # S42:60-61 dense repetition penalty: 40-token n-grams, -0.05 per token
    max_prompt_len=2048,  # S42:81 --prompt_max_len
    max_new_tokens=14336,  # S42:82 --generate_max_len (also the cosine reward's T)
    temperature=1.0, top_p=1.0,  # CLI:325, CLI:324 defaults; no RL script overrides them; log-probs at 1.0
    warmup=0.03,  # openrlhf/trainer/ray/ppo_actor.py:281 ceil(0.03 x optimizer steps), stepped per step
    min_lr_ratio=0.1,  # ppo_actor.py:283 cosine_with_min_lr, min_lr = 0.1 x peak
    clip=0.2, value_clip=0.2,  # CLI:317-318 --eps_clip, --value_clip defaults
    grad_clip=1.0,  # CLI:314 --max_norm
    reward_clip=10.0,  # CLI:347 --reward_clip_range (-10, 10), applied before the KL term (models/utils.py:50)
    loss_agg="seq-mean-token-mean",  # S42:71 --micro_train_batch_size 1 + PolicyLoss/ValueLoss masked_mean per row
    prompts="math_train", eval_data="math500", n_eval=500, eval_every=8,  # ours: held-out MATH-500 each episode
    micro_tokens=16384, micro_batch=4,  # ours: memory only (with seq-mean-token-mean the loss does not depend on it)
    grad_ckpt=True,  # S42:95 --gradient_checkpointing; without it one 16K-token micro-batch needs ~245 GiB (plan.py)
)
CLASSROOM = dict(  # ours: the tiny model on the classroom task, accuracy rises within minutes on a CPU
    actor_lr=2e-4, critic_lr=1e-3, kl_coef=0.01, kl_estimator="k1", reward="cosine", cosine="2,1,-10,0,-10",
    exceed_margin=0, rep_n=40, rep_penalty=-0.05, gamma=1.0, rep_gamma=0.99, lam=1.0, max_prompt_len=64,
    max_new_tokens=400, prompts="classroom", rollout_batch=32, n_samples=4, train_batch=64, micro_tokens=16384,
    ppo_epochs=2, iterations=20, warmup=0.05, min_lr_ratio=0.1, eval_every=5, n_eval=200, eval_data="classroom",
    temperature=0.7, top_p=1.0,  # 0.7: the 0.8M-parameter model's samples at 1.0 are mostly noise
    micro_batch=8,  # rows of similar length per forward: less padding than 64 (replicate.py's long-start runs,
    # one thread: train 13.2 -> 8.2 s and ref/critic 2.8 -> 2.0 s per iteration; 16: 9.4, 4: 7.5); loss unchanged
    clip=0.2, grad_clip=1.0, reward_clip=10.0, loss_agg="seq-mean-token-mean", grad_ckpt=False,
    value_clip=5.0,  # returns span ~12 here and the head starts at 0: a 0.2 clip would freeze the critic
)
# The paper's other RL runs: the PAPER recipe with what each launch script changes (same repository and commit;
# script names shortened: S41 = section_4.1__cot_length_stability__llama_classic.sh (its qwen_classic twin sets the
# same values), S43 = section_4.3__cosine_hyperparameters__reward_A.sh (B, C: only the cosine values differ),
# S44 = section_4.4__context_window_size__4k.sh (8k, 16k: only --generate_max_len), S46 =
# section_4.6__optimal_discount_factors__gammas_100_99.sh (others: only --gamma), S52 =
# section_5.2__scaling_up_rl_with_noisy_verifiable_data__judge_filtered.sh (the rule_* twins: only the verifier and
# the data). README.md "The paper's experiments" gives each run's command; tests/test_experiments.py checks every
# command's settings against its script, field by field.
SEC41 = dict(  # Sec. 4.1, CoT length stability: the classic 0/1 reward from a long-CoT SFT model
    PAPER,
    reward="classic",  # S41:57-60 --remote_rm_url math_rule, correct 1, wrong 0, exceed 0 (RewardConfig.classic_*)
    rep_penalty=0.0,  # S41:57 no math_rule_repetition_dense: one reward type
    gamma=1.0,  # S41:76 --gamma 1
    n_samples=8,  # S41:71 --n_samples_per_prompt 8
    ppo_epochs=1,  # S41:73 --max_epochs 1
    critic_lr=4.5e-6,  # S41:82 --critic_learning_rate 4.5e-6
)  # S41:74 --num_episodes 8 on MATH's 7,500 prompts: 112 rollouts, as PAPER
SEC43 = dict(  # Sec. 4.3, cosine reward hyper-parameters: reward A, B or C through --cosine
    PAPER,
    n_samples=4,  # S43:75 --n_samples_per_prompt 4
    ppo_epochs=1,  # S43:77 --max_epochs 1
    iterations=56,  # S43:78 --num_episodes 4 x 14 rollouts of 512 MATH prompts
)
SEC44 = dict(  # Sec. 4.4, context window size: 4K / 8K / 16K = 2,048 prompt tokens + --max-new-tokens
    PAPER,
    n_samples=8,  # S44:75 --n_samples_per_prompt 8
    ppo_epochs=1,  # S44:77 --max_epochs 1
)  # S44:78 --num_episodes 8: 112 rollouts, as PAPER; S44:82 --generate_max_len 2048 (8k: 6144, 16k: 14336)
SEC46 = dict(  # Sec. 4.6, discount factors: --gamma (correctness) and --rep-gamma (repetition penalty)
    PAPER,
    n_samples=4,  # S46:74 --n_samples_per_prompt 4
    ppo_epochs=1,  # S46:76 --max_epochs 1
    iterations=56,  # S46:77 --num_episodes 4 x 14 rollouts
)
SEC52 = dict(  # Sec. 5.2, RL on noisy web data (WebInstruct) graded by the LLM judge (judge.py) or by rules
    PAPER,
    verifier="judge",  # S52:65 --math_rule_common_score_fn judge; S52:66 --judge_pretrain (path redacted)
    prompts="webinstruct.jsonl",  # S52:91 prompt data (redacted): WebInstruct problems with a short-form answer
    # (S52:93 --answer_key extracted_answer); not shipped: a JSONL of problem/answer rows you build
    n_samples=4,  # S52:78 --n_samples_per_prompt 4
    ppo_epochs=1,  # S52:80 --max_epochs 1
    iterations=58,  # S52:79 --max_samples 30000, S52:81 --num_episodes 1: 30,000 // 512 rollouts
)
PRESETS = {"paper": PAPER, "classroom": CLASSROOM, "4.1": SEC41, "4.3": SEC43, "4.4": SEC44, "4.6": SEC46,
           "5.2": SEC52}
COMMON = dict(  # settings no preset changes unless it names them
    verifier="rule",  # verify.py; S42:58 the rule-based math reward (their score_fn default: CLI:370)
    advantage="gae",  # CLI:350-356 --advantage_estimator, default gae
)
LOSS_AGG = ("seq-mean-token-mean", "token-mean")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="PPO with GAE for long-CoT RL")
    a = ap.add_argument
    a("--model", default="tiny", help="policy start: alias, HF dir, hub id; 'tiny' = classroom SFT result")
    a("--sft-out", default="runs/sft", help="tiny only: SFT run reused (or made) as the start point, or one of "
      "its checkpoint-N folders")
    a("--out", default="runs/ppo", help="run directory: args, metrics, checkpoint (resumed if present)")
    a("--preset", choices=list(PRESETS), help="the settings every flag not given takes: paper (Sec. 4.2's recipe), "
      "a section of the paper (4.1, 4.3, 4.4, 4.6, 5.2: README's experiments table) or classroom [paper; tiny: "
      "classroom]")
    a("--verifier", choices=["rule", "judge"], help="grade answers with verify.py's rules or an LLM judge [rule]")
    a("--judge-model", help="--verifier judge: the judge (alias, HF dir, hub id), a full copy on every rank")
    a("--judge-max-new-tokens", type=int, default=1024, help="--verifier judge: the judge's budget for its "
      "reasoning and verdict (the authors' judge.py:43)")
    a("--advantage", choices=["gae", "reinforce"], help="gae: PPO with a critic; reinforce: no critic, the "
      "discounted returns whitened over the rollout [gae]")
    a("--rope-theta", type=float, help="RoPE theta of policy, reference and critic, with positions raised to "
      "prompt + new tokens; 0: the checkpoint's own [qwen-math-7b: model.LONG_CONTEXT; others: the checkpoint's]")
    a("--prompts", help="'classroom', a benchmark name (data.py) or a JSONL of problems [math_train]")
    a("--eval-data", help="held-out set, as --prompts [math500]")
    a("--n-eval", type=int, help="held-out problems per evaluation [500]")
    a("--eval-every", type=int, help="iterations between evaluations [8]")
    a("--iterations", type=int, help="PPO iterations (rollouts) [112]")
    a("--rollout-batch", type=int, help="prompts per iteration, all ranks [512]")
    a("--n-samples", type=int, help="responses per prompt [16]")
    a("--temperature", type=float, help="rollout temperature; log-probs are taken at it [1.0]")
    a("--top-p", type=float, help="rollout nucleus; log-probs stay those of the full tempered distribution [1.0]")
    a("--max-prompt-len", type=int, help="longer prompts are dropped [2048]")
    a("--max-new-tokens", type=int, help="generation limit T of the cosine reward [14336]")
    a("--reward", choices=["cosine", "classic"], help="length-scaling cosine reward or 0/1 [cosine]")
    a("--cosine", help="cosine reward: r0_correct,rL_correct,r0_wrong,rL_wrong,exceed [2,1,-10,0,-10]")
    a("--exceed-margin", type=int, help="length >= max-new-tokens - this gets the exceed reward [16]")
    a("--reward-clip", type=float, help="each reward type clipped to [-c, c] before the KL term [10]")
    a("--rep-n", type=int, help="repetition n-gram size [40]")
    a("--rep-penalty", type=float, help="per repeated token, 0 disables [-0.05]")
    a("--gamma", type=float, help="discount of the correctness reward [1.0]")
    a("--rep-gamma", type=float, help="discount of the repetition penalty [0.99]")
    a("--lam", type=float, help="GAE lambda [1.0]")
    a("--kl-coef", type=float, help="beta of the per-token KL penalty [0.01]")
    a("--kl-estimator", choices=["k1", "k3"], help="log-ratio (k1) or Schulman's k3 [k1]")
    a("--actor-lr", type=float, help="policy peak lr [5e-7]")
    a("--critic-lr", type=float, help="critic peak lr [9e-6]")
    a("--min-lr-ratio", type=float, help="cosine schedules decay to lr * this [0.1]")
    a("--warmup", type=float, help="share of all optimizer steps spent in linear warmup [0.03]")
    a("--train-batch", type=int, help="samples per optimizer step (minibatch), all ranks [512]")
    a("--micro-tokens", type=int, help="padded tokens per forward/backward (memory) [16384]")
    a("--micro-batch", type=int, help="at most this many sequences per forward [4]")
    a("--kv-slots", type=int, default=0, help="sampler KV-cache slots (0: as many as fit in free GPU memory; "
      "continuous batching queues the rest)")
    a("--ppo-epochs", type=int, help="passes over each rollout [2]")
    a("--loss-agg", choices=LOSS_AGG, help="seq-mean-token-mean: every response weighs the same (the authors'); "
      "token-mean: every token does, so long responses weigh more [seq-mean-token-mean]")
    a("--clip", type=float, help="policy ratio clip epsilon [0.2]")
    a("--value-clip", type=float, help="value clip around the old values [0.2]")
    a("--grad-clip", type=float, help="max gradient norm, actor and critic [1.0]")
    a("--seed", type=int, default=0, help="prompt order and sampling")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on GPU, fp32 on CPU")
    a("--grad-ckpt", action=argparse.BooleanOptionalAction, help="gradient checkpointing for policy and critic "
      "(--no-grad-ckpt: off) [on]")
    a("--save-every", type=int, default=10, help="iterations between checkpoints")
    a("--keep-checkpoints", type=int, default=1, help="complete checkpoints kept (older ones are deleted)")
    a("--dist-timeout", type=float, default=120, help="minutes a rank waits for the others (NCCL's default 10 "
      "kills ranks waiting for a long generation or for rank 0 writing a checkpoint)")
    a("--kill-at-step", type=int, default=0, help="testing: SIGKILL this process after that iteration")
    a("--allow-changed-args", action="store_true", help="resume a run in --out although its saved arguments "
      "differ (the change is recorded in args.json); without it such a resume is refused")
    a("--plan", action="store_true", help="memory plan (plan.py): peak GPU memory per phase of one iteration, "
      "on a CPU with fake tensors; exits 1 when a phase does not fit")
    a("--gpus", type=int, default=8, help="--plan: GPUs (ranks) to plan for")
    a("--gpu-memory", type=float, default=80, help="--plan: memory per GPU in GB (10^9 bytes)")
    a("--plan-out", help="--plan: also write the table as JSON to this path")
    a("--measure", action="store_true", help="--plan on GPUs (untested on CPU): run the phases for real and print "
      "torch.cuda.max_memory_allocated per phase next to the plan")
    args = ap.parse_args(argv)
    args.preset = args.preset or ("classroom" if args.model == "tiny" else "paper")
    for k, v in {**COMMON, **PRESETS[args.preset]}.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.rope_theta is None:  # the start model's context extension, if it needs one (model.LONG_CONTEXT)
        args.rope_theta = M.LONG_CONTEXT.get(args.model, {}).get("rope_theta")
    args.rope_theta = args.rope_theta or None  # 0: the checkpoint's own
    return args


# ----------------------------------------------------------------------------------------------------
# The math: pure functions on (B, T) response-aligned tensors; mask = 1 on generated tokens
# ----------------------------------------------------------------------------------------------------
def response_mask(lengths, T):
    """(B, T) 1 for the generated tokens (EOS included when the row stopped at EOS; a truncated row has no
    EOS, and all its max_new_tokens are actions)."""
    return (torch.arange(T)[None, :] < torch.as_tensor(lengths)[:, None]).float()


def kl_penalty(logp, ref_logp, mask, kind="k1"):
    """Per-token KL(pi || ref) estimate from samples of pi (Schulman 2020, "Approximating KL divergence"),
    0 off the mask. The mask is applied before exp: a padded entry's log-ratio can be anything (exp -> inf,
    and inf x 0 = NaN would leak into the real tokens' sums)."""
    log_ratio = (logp - ref_logp) * mask  # (B, T)
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.exp(-log_ratio) - 1 + log_ratio  # >= 0, unbiased, lower variance
    raise ValueError(f"unknown KL estimator {kind!r}")


def shape_rewards(rewards, kl, kl_coef, clip):
    """The per-token rewards PPO maximises. rewards (B, T, K) one channel per reward type, kl (B, T) -> (B, T, K).
    Each channel is clipped to [-clip, clip], then the KL penalty -beta * KL (Ouyang et al. 2022, Eq. 2) is split
    evenly over the K channels, as the authors do (models/utils.py:50-51 clip, :70-77 kl_reward / K added to
    every type): with gammas (1, 0.99) half of each token's KL is discounted with each gamma."""
    K = rewards.shape[-1]
    return rewards.clamp(-clip, clip) - kl_coef * kl[..., None] / K


def aggregate(x, mask, how, denom):
    """Per-token losses x (B, T) -> a scalar, as one share of a minibatch spread over micro-batches and ranks.
    token-mean: sum over tokens / denom (= the minibatch's tokens, all ranks). Every token weighs the same, so
      a 14K-token response pulls 28x harder than a 500-token one.
    seq-mean-token-mean (the authors': micro-batch 1, masked_mean per row, DeepSpeed's mean over the batch):
      each row's mean over its own tokens, summed / denom (= the minibatch's sequences, all ranks). Every
      response weighs the same, so one token of a 500-token response weighs 28x one of a 14K-token response.
    A row with no tokens (a dummy micro-batch) contributes 0."""
    if how == "token-mean":
        return (x * mask).sum() / denom
    if how == "seq-mean-token-mean":
        return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / denom  # (B,) row means, summed
    raise ValueError(f"unknown loss aggregation {how!r} (expected one of {LOSS_AGG})")


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


def reinforce_returns(rewards, mask, gammas):
    """REINFORCE's return, the authors' --advantage_estimator reinforce (experience_maker.py:222-228, :434-497):
    each reward type discounted with its own gamma within the row's actions, then the types summed; no critic,
    no baseline here (the whitening over the rollout, ppo_trainer.py:306, subtracts the mean). rewards (B, T, K),
    mask (B, T) -> (B, T)."""
    return sum(discounted_returns(rewards[..., k], mask, g) for k, g in enumerate(gammas))  # (B, T)


def masked_whiten(x, mask, eps=1e-8):
    """(x - mean) / std over the masked entries of the whole rollout, on all ranks."""
    xd, md = x.double(), mask.double()  # float64 sums: in fp32, E[x^2] - E[x]^2 cancels when |mean| >> std
    s = dist.sum_tensor(torch.stack([(xd * md).sum(), (xd * xd * md).sum(), md.sum()]))
    mean = s[0] / s[2]
    var = s[1] / s[2] - mean ** 2
    return ((xd - mean) * torch.rsqrt(var.clamp(min=0) + eps)).to(x.dtype) * mask


def policy_loss(logp, old_logp, adv, mask, clip, how, denom):
    """PPO clipped surrogate (Schulman et al. 2017, Eq. 7), aggregated over tokens by `how` (see aggregate).
    (B, T) inputs. Returns (loss, metrics) with clip fraction and approx KL (k3 of old vs new), summed."""
    log_ratio = (logp - old_logp) * mask  # masked before exp: padded entries can hold anything
    ratio = torch.exp(log_ratio)
    surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)  # L^CLIP
    loss = -aggregate(surr, mask, how, denom)
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip).float()
        approx_kl = (ratio - 1) - log_ratio
        m = {"clip_frac_sum": (clipped * mask).sum().item(), "approx_kl_sum": (approx_kl * mask).sum().item()}
    return loss, m


def value_loss(values, old_values, returns, mask, clip, how, denom):
    """Clipped value loss: 0.5 max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -c, c),
    aggregated by `how` like the policy loss (the authors' ValueLoss uses the same per-row masked mean)."""
    v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * aggregate(torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2), mask, how, denom)
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
    """Each row is its prompt then its response, from column 0, padded on the right (the layout the model's
    mask-free causal attention needs): (B, W) ids and (B,) starts, the column of each row's first response
    token. Response token j of row b sits at column starts[b] + j."""
    W = max(len(p) + len(r) for p, r in zip(prompt_ids, responses))
    ids = torch.full((len(responses), W), pad_id, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompt_ids, responses)):
        ids[b, :len(p) + len(r)] = torch.tensor(list(p) + list(r), dtype=torch.long)
    return ids, torch.tensor([len(p) for p in prompt_ids], dtype=torch.long)


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


def trim(ids, starts, lengths, rows, device):
    """One micro-batch at its own width: rows' ids cut to their longest prompt + response, their starts, and
    their longest response r (a micro-batch of short rows never pays for the rollout's longest one)."""
    rows_t = torch.tensor(rows)
    st = starts[rows_t]
    r = max(lengths[b] for b in rows)
    width = int((st + torch.tensor([lengths[b] for b in rows])).max())
    return ids[rows_t, :width].to(device), st, r


def forward_response(net, ids, starts, R, temperature, values=False, dtype=torch.bfloat16):
    """Response-aligned (n, R) log-probs at temperature and entropy, or (critic) values, for right-padded rows
    ids (n, W) whose responses start at columns starts (n,). Entry [b, j] is about response token j, which sits
    at column starts[b] + j: its log-prob (and the value of the state before it) comes out of the position
    that predicts it, column starts[b] + j - 1. Entries past a row's end are garbage: callers mask them."""
    labels = None if values else torch.roll(ids, -1, dims=1)  # the critic needs no log-probs
    with dist.autocast(ids.device, dtype):  # one GPU: bf16 compute on fp32 weights
        out = net(ids, labels=labels, temperature=temperature, return_values=values)
    cols = (starts.to(ids.device)[:, None] - 1 + torch.arange(R, device=ids.device)).clamp(max=ids.shape[1] - 1)
    if values:
        return out.values.gather(1, cols)  # (n, R)
    return out.logprobs.gather(1, cols), out.entropy.gather(1, cols)


def load_prompt_rows(spec, n, seed, split):
    import data
    if spec == "classroom":
        return data.classroom(n, seed=seed, split=split)
    if data.looks_like_path(spec):  # a missing file is reported as missing, not as an unknown benchmark
        return data.load_jsonl(spec)
    return data.load_benchmark(spec)


# flags that may differ when a run resumes: they do not change what it computes (test hooks, checkpoint
# bookkeeping, timeouts, memory: the sampler's draws do not depend on its slots, and the loss's denominator is
# the whole minibatch's, whatever the micro-batches); any other difference from OUT/args.json is refused
RESUME_FREE = ("kill_at_step", "dist_timeout", "keep_checkpoints", "save_every", "grad_ckpt", "kv_slots",
               "micro_tokens", "micro_batch", "allow_changed_args", "plan", "gpus", "gpu_memory", "plan_out",
               "measure", "start")


def check_args(args):
    """Every flag, before any model loads or any work (the classroom SFT run included): `error: --flag: got X,
    expected Y`, exit status 2. Reads the prompt files and the tokenizer (no weights) and keeps the prompts that
    fit --max-prompt-len. Returns (the content of OUT/args.json (dist.resume_args: a resume with other arguments
    is refused unless --allow-changed-args), the kept training rows, their formatted prompts, the held-out rows)."""
    import data
    req = dist.require
    req(args.iterations >= 1, "--iterations", args.iterations, "an integer >= 1")
    req(args.rollout_batch >= 1, "--rollout-batch", args.rollout_batch, "an integer >= 1")
    world = int(os.environ.get("WORLD_SIZE", 1))
    req(args.rollout_batch % world == 0, "--rollout-batch", args.rollout_batch,
        f"a multiple of the number of ranks ({world})")
    req(args.n_samples >= 1, "--n-samples", args.n_samples, "an integer >= 1")
    req(args.temperature > 0, "--temperature", args.temperature, "a number > 0 (PPO takes log-probs at it)")
    req(0 < args.top_p <= 1, "--top-p", args.top_p, "a number in (0, 1]")
    req(args.max_prompt_len >= 1, "--max-prompt-len", args.max_prompt_len, "an integer >= 1")
    req(args.max_new_tokens >= 1, "--max-new-tokens", args.max_new_tokens, "an integer >= 1")
    req(0 <= args.exceed_margin < args.max_new_tokens, "--exceed-margin", args.exceed_margin,
        f"an integer in [0, --max-new-tokens {args.max_new_tokens})")
    req(args.reward_clip > 0, "--reward-clip", args.reward_clip, "a number > 0")
    req(args.rep_n >= 1, "--rep-n", args.rep_n, "an integer >= 1")
    req(args.rep_penalty <= 0, "--rep-penalty", args.rep_penalty, "a number <= 0 (0 disables it)")
    for flag, v in (("--gamma", args.gamma), ("--rep-gamma", args.rep_gamma), ("--lam", args.lam)):
        req(0 <= v <= 1, flag, v, "a number in [0, 1]")
    req(args.lam == 1 or args.rep_penalty == 0 or args.advantage == "reinforce", "--lam", args.lam,
        "1 when --rep-penalty is on (two reward types with their own gammas need lambda = 1)")
    req(args.judge_model is not None or args.verifier == "rule", "--judge-model", "nothing",
        "a judge model (alias, HF dir or hub id) with --verifier judge")
    req(args.judge_max_new_tokens >= 1, "--judge-max-new-tokens", args.judge_max_new_tokens, "an integer >= 1")
    req(args.rope_theta is None or args.rope_theta > 0, "--rope-theta", args.rope_theta,
        "a number > 0 (0: the checkpoint's own)")
    req(args.kl_coef >= 0, "--kl-coef", args.kl_coef, "a number >= 0")
    req(args.actor_lr > 0, "--actor-lr", args.actor_lr, "a number > 0")
    req(args.critic_lr > 0, "--critic-lr", args.critic_lr, "a number > 0")
    req(0 <= args.min_lr_ratio <= 1, "--min-lr-ratio", args.min_lr_ratio, "a number in [0, 1]")
    req(0 <= args.warmup <= 1, "--warmup", args.warmup, "a share of the steps in [0, 1]")
    req(args.train_batch >= 1, "--train-batch", args.train_batch, "an integer >= 1")
    req(args.micro_tokens >= 1, "--micro-tokens", args.micro_tokens, "an integer >= 1")
    req(args.micro_batch >= 1, "--micro-batch", args.micro_batch, "an integer >= 1")
    req(args.kv_slots >= 0, "--kv-slots", args.kv_slots, "an integer >= 0 (0: as many as fit)")
    req(args.ppo_epochs >= 1, "--ppo-epochs", args.ppo_epochs, "an integer >= 1")
    for flag, v in (("--clip", args.clip), ("--value-clip", args.value_clip), ("--grad-clip", args.grad_clip)):
        req(v > 0, flag, v, "a number > 0")
    req(args.eval_every >= 1, "--eval-every", args.eval_every, "an integer >= 1")
    req(args.n_eval >= 1, "--n-eval", args.n_eval, "an integer >= 1")
    req(args.save_every >= 1, "--save-every", args.save_every, "an integer >= 1")
    req(args.keep_checkpoints >= 1, "--keep-checkpoints", args.keep_checkpoints, "an integer >= 1")
    req(args.dist_timeout > 0, "--dist-timeout", args.dist_timeout, "minutes > 0")
    req(args.kill_at_step >= 0, "--kill-at-step", args.kill_at_step, "an integer >= 0")
    parts = args.cosine.split(",")
    try:
        req(len(parts) == 5 and all(math.isfinite(float(v)) for v in parts), "--cosine", args.cosine,
            "five comma-separated numbers r0_correct,rL_correct,r0_wrong,rL_wrong,exceed")
    except ValueError:
        dist.arg_error("--cosine", f"got {args.cosine}, expected five comma-separated numbers")
    rows = {}
    for flag, spec, n, seed, split in (("--prompts", args.prompts, 5000, args.seed, "train"),
                                       ("--eval-data", args.eval_data, args.n_eval, args.seed + 1, "test")):
        try:
            rows[flag] = load_prompt_rows(spec, n, seed, split)
        except data.DataError as e:
            dist.arg_error(flag, str(e))
        req(rows[flag], flag, spec, "a non-empty problem set")
    req(len(rows["--prompts"]) >= args.rollout_batch, "--prompts", f"{args.prompts} ({len(rows['--prompts'])} "
        f"prompts)", f"at least --rollout-batch {args.rollout_batch}")
    dist.check_writable("--out", args.out)
    saved = dist.resume_args(args.out, vars(args), ignore=RESUME_FREE, allow=args.allow_changed_args)
    # prompts longer than --max-prompt-len are dropped: count the rest with the tokenizer alone (meta device:
    # no weights read; the tiny model's tokenizer is that of its classroom SFT start)
    from data import format_prompt
    from sample import encode_prompt
    try:
        _, tok = M.load("tiny" if args.model == "tiny" else args.model, device="meta")
    except (OSError, ValueError) as e:
        dist.arg_error("--model", str(e))
    if args.verifier == "judge":
        try:
            M.load(args.judge_model, device="meta")  # its config and tokenizer, no weights
        except (OSError, ValueError) as e:
            dist.arg_error("--judge-model", str(e))
    prompts = [format_prompt(r["problem"], tok, r.get("options")) for r in rows["--prompts"]]
    keep = [i for i, p in enumerate(prompts) if len(encode_prompt(tok, p)) <= args.max_prompt_len]
    req(len(keep) >= args.rollout_batch, "--max-prompt-len", args.max_prompt_len, f"a length that keeps at least "
        f"--rollout-batch {args.rollout_batch} of the {len(prompts)} prompts of {args.prompts} ({len(keep)} fit)")
    return (saved, [rows["--prompts"][i] for i in keep], [prompts[i] for i in keep],
            rows["--eval-data"][:args.n_eval])


def ensure_start(args):
    """The tiny policy starts from the classroom SFT result: reuse args.sft_out (a run: its final weights; or a
    checkpoint-N folder of one: those weights), or run sft.py to make it."""
    if args.model != "tiny":
        return args.model
    if os.path.exists(os.path.join(args.sft_out, "config.json")):  # a checkpoint folder itself
        return args.sft_out
    done = os.path.join(args.sft_out, "done.json")
    if not os.path.exists(done):
        import sft
        dist.print0(f"no classroom SFT result in {args.sft_out}: running `python sft.py --out {args.sft_out}` first")
        sft.main(["--out", args.sft_out, "--seed", str(args.seed)])  # writes done.json when finished
    ckpt = dist.latest_checkpoint(args.sft_out)  # its final weights: SFT_OUT/checkpoint-N
    if ckpt is None:
        raise FileNotFoundError(f"{args.sft_out}: done.json but no complete checkpoint-N/ in it (delete the folder "
                                f"to let ppo.py run the classroom SFT again)")
    return ckpt


# ----------------------------------------------------------------------------------------------------
# Main: the PPO loop
# ----------------------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    if args.plan:  # the memory plan (plan.py) runs this file's functions on fake tensors; no training
        import plan
        sys.exit(plan.main(args))  # 1 when a phase does not fit
    saved_args, rows, prompts, eval_rows = check_args(args)  # every flag and the prompts, before any model loads
    rank, world, device = dist.init(args.dist_timeout)
    import reward as RW
    import verify
    import judge
    from eval import evaluate, keyword_frequency
    from sample import decode_copy, encode_prompt, generate

    dtype = dist.compute_dtype(args.dtype, device)
    start = ensure_start(args)
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        dist.write_atomic(os.path.join(args.out, "args.json"), json.dumps({**saved_args, "start": start}, indent=2))
    torch.manual_seed(args.seed)

    # ---- models: policy and critic train (fp32 master weights), the reference is frozen ----
    # (under torchrun each is built on the meta device and each rank reads only its shards: dist.load_sharded)
    ctx = dict(rope_theta=args.rope_theta, max_positions=args.max_prompt_len + args.max_new_tokens)  # --rope-theta
    policy, tok = dist.load_sharded(start, torch.float32, device, param_dtype=dtype, **ctx)
    ref, _ = dist.load_sharded(start, dtype, device, param_dtype=dtype, frozen=True, **ctx)  # resharded after use
    policy.gradient_checkpointing = args.grad_ckpt
    actor_opt = torch.optim.AdamW(policy.parameters(), lr=args.actor_lr, betas=(0.9, 0.95), weight_decay=0.0)
    critic = critic_opt = None  # REINFORCE has no critic: no value model, optimizer, forward or loss
    if args.advantage == "gae":
        critic, _ = dist.load_sharded(start, torch.float32, device, value_head=True, param_dtype=dtype, **ctx)
        critic.gradient_checkpointing = args.grad_ckpt
        critic_opt = torch.optim.AdamW(critic.parameters(), lr=args.critic_lr, betas=(0.9, 0.95), weight_decay=0.0)
    judge_net = judge_tok = None  # --verifier judge: the judge LLM, a full frozen copy on every rank (judge.py)
    if args.verifier == "judge":
        judge_net, judge_tok = M.load(args.judge_model, dtype=dtype, device=device)
        judge_net.requires_grad_(False).eval()
    r0c, rLc, r0w, rLw, exc = (float(v) for v in args.cosine.split(","))  # (check_args: five numbers)
    rcfg = RW.RewardConfig(kind=args.reward, max_len=args.max_new_tokens, r0_correct=r0c, rL_correct=rLc,
                           r0_wrong=r0w, rL_wrong=rLw, exceed_reward=exc, rep_n=args.rep_n,
                           rep_penalty=args.rep_penalty, gamma=args.gamma, rep_gamma=args.rep_gamma,
                           exceed_margin=args.exceed_margin)

    # ---- data: the prompts check_args kept, in a seeded order per epoch; the data position is the iteration ----
    def prompt_indices(it):
        per_epoch = len(rows) // args.rollout_batch
        epoch, k = divmod(it, per_epoch)
        order = list(range(len(rows)))
        random.Random(args.seed * 7919 + epoch).shuffle(order)
        return order[k * args.rollout_batch:(k + 1) * args.rollout_batch]

    it = 0
    models, opts = {"policy": policy}, {"policy": actor_opt}
    if critic is not None:
        models["critic"], opts["critic"] = critic, critic_opt
    ckpt, state = dist.load_checkpoint(args.out, models, opts)
    if ckpt:
        it = state["iteration"]
        dist.print0(f"resumed from {ckpt} at iteration {it}")
    log = dist.metrics_log(args.out, "iteration", it if ckpt else None)  # drops rows of iterations to run again
    # the lr schedules step once per optimizer step, as the authors' do; warmup is a share of all optimizer steps
    steps_per_it = args.ppo_epochs * math.ceil(args.rollout_batch * args.n_samples / args.train_batch)
    total_steps = args.iterations * steps_per_it
    warm = max(1, math.ceil(args.warmup * total_steps))
    sampler, stale = None, True

    def current_sampler():
        """The policy itself (one process, fp32) or a plain decode copy, re-gathered only after an update."""
        nonlocal sampler, stale
        if stale:
            sampler = decode_copy(policy, sampler, dtype) if (world > 1 or dtype != torch.float32) else policy
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
                        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                        seed=args.seed + 100_003 * it,
                        batch_size=args.kv_slots or None, keys=positions)  # None: as many slots as fit
        samples = [(i, s) for i, group in zip(idx, outs) for s in group]
        if sampler is not policy:  # free the bf16 copy (15 GB at 7B) before scoring and training; rebuilt after
            sampler, stale = None, True
        # global id of each local sample (position * n + k): minibatches are drawn from global ids, so that one
        # process and N processes update on the same samples
        local_of = {p * args.n_samples + k: j for j, (p, k) in
                    enumerate((p, k) for p in positions for k in range(args.n_samples))}
        t1 = time.time()

        # ---- 2. reward: verifier -> correctness; reward.py -> (B, R, K) per-token rewards and their gammas ----
        texts = [s.text for _, s in samples]
        golds = [rows[i]["answer"] for i, _ in samples]
        if args.verifier == "judge":  # the LLM judge, greedy, on this rank's samples (judge.py)
            correct = judge.grade(judge_net, judge_tok, texts, golds, keys=list(local_of),
                                  max_new_tokens=args.judge_max_new_tokens, batch_size=args.kv_slots or None)
        else:  # the rules: verify.py
            grades = verify.grade_batch(texts, golds, [rows[i].get("kind", "math") for i, _ in samples])
            correct = [bool(g.correct) for g in grades]
        lengths = [len(s.token_ids) for _, s in samples]
        truncated = [s.finish_reason == "length" for _, s in samples]
        prompt_ids = [encode_prompt(tok, prompts[i]) for i, _ in samples]
        ids, starts = build_sequences(prompt_ids, [s.token_ids for _, s in samples], tok.pad_token_id)  # (B, W)
        R = max(lengths)  # response-aligned tensors below are (B, R): entry j is response token j of the row
        ends = starts + torch.tensor(lengths)  # (B,) each row's real width: prompt + response
        resp = ids.gather(1, (starts[:, None] + torch.arange(R)).clamp(max=ids.shape[1] - 1))  # (B, R)
        raw, gammas, names = RW.reward_tensor(correct, lengths, resp, truncated, rcfg, texts=texts)  # (B, R, K)
        mask = response_mask(lengths, R)  # (B, R)
        sampler_lp = torch.zeros(len(samples), R)  # the sampler's own log-probs, to check the trainer agrees
        for b, (_, smp) in enumerate(samples):
            sampler_lp[b, :len(smp.logprobs)] = torch.tensor(smp.logprobs)
        t2 = time.time()

        # ---- 3. old log-probs, reference log-probs, values (no grad), in token-budget micro-batches ----
        order = sorted(range(len(samples)), key=lambda b: int(ends[b]))
        mbs = micro_batches([int(ends[b]) for b in order], args.micro_tokens, args.micro_batch)
        old_lp, ref_lp, old_v, ent = (torch.zeros(len(samples), R) for _ in range(4))  # old_v stays 0 without critic
        for net in models.values():
            net.eval()
        with torch.no_grad():
            for j in range(dist.max_int(len(mbs))):
                mb = [order[b] for b in mbs[j]] if j < len(mbs) else [order[0]]  # extra: a dummy forward
                x, st, r = trim(ids, starts, lengths, mb, device)  # at this micro-batch's own width
                lp, e = forward_response(policy, x, st, r, args.temperature, dtype=dtype)
                rlp, _ = forward_response(ref, x, st, r, args.temperature, dtype=dtype)
                if critic is not None:
                    v = forward_response(critic, x, st, r, args.temperature, values=True, dtype=dtype)
                if j < len(mbs):
                    old_lp[mb, :r], ent[mb, :r], ref_lp[mb, :r] = lp.float().cpu(), e.float().cpu(), rlp.float().cpu()
                    if critic is not None:
                        old_v[mb, :r] = v.cpu()
        kl = kl_penalty(old_lp, ref_lp, mask, args.kl_estimator)  # (B, R), 0 off the mask
        rewards = shape_rewards(raw, kl, args.kl_coef, args.reward_clip)  # (B, R, K): clipped, KL/K in every type
        t3 = time.time()

        # ---- 4. advantages: multi-gamma returns (lambda = 1) or GAE, or REINFORCE returns; whitened over ranks ----
        if args.advantage == "gae":
            adv, returns = multi_gamma_advantages(rewards, old_v, mask, gammas, args.lam)
        else:  # REINFORCE: the discounted returns themselves; the whitening below is their baseline
            returns = reinforce_returns(rewards, mask, gammas)
            adv = returns
        adv = masked_whiten(adv, mask)  # the authors whiten the advantages of the whole rollout (ppo_trainer.py:306)

        # ---- 5. update: epochs x shuffled minibatches x micro-batches, actor and critic ----
        for net in models.values():
            net.train()
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_frac_sum": 0.0, "approx_kl_sum": 0.0, "tokens": 0.0,
                 "grad_norm_actor": 0.0, "grad_norm_critic": 0.0}
        gen = random.Random(args.seed * 31 + it)
        n_updates = 0
        for epoch in range(args.ppo_epochs):
            perm = list(range(len(it_prompts) * args.n_samples))  # global sample ids
            gen.shuffle(perm)
            for s in range(0, len(perm), args.train_batch):
                batch = sorted((local_of[g] for g in perm[s:s + args.train_batch] if g in local_of),
                               key=lambda b: int(ends[b]))
                # the loss's denominator over the whole minibatch, all ranks: its tokens or its sequences
                count = mask[batch].sum() if args.loss_agg == "token-mean" else torch.tensor(float(len(batch)))
                denom = dist.sum_tensor(count.reshape(1).double()).item()
                mbs = micro_batches([int(ends[b]) for b in batch], args.micro_tokens, args.micro_batch)
                step = it * steps_per_it + n_updates  # optimizer steps so far: the schedules' clock
                lr_a = lr_at(step, total_steps, args.actor_lr, warm, args.min_lr_ratio)
                lr_c = lr_at(step, total_steps, args.critic_lr, warm, args.min_lr_ratio)
                for g in actor_opt.param_groups:
                    g["lr"] = lr_a
                for g in critic_opt.param_groups if critic is not None else []:
                    g["lr"] = lr_c
                for j in range(dist.max_int(len(mbs))):
                    real = j < len(mbs)
                    mb = [batch[b] for b in mbs[j]] if real else [order[0]]  # dummy: the shortest row, weight 0
                    x, st, r = trim(ids, starts, lengths, mb, device)  # this micro-batch's own width
                    on = lambda t: t[mb, :r].to(device)  # noqa: E731  (n, r) slice of a (B, R) tensor
                    m = on(mask) * float(real)  # a dummy micro-batch contributes zero
                    lp, _ = forward_response(policy, x, st, r, args.temperature, dtype=dtype)
                    pl, pm = policy_loss(lp.float(), on(old_lp), on(adv), m, args.clip, args.loss_agg, denom)
                    vl = torch.zeros((), device=device)  # REINFORCE: no value loss
                    if critic is not None:
                        v = forward_response(critic, x, st, r, args.temperature, values=True, dtype=dtype)
                        vl, _ = value_loss(v, on(old_v), on(returns), m, args.value_clip, args.loss_agg, denom)
                    bad = torch.tensor([0.0 if (torch.isfinite(pl) and torch.isfinite(vl)) else 1.0])
                    if dist.sum_tensor(bad).item() > 0:
                        raise FloatingPointError(
                            f"iteration {it}: non-finite loss (policy {pl.item()}, value {vl.item()}); stopping "
                            f"before the optimizer step, weights unchanged (last checkpoint: {ckpt or 'none yet'})")
                    ((pl + vl) * world).backward()  # FSDP averages gradients over ranks; the sum is wanted
                    stats["policy_loss"] += pl.item() * world  # dist.mean below turns this into the global sum
                    stats["value_loss"] += vl.item() * world
                    stats["clip_frac_sum"] += pm["clip_frac_sum"]
                    stats["approx_kl_sum"] += pm["approx_kl_sum"]
                    stats["tokens"] += float(m.sum())
                gn_a = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
                gn_c = torch.nn.utils.clip_grad_norm_(critic.parameters(), args.grad_clip) if critic is not None \
                    else torch.zeros(())
                if not (torch.isfinite(gn_a) and torch.isfinite(gn_c)):
                    raise FloatingPointError(f"iteration {it}: non-finite gradient norm (actor {gn_a}, critic {gn_c}); "
                                             f"stopping before the optimizer step, weights unchanged")
                stats["grad_norm_actor"] += float(gn_a)
                stats["grad_norm_critic"] += float(gn_c)
                for opt in opts.values():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                n_updates += 1
        it += 1
        stale = True  # the policy changed: the next rollout or evaluation re-gathers its weights
        t4 = time.time()

        # ---- 6. log health signals (averaged over ranks) ----
        n_resp = mask.sum().clamp(min=1)
        local = {
            "reward": float(raw.sum(dim=(1, 2)).mean()),  # the task's reward per response, before clip and KL
            "reward_kl": float((rewards - raw.clamp(-args.reward_clip, args.reward_clip)).sum(dim=(1, 2)).mean()),
            "logprob_gap": float(((old_lp - sampler_lp).abs() * mask).sum() / n_resp),  # sampler vs trainer
            "return_mean": float((returns * mask).sum() / n_resp),
            "accuracy": sum(correct) / len(correct),
            "response_length": sum(lengths) / len(lengths), "truncation_rate": sum(truncated) / len(truncated),
            "kl": float(kl.sum() / n_resp), "entropy": float((ent * mask).sum() / n_resp),
            "clip_frac": stats["clip_frac_sum"] / max(stats["tokens"], 1),
            "approx_kl": stats["approx_kl_sum"] / max(stats["tokens"], 1),
            "policy_loss": stats["policy_loss"] / max(n_updates, 1),
            "grad_norm_actor": stats["grad_norm_actor"] / max(n_updates, 1),  # mean over the optimizer steps
            "tokens_per_s": world * sum(lengths) / max(t1 - t0, 1e-9),  # sampling, all ranks (mean x world)
            # the paper's Sec. 6 reflection keywords: occurrences of each per response (eval.keyword_frequency)
            **{f"keywords/{w}": f for w, f in keyword_frequency(texts).items()},
        }
        if critic is not None:
            local.update({"value_mean": float((old_v * mask).sum() / n_resp),
                          "value_loss": stats["value_loss"] / max(n_updates, 1),
                          "explained_variance": explained_variance(old_v, returns, mask),
                          "grad_norm_critic": stats["grad_norm_critic"] / max(n_updates, 1)})
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
            ckpt = dist.save_checkpoint(args.out, it, models, opts, tok, {"iteration": it}, keep=args.keep_checkpoints)
    if bar:
        bar.close()

    # ---- summary: held-out accuracy before and after, from the metrics log (spans resumed runs) ----
    from eval import read_curves
    held = read_curves(args.out)[1] if rank == 0 else []  # (iteration, accuracy, length)
    if rank == 0:  # marks the run finished (replicate.py reuses finished runs)
        dist.write_atomic(os.path.join(args.out, "done.json"), json.dumps({"iterations": it, "held_out": held}))
    if held:
        print(f"held-out accuracy {held[0][1]:.2f} -> {held[-1][1]:.2f} (n={len(eval_rows)})", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    dist.cleanup()  # under torchrun: the ranks meet, the group goes, the process ends here
