"""The memory plan (plan.py) at a small shape, in a fake world of 4 ranks: the tracked peaks must contain what
each phase holds (weights / world, the decode copy, one micro-batch's saved activations, gradients, Adam
moments), so that the plan cannot silently measure nothing."""
import math

import pytest
import torch

import model as M
import plan

WORLD = 4
CFG = M.Config(vocab_size=512, hidden_size=64, intermediate_size=192, num_layers=2, num_heads=4, num_kv_heads=2,
               head_dim=16, tie_word_embeddings=False, eos_token_id=1)
S = dict(max_prompt_len=8, max_new_tokens=56, micro_tokens=128, micro_batch=2, rollout_batch=8, n_samples=2,
         temperature=0.7, value_clip=0.2, actor_lr=1e-6, critic_lr=1e-5, grad_ckpt=True, gpu_bytes=10 ** 9,
         kv_slots=0, loss_agg="seq-mean-token-mean")


def sizes():
    """Parameter counts: all of a model, its lm_head, the critic's value head."""
    with torch.device("meta"):
        m = M.CausalLM(CFG, value_head=True)
    head = m.value_head.weight.numel() + m.value_head.bias.numel()
    return m.num_params() - head, m.lm_head.weight.numel(), head


@pytest.fixture(scope="module")
def planned():
    peaks, info = plan.plan(M.Config(**vars(CFG)), dict(S), WORLD, passes=2, log=lambda *a: None)
    return peaks, info


def test_plan_counts_what_each_phase_holds(planned):
    peaks, info = planned
    n, n_lm, n_head = sizes()
    policy, critic, ref = 4 * n, 4 * (n + n_head), 2 * n  # bytes: fp32, fp32 + value head, bf16
    weights = (policy + critic + ref) / WORLD
    copy = 2 * n  # the decode copy: bf16, full
    adam = 2 * 4 * (n + (n + n_head - n_lm)) / WORLD  # two fp32 moments; the critic's lm_head gets no gradient
    W, rows = S["max_prompt_len"] + S["max_new_tokens"], 2
    saved = 2 * CFG.num_layers * rows * W * CFG.hidden_size * 2  # each model saves every block's bf16 input

    assert weights <= peaks["load + shard"][0] <= 1.2 * weights  # the shards, nothing whole
    assert peaks["decode copy"][1] >= weights + copy
    # steady state (pass 2): after the checkpoint gather, weights + Adam moments stay, gradients are gone, and so
    # are the decode copy (freed after the rollout) and the reference's gathered root (a frozen model's root is
    # resharded after forward); policy, critic and reference keep their rope tables (fp32 cos and sin)
    rope = 3 * 2 * max(W, min(CFG.max_position_embeddings, 32768)) * (CFG.head_dim // 2) * 4
    expect = weights + adam + rope
    steady = peaks["checkpoint"][1]
    assert expect <= steady <= 1.02 * expect
    # training: on top of what stays, one micro-batch's saved activations and the sharded fp32 gradients
    grads = 4 * (n + n + n_head - n_lm) / WORLD
    assert peaks["train"][0] >= steady + saved + grads
    assert peaks["optimizer"][0] >= weights + adam + grads
    # checkpoint: rank 0 gathers one full fp32 tensor at a time (the largest: the embedding) and moves it to the host
    largest = 4 * CFG.vocab_size * CFG.hidden_size
    assert steady + largest <= peaks["checkpoint"][0] <= steady + 3 * largest
    # KV cache: the slots chosen from the budget, all of them allocated
    per_slot = 2 * CFG.num_layers * CFG.num_kv_heads * CFG.head_dim * 2 * info["capacity"]
    assert info["slots"] == min(info["jobs"], info["kv_budget"] // per_slot) == S["rollout_batch"] // WORLD * S["n_samples"]
    assert peaks["KV cache"][0] >= steady + info["slots"] * per_slot


def test_report_says_fits_or_not(planned):
    peaks, info = planned
    text, ok = plan.report(plan.table(peaks, S["gpu_bytes"]), info, "t")
    assert ok and text.splitlines()[-1].startswith("fits: tightest phase")
    small = max(p for p, _ in peaks.values()) - 1  # one byte less than the largest peak
    text, ok = plan.report(plan.table(peaks, small), info, "t")
    assert not ok and text.splitlines()[-1].startswith("does not fit")
    assert math.isclose(plan.table(peaks, S["gpu_bytes"])[0][2], S["gpu_bytes"] / plan.GiB)


JCFG = M.Config(vocab_size=384, hidden_size=96, intermediate_size=256, num_layers=3, num_heads=6, num_kv_heads=3,
                head_dim=16, tie_word_embeddings=False, eos_token_id=1)  # the judge: another shape than the policy


@pytest.fixture(scope="module")
def planned_judge_reinforce():
    s = dict(S, advantage="reinforce", judge_cfg=M.Config(**vars(JCFG)), judge_max_new_tokens=24)
    return plan.plan(M.Config(**vars(CFG)), s, WORLD, passes=2, log=lambda *a: None)


def test_plan_counts_the_judge_and_no_critic_under_reinforce(planned_judge_reinforce):
    """--verifier judge: the judge's bf16 weights, whole on every rank, from load to checkpoint, and its KV cache
    (slots from the budget, capacity for the response's tail + the template + its 1,024-token budget) in the judge
    phase. --advantage reinforce: no critic weights, gradients or Adam moments. Caught mutations: the judge left out
    of the plan (load and steady state short by its bytes), the critic still built under reinforce."""
    peaks, info = planned_judge_reinforce
    n, n_lm, _ = sizes()
    with torch.device("meta"):
        j = M.CausalLM(JCFG)
    judge_bytes = 2 * j.num_params()  # bf16, not sharded
    weights = (4 * n + 2 * n) / WORLD + judge_bytes  # policy fp32 + reference bf16 shards, the whole judge
    adam = 2 * 4 * n / WORLD  # the policy's two moments only
    assert info["judge_weight_bytes"] == judge_bytes
    assert weights <= peaks["load + shard"][0] <= 1.2 * weights
    W = S["max_prompt_len"] + S["max_new_tokens"]
    jcap = info["judge_capacity"]
    assert jcap >= S["max_new_tokens"] + plan.JUDGE_EXTRA + 24
    rope = 2 * 2 * max(W, min(CFG.max_position_embeddings, 32768)) * (CFG.head_dim // 2) * 4 \
        + 2 * max(jcap, min(JCFG.max_position_embeddings, 32768)) * (JCFG.head_dim // 2) * 4  # policy, ref; judge
    steady = peaks["checkpoint"][1]
    assert weights + adam + rope <= steady <= 1.02 * (weights + adam + rope)
    per_slot = 2 * JCFG.num_layers * JCFG.num_kv_heads * JCFG.head_dim * 2 * jcap
    assert info["judge_slots"] == min(info["jobs"], info["judge_kv_bytes"] // per_slot)
    assert info["judge_kv_bytes"] == info["judge_slots"] * per_slot
    assert peaks["judge"][0] >= weights + adam + info["judge_slots"] * per_slot
    grads = 4 * n / WORLD
    assert peaks["optimizer"][0] >= weights + adam + grads
    text, ok = plan.report(plan.table(peaks, S["gpu_bytes"]), info, "t")
    assert ok and "judge: weights" in text
