"""ppo.py: the math (returns, GAE, multi-gamma advantages, KL, clipped losses, whitening, masks, batching)
against hand-computed values, and whole PPO runs on the tiny model on a CPU.

The whole runs start from a 3-step classroom SFT (made once, in process) and are subprocesses with one thread
each (OMP_NUM_THREADS=1). One uninterrupted 2-iteration run, `run_a`, is shared: smoke checks, the reference for
the two-rank run and for the kill-and-resume run.
"""
import json
import math
import os
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import dist
import model as M
from scripts import read_metrics, run_script
import ppo
import reward as RW
import sft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 4 prompts x 2 samples, 12 new tokens, 2 minibatches of 4 samples, micro-batches of 2 rows, 2 PPO epochs (preset)
FLAGS = ["--iterations", "2", "--rollout-batch", "4", "--n-samples", "2", "--max-new-tokens", "12",
         "--train-batch", "4", "--micro-batch", "2", "--n-eval", "4", "--eval-every", "1", "--save-every", "1"]
HEALTH = ["reward", "accuracy", "response_length", "truncation_rate", "kl", "clip_frac", "approx_kl",
          "explained_variance", "entropy", "value_loss", "tokens_per_s", "time/sample", "time/score", "time/train"]
GLOBAL = ["reward", "accuracy", "response_length", "response_length_max", "truncation_rate", "policy_loss",
          "value_loss", "grad_norm_actor", "kl"]  # equal for 1 and N ranks (the others are per-rank averages)

t = torch.tensor


# ----------------------------------------------------------------------------------------------------
# Returns and advantages
# ----------------------------------------------------------------------------------------------------
def test_discounted_returns_by_hand():
    rewards = t([[1.0, 2.0, 3.0, 100.0]])  # the 100 sits on padding: it must not leak into the returns
    mask = t([[1.0, 1.0, 1.0, 0.0]])
    G = ppo.discounted_returns(rewards, mask, gamma=0.5)
    assert torch.allclose(G, t([[1 + 0.5 * 3.5, 2 + 0.5 * 3, 3.0, 0.0]]))  # 2.75, 3.5, 3, 0
    G1 = ppo.discounted_returns(t([[0.0, 0.0, 1.0]]), torch.ones(1, 3), gamma=1.0)
    assert G1.tolist() == [[1.0, 1.0, 1.0]]


def test_gae_by_hand():
    gamma, lam = 0.9, 0.8
    rewards = t([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = t([[0.5, 0.2, 0.4], [0.1, 0.3, 9.0]])
    mask = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 1 has 2 actions; its reward/value at t=2 are padding
    adv, ret = ppo.gae(rewards, values, mask, gamma, lam)
    # row 0: delta_2 = 1 - 0.4 = 0.6; delta_1 = 0.9*0.4 - 0.2 = 0.16; delta_0 = 0.9*0.2 - 0.5 = -0.32
    a2 = 0.6
    a1 = 0.16 + gamma * lam * a2  # 0.592
    a0 = -0.32 + gamma * lam * a1  # 0.10624
    # row 1: delta_1 = 2 - 0.3 = 1.7 (no bootstrap from the padded value 9); delta_0 = 0.9*0.3 - 0.1 = 0.17
    b1 = 1.7
    b0 = 0.17 + gamma * lam * b1  # 1.394
    assert torch.allclose(adv, t([[a0, a1, a2], [b0, b1, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, t([[a0 + 0.5, a1 + 0.2, a2 + 0.4], [b0 + 0.1, b1 + 0.3, 0.0]]), atol=1e-6)
    # gamma = lambda = 1: the advantage is the undiscounted return minus the value
    adv, ret = ppo.gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(ret, ppo.discounted_returns(rewards, mask, 1.0), atol=1e-6)
    assert torch.allclose(adv, (ret - values) * mask, atol=1e-6)


def test_multi_gamma_advantages_two_reward_types():
    rewards = torch.zeros(2, 3, 2)  # (B, T, K): K=0 correctness (gamma 1), K=1 repetition (gamma 0.5)
    rewards[0, 2, 0] = 2.0
    rewards[0, :, 1] = t([-1.0, -1.0, 0.0])
    rewards[1, 1, 0] = 1.0  # row 1: 2 actions
    rewards[1, 1, 1] = -1.0
    values = t([[0.5, 0.5, 0.5], [0.0, 0.25, 7.0]])  # 7.0 on padding
    mask = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = ppo.multi_gamma_advantages(rewards, values, mask, [1.0, 0.5], lam=1.0)
    # row 0: G^0 = [2, 2, 2]; G^1 = [-1 + 0.5 * -1, -1, 0] = [-1.5, -1, 0]
    # row 1: G^0 = [1, 1, 0]; G^1 = [0 + 0.5 * -1, -1, 0] = [-0.5, -1, 0]
    assert torch.allclose(ret, t([[0.5, 1.0, 2.0], [0.5, 0.0, 0.0]]))
    assert torch.allclose(adv, t([[0.0, 0.5, 1.5], [0.5, -0.25, 0.0]]))
    with pytest.raises(ValueError, match="lambda"):
        ppo.multi_gamma_advantages(rewards, values, mask, [1.0, 0.5], lam=0.95)
    # one reward type: plain GAE, lambda free
    one = ppo.multi_gamma_advantages(rewards[..., :1], values, mask, [0.9], lam=0.8)
    ref = ppo.gae(rewards[..., 0], values, mask, 0.9, 0.8)
    assert torch.equal(one[0], ref[0]) and torch.equal(one[1], ref[1])


def test_reinforce_returns_by_hand():
    """REINFORCE (the authors' get_cumulative_returns): each reward type discounted with its own gamma, summed; no
    value subtracted. (B, T, K) = (2, 3, 2), row 1 has 2 actions and a 100 on padding that must not leak in."""
    rewards = torch.zeros(2, 3, 2)
    rewards[0, :, 0] = t([0.0, 0.0, 2.0])  # correctness at the last token, gamma 0.5
    rewards[0, :, 1] = t([-1.0, -1.0, 0.0])  # repetition penalty, gamma 0.9
    rewards[1, :, 0] = t([0.0, 1.0, 100.0])
    rewards[1, :, 1] = t([-1.0, 0.0, 100.0])
    mask = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    G = ppo.reinforce_returns(rewards, mask, [0.5, 0.9])
    # row 0: G^0 = [0.5^2 * 2, 0.5 * 2, 2] = [0.5, 1, 2]; G^1 = [-1 + 0.9 * -1, -1, 0] = [-1.9, -1, 0]
    # row 1: G^0 = [0.5 * 1, 1, 0]; G^1 = [-1, 0, 0]
    assert torch.allclose(G, t([[0.5 - 1.9, 0.0, 2.0], [-0.5, 1.0, 0.0]]))
    one = ppo.reinforce_returns(rewards[..., :1], mask, [1.0])  # one type, undiscounted: the reward-to-go
    assert torch.allclose(one, t([[2.0, 2.0, 2.0], [1.0, 1.0, 0.0]]))


def test_masks_at_eos_and_truncation_and_zero_on_padding():
    # 3 responses in a (B, 4) batch: EOS as 3rd token, EOS as 1st token, truncated at max_new_tokens = 4 (no EOS)
    lengths = [3, 1, 4]
    mask = ppo.response_mask(lengths, 4)
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    ids = t([[5, 6, 2, 0], [2, 0, 0, 0], [5, 5, 5, 5]])
    cfg = RW.RewardConfig(kind="cosine", max_len=4, rep_n=1, rep_penalty=-0.5)
    rewards, gammas, _ = RW.reward_tensor([True, False, False], lengths, ids, [False, False, True], cfg)
    assert gammas == [1.0, 0.99]
    assert torch.all(rewards[mask == 0] == 0)  # (B, T, K) rewards are zero on padding
    assert rewards[2, 3, 0] == cfg.exceed_reward  # the truncated row's last action carries the exceed reward
    values = torch.full((3, 4), 0.3)  # a critic predicts something everywhere, padding too
    adv, ret = ppo.multi_gamma_advantages(rewards, values, mask, gammas, 1.0)
    assert torch.all(adv[mask == 0] == 0) and torch.all(ret[mask == 0] == 0)
    adv, ret = ppo.gae(rewards[..., 0], values, mask, 0.9, 0.8)
    assert torch.all(adv[mask == 0] == 0) and torch.all(ret[mask == 0] == 0)
    assert torch.all(ppo.masked_whiten(adv, mask)[mask == 0] == 0)


# ----------------------------------------------------------------------------------------------------
# Losses and statistics
# ----------------------------------------------------------------------------------------------------
def test_kl_penalty_k1_k3():
    logp, ref = torch.log(t([0.5, 0.25])), torch.log(t([0.25, 0.5]))
    one = torch.ones(2)
    k1 = ppo.kl_penalty(logp, ref, one, "k1")
    k3 = ppo.kl_penalty(logp, ref, one, "k3")
    ln2 = math.log(2)
    assert torch.allclose(k1, t([ln2, -ln2]))
    assert torch.allclose(k3, t([0.5 - 1 + ln2, 2 - 1 - ln2]))  # exp(-d) - 1 + d, d = logp - ref
    assert ppo.kl_penalty(logp, logp, one, "k3").abs().max() == 0
    with pytest.raises(ValueError, match="k2"):
        ppo.kl_penalty(logp, ref, one, "k2")


def test_policy_loss_clipping_by_hand():
    # tokens: ratio 1.1 / A +1 (inside), 1.5 / +1 (clipped at 1.2), 0.5 / +1 (unclipped: the min keeps 0.5),
    #         0.5 / -1 (clipped at 0.8), 1.5 / -1 (unclipped: -1.5), padding (ratio 3, A 5)
    ratio = t([[1.1, 1.5, 0.5], [0.5, 1.5, 3.0]])
    adv = t([[1.0, 1.0, 1.0], [-1.0, -1.0, 5.0]])
    mask = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    old = t([[-1.0, -2.0, -0.5], [-3.0, -1.5, -1.0]])
    logp = (old + torch.log(ratio)).requires_grad_()
    loss, m = ppo.policy_loss(logp, old, adv, mask, 0.2, "token-mean", 10)
    assert loss.item() == pytest.approx(-(1.1 + 1.2 + 0.5 - 0.8 - 1.5) / 10, abs=1e-6)
    assert m["clip_frac_sum"] == 4  # |ratio - 1| > 0.2 on 4 of the 5 real tokens
    kl = lambda r: (r - 1) - math.log(r)  # noqa: E731
    assert m["approx_kl_sum"] == pytest.approx(kl(1.1) + 2 * kl(1.5) + 2 * kl(0.5), rel=1e-5)
    loss.backward()
    # d loss / d logp = -ratio * A / n where the unclipped term is the minimum, 0 where the clip is active
    assert torch.allclose(logp.grad, t([[-0.11, 0.0, -0.05], [0.0, 0.15, 0.0]]), atol=1e-6)


def test_value_loss_clipped_and_unclipped_branches():
    old = torch.zeros(1, 4)
    values = t([[0.5, 0.1, 0.5, 4.0]]).requires_grad_()
    returns = t([[1.0, 1.0, 0.0, 9.0]])
    mask = t([[1.0, 1.0, 1.0, 0.0]])
    loss, _ = ppo.value_loss(values, old, returns, mask, 0.2, "token-mean", 3)
    # token 0: unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> 0.64 (clipped branch)
    # token 1: inside the clip range, both 0.81; token 2: unclipped 0.25 > clipped 0.04 -> 0.25
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 0.25) / 3)
    loss.backward()
    assert torch.allclose(values.grad, t([[0.0, (0.1 - 1.0) / 3, 0.5 / 3, 0.0]]))  # clipped branch: no gradient


def test_loss_aggregation_by_hand():
    """token-mean: every token weighs 1/(all tokens); seq-mean-token-mean (the authors'): every response weighs
    1/(all responses) and its tokens share that, so a short response's token weighs more."""
    x = t([[1.0, 2.0, 3.0, 4.0], [10.0, 99.0, 99.0, 99.0]])  # row 0: 4 tokens; row 1: 1 token, then padding
    mask = t([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert ppo.aggregate(x, mask, "token-mean", 5).item() == pytest.approx((1 + 2 + 3 + 4 + 10) / 5)
    assert ppo.aggregate(x, mask, "seq-mean-token-mean", 2).item() == pytest.approx((10 / 4 + 10 / 1) / 2)
    # a micro-batch is a share of the minibatch: its denominator is the whole minibatch's count (here 4 rows)
    assert ppo.aggregate(x, mask, "seq-mean-token-mean", 4).item() == pytest.approx((2.5 + 10) / 4)
    assert ppo.aggregate(x, torch.zeros(2, 4), "seq-mean-token-mean", 4).item() == 0  # a dummy micro-batch
    with pytest.raises(ValueError, match="aggregation"):
        ppo.aggregate(x, mask, "sum", 1)
    # the gradient a token gets: 1/4 of row 0's share vs all of row 1's
    logp = torch.zeros(2, 4, requires_grad=True)
    loss, _ = ppo.policy_loss(logp, torch.zeros(2, 4), torch.ones(2, 4), mask, 0.2, "seq-mean-token-mean", 2)
    assert loss.item() == pytest.approx(-1.0)
    loss.backward()
    assert torch.allclose(logp.grad, t([[-0.125] * 4, [-0.5, 0, 0, 0]]))
    values = torch.zeros(2, 4, requires_grad=True)
    vl, _ = ppo.value_loss(values, torch.zeros(2, 4), x, mask, 100.0, "seq-mean-token-mean", 2)
    assert vl.item() == pytest.approx(0.5 * ((1 + 4 + 9 + 16) / 4 + 100) / 2)


def test_shape_rewards_clips_then_splits_kl_over_types_by_hand():
    """(B, T, K) = (1, 3, 2): each type clipped to [-10, 10], then -beta * KL / K added to both types, so with
    gammas (1, 0.99) half the KL is discounted with each (the authors' models/utils.py:50-77)."""
    raw = t([[[0.0, -0.05], [0.0, 0.0], [-12.0, -0.05]]])
    kl = t([[0.4, -0.2, 1.0]])
    got = ppo.shape_rewards(raw, kl, kl_coef=0.5, clip=10.0)
    want = t([[[-0.1, -0.15], [0.05, 0.05], [-10.25, -0.3]]])
    assert torch.allclose(got, want), got
    one = ppo.shape_rewards(raw[..., :1], kl, kl_coef=0.5, clip=10.0)  # one type: all of it there
    assert torch.allclose(one[..., 0], t([[-0.2, 0.1, -10.5]]))


def test_masked_whiten():
    x = t([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -7.0, -7.0]])
    mask = t([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    w = ppo.masked_whiten(x, mask)
    # masked entries 1..5: mean 3, population variance 2
    assert torch.allclose(w, t([[-2.0, -1.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]]) / math.sqrt(2), atol=1e-6)
    n = mask.sum()
    assert (w * mask).sum() / n == pytest.approx(0, abs=1e-6)
    assert (w * w * mask).sum() / n == pytest.approx(1, abs=1e-6)


def test_masked_whiten_large_mean_small_spread():
    # advantages near -10 that differ by ~1e-3 (all rows truncated, a critic that has moved a little): a float32
    # E[x^2] - E[x]^2 cancels catastrophically (errors of ~2 std); the result must match a float64 computation
    gen = torch.Generator().manual_seed(0)
    x = (-10 + 1e-3 * torch.randn(64, 48, generator=gen)).float()
    mask = torch.ones(64, 48)
    mask[::3, 40:] = 0
    xd, md = x.double(), mask.double()
    mean = (xd * md).sum() / md.sum()
    var = ((xd - mean) ** 2 * md).sum() / md.sum()
    want = (xd - mean) / torch.sqrt(var + 1e-8) * md  # eps = 1e-8, as in ppo.py
    assert torch.allclose(ppo.masked_whiten(x, mask).double(), want, atol=1e-5)


def test_explained_variance():
    returns = t([[1.0, 2.0, 3.0, 50.0]])
    mask = t([[1.0, 1.0, 1.0, 0.0]])
    assert ppo.explained_variance(t([[1.0, 2.0, 3.0, -9.0]]), returns, mask) == pytest.approx(1.0)
    assert ppo.explained_variance(t([[2.0, 2.0, 2.0, 0.0]]), returns, mask) == pytest.approx(0.0)
    # R - V = [0, 0, -1]: Var = 2/9; Var(R) = 2/3 -> 1 - 1/3
    assert ppo.explained_variance(t([[1.0, 2.0, 4.0, 0.0]]), returns, mask) == pytest.approx(2 / 3)
    assert math.isnan(ppo.explained_variance(torch.zeros(1, 4), torch.ones(1, 4), mask))  # constant returns


# ----------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------
def test_micro_batches_token_and_row_budget():
    assert ppo.micro_batches([5, 5, 5, 10, 10, 2], max_tokens=20, max_rows=3) == [[0, 1, 2], [3, 4], [5]]
    assert ppo.micro_batches([30, 4, 4], max_tokens=20, max_rows=8) == [[0], [1, 2]]  # too long: alone
    lengths = [3, 9, 4, 4, 12, 1, 7, 7, 2]
    mbs = ppo.micro_batches(lengths, max_tokens=16, max_rows=4)
    assert [i for mb in mbs for i in mb] == list(range(len(lengths)))  # every index once, order kept
    for mb in mbs:
        assert len(mb) <= 4 and (len(mb) == 1 or len(mb) * max(lengths[i] for i in mb) <= 16)


def test_build_sequences_layout_and_response_alignment():
    ids, starts = ppo.build_sequences([[1, 2], [3]], [[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[1, 2, 4, 5, 6], [3, 7, 0, 0, 0]]  # prompt then response from column 0, right-padded
    assert starts.tolist() == [2, 1]
    # response token j of row b sits at column starts[b] + j; forward_response returns it at index j
    def stub(ids, labels, temperature, return_values):  # scores = the labels, values = -ids
        if return_values:
            return SimpleNamespace(values=-ids.float())
        return SimpleNamespace(logprobs=labels.float(), entropy=torch.zeros(labels.shape))

    lp, _ = ppo.forward_response(stub, ids, starts, 3, 1.0)
    assert lp[0].tolist() == [4, 5, 6] and lp[1, 0] == 7  # the label scored at response index j is token j
    v = ppo.forward_response(stub, ids, starts, 3, 1.0, values=True)
    assert v[0].tolist() == [-2, -4, -5] and v[1, 0] == -3  # value of the state before each response token


def test_trim_cuts_each_micro_batch_to_its_own_width():
    """A micro-batch of short rows must not run at the rollout's widest row (4 x 100 tokens, not 4 x 16K)."""
    prompts, responses = [[1] * 5, [2] * 3, [3] * 4], [[4] * 100, [5] * 2, [6] * 3]
    ids, starts = ppo.build_sequences(prompts, responses, pad_id=0)
    assert ids.shape == (3, 105)
    x, st, r = ppo.trim(ids, starts, [100, 2, 3], [1, 2], "cpu")
    assert x.shape == (2, 7) and r == 3 and st.tolist() == [3, 4]  # widest of the two: 4 + 3
    assert x.tolist() == [[2, 2, 2, 5, 5, 0, 0], [3, 3, 3, 3, 6, 6, 6]]
    net, _ = M.load("tiny")
    with torch.no_grad():  # the trimmed forward scores the same tokens as the full-width one
        full, _ = ppo.forward_response(net, ids[1:], starts[1:], 3, 1.0, dtype=torch.float32)
        cut, _ = ppo.forward_response(net, x, st, r, 1.0, dtype=torch.float32)
    assert torch.allclose(full[0, :2], cut[0, :2], atol=1e-5) and torch.allclose(full[1], cut[1], atol=1e-5)


def test_kl_penalty_masks_before_exp():
    """k3 takes exp(-log_ratio): a padded entry with a huge log-ratio must not turn into inf x 0 = NaN."""
    logp = torch.tensor([[-1.0, -2.0, -200.0]])
    ref = torch.tensor([[-1.5, -2.0, 0.0]])  # the padded third entry: log-ratio -200, exp(200) = inf in fp32
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    k3 = ppo.kl_penalty(logp, ref, mask, "k3")
    assert torch.isfinite(k3).all() and k3[0, 2] == 0
    assert k3[0, 0].item() == pytest.approx(math.exp(-0.5) - 1 + 0.5) and k3[0, 1] == 0
    assert ppo.kl_penalty(logp, ref, mask, "k1").tolist() == [[0.5, 0.0, 0.0]]


# ----------------------------------------------------------------------------------------------------
# Whole runs
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_start(tmp_path_factory):
    """A 3-step classroom SFT run (sft.main in process writes checkpoint-3/ and done.json)."""
    out = tmp_path_factory.mktemp("sft")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sft.main(["--out", str(out), "--max-steps", "3", "--n-train", "64", "--batch-size", "8",
                  "--micro-batch-size", "8", "--n-eval", "4", "--eval-max-new-tokens", "8"])
    finally:
        torch.set_num_threads(n)
    assert (out / "done.json").exists() and (newest(out) / "model.safetensors").exists()
    return out


def run(args, torchrun=False, expect_rc=0):
    return run_script("ppo.py", args, torchrun, expect_rc)


def metrics(out):
    return read_metrics(out, "iteration")


def weights(path):
    return M.load(str(path))[0].state_dict()


def newest(out):
    """OUT/checkpoint-N, the newest complete checkpoint of a run."""
    return Path(dist.latest_checkpoint(str(out)))


@pytest.fixture(scope="module")
def run_a(sft_start, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo_a")
    stdout = run(FLAGS + ["--sft-out", str(sft_start), "--out", str(out)])
    return out, stdout


def test_one_iteration_smoke(run_a, sft_start):
    out, stdout = run_a
    train, ev = metrics(out)
    assert sorted(train) == [1, 2] and sorted(ev) == [0, 1, 2]
    for it, row in train.items():
        missing = [k for k in HEALTH if k not in row]
        assert not missing, missing
        assert all(math.isfinite(row[k]) for k in HEALTH if k != "explained_variance"), row
        assert 1 <= row["response_length"] <= 12 and 0 <= row["truncation_rate"] <= 1 and row["entropy"] > 0
    assert train[1]["kl"] == 0.0  # the first rollout comes from the reference weights themselves
    assert ev[2]["eval/n"] == 4
    final = stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"held-out accuracy \d\.\d\d -> \d\.\d\d \(n=\d+\)", final), final
    start, policy = weights(newest(sft_start)), weights(newest(out) / "policy")
    changed = [k for k in start if not torch.equal(start[k], policy[k])]
    assert "model.embed_tokens.weight" in changed and len(changed) > len(start) // 2, changed
    critic, _ = M.load(str(newest(out) / "critic"), value_head=True)
    assert critic.value_head.weight.abs().sum() > 0  # the zero-initialised value head was trained


def test_two_ranks_match_one_process(run_a, sft_start, tmp_path):
    one, _ = run_a
    two = tmp_path / "two"
    run(FLAGS + ["--sft-out", str(sft_start), "--out", str(two)], torchrun=True)
    t1, e1 = metrics(one)
    t2, e2 = metrics(two)
    assert sorted(t1) == sorted(t2) and sorted(e1) == sorted(e2)
    for it in t1:
        for k in GLOBAL:
            assert t2[it][k] == pytest.approx(t1[it][k], rel=1e-4, abs=1e-6), (it, k, t1[it][k], t2[it][k])
    for it in e1:  # evaluate() keys its samples globally: the same held-out answers
        for k, v in e1[it].items():
            assert e2[it][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (it, k)
    w1, w2 = weights(newest(one) / "policy"), weights(newest(two) / "policy")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k


def test_kill_and_resume_matches_uninterrupted(run_a, sft_start, tmp_path):
    a, _ = run_a
    b = tmp_path / "b"
    args = FLAGS + ["--sft-out", str(sft_start), "--out", str(b)]
    run(args + ["--kill-at-step", "2"], expect_rc=-signal.SIGKILL)  # killed after iteration 2, before its save
    assert max(metrics(b)[0]) == 2
    stdout = run(args)
    assert f"resumed from {b / 'checkpoint-1'} at iteration 1" in stdout
    rows = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "reward" in r] == [1, 2]  # iteration 2's first row was dropped
    assert [r["iteration"] for r in rows if "eval/accuracy" in r] == [0, 1, 2]
    ta, ea = metrics(a)
    tb, eb = metrics(b)
    for it in (1, 2):
        for k, v in ta[it].items():
            if not (k.startswith("time/") or k == "tokens_per_s"):
                assert tb[it][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (it, k)
    assert eb[2] == ea[2]
    for name in ("policy", "critic"):
        wa, wb = weights(newest(a) / name), weights(newest(b) / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


@pytest.mark.parametrize("which", ["policy_loss", "value_loss"])
def test_non_finite_loss_stops_before_the_optimizer_step(which, sft_start, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = getattr(ppo, which)

    def nan_on_second_call(*a, **k):  # the second micro-batch: the first one's gradients are already summed
        loss, m = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 2 else loss), m

    monkeypatch.setattr(ppo, which, nan_on_second_call)
    models, real_load = [], M.load

    def load_and_keep(*a, **k):  # keeps the policy, critic and reference that ppo.main builds
        net, tok = real_load(*a, **k)
        if k.get("device") != "meta":  # (check_args reads the tokenizer from a weightless meta-device model)
            models.append(net)
        return net, tok

    monkeypatch.setattr(M, "load", load_and_keep)
    steps = {"n": 0}
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (steps.__setitem__("n", steps["n"] + 1),
                                                                          real_step(self, *a, **k))[1])
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(FloatingPointError, match="non-finite loss"):
            ppo.main(FLAGS + ["--sft-out", str(sft_start), "--out", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(n)
    assert calls["n"] == 2 and steps["n"] == 0  # stopped inside the first minibatch, before any optimizer step
    assert dist.latest_checkpoint(str(tmp_path / "run")) is None
    start = weights(newest(sft_start))
    policy, critic = models[0].state_dict(), models[1].state_dict()
    for k in start:  # the weights in memory are the start weights, finite
        assert torch.equal(policy[k], start[k]) and torch.equal(critic[k], start[k]), k


# ----------------------------------------------------------------------------------------------------
# Wiring: behaviour of the loop as a whole (each test was checked against the mutation it names)
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_w(sft_start, tmp_path_factory):
    """3 iterations, one optimizer step each (the whole rollout is one minibatch, one epoch), sampling at 0.7,
    a large KL coefficient and a fast critic: what the loop must do is then visible in its logged metrics."""
    out = tmp_path_factory.mktemp("ppo_w")
    run(FLAGS + ["--sft-out", str(sft_start), "--out", str(out), "--iterations", "3", "--ppo-epochs", "1",
                 "--train-batch", "8", "--temperature", "0.7", "--kl-coef", "0.5", "--actor-lr", "1e-3",
                 "--critic-lr", "5e-2", "--eval-every", "3", "--save-every", "3"])
    return metrics(out)[0]


def test_loop_takes_every_log_prob_at_the_sampling_temperature(run_w):
    """Sampler, scoring forward and training forward must all use the sampling temperature. With one optimizer
    step per rollout the training forward runs before any update, so the ratio must be exactly 1 (no clipping,
    approx KL 0), and the scoring forward must reproduce the sampler's own log-probs. Caught mutations: the
    training forward at temperature 1 (approx_kl ~1e-2, clip_frac > 0), the scoring forward at 1 (gap ~0.3)."""
    for it, row in run_w.items():
        assert row["clip_frac"] == 0 and abs(row["approx_kl"]) < 1e-6, (it, row["clip_frac"], row["approx_kl"])
        assert row["logprob_gap"] < 1e-4, (it, row["logprob_gap"])


def test_loop_subtracts_the_kl_penalty_from_the_rewards(run_w):
    """The KL term in the rewards the advantages are computed from is -beta * KL per token: over a response,
    -beta x (mean KL per token) x (mean length). Caught mutation: the sign flipped in the loop (+beta)."""
    later = [row for it, row in run_w.items() if it > 1]
    assert run_w[1]["kl"] == 0 and all(row["kl"] != 0 for row in later)  # the first rollout is the reference's
    for row in later:
        want = -0.5 * row["kl"] * row["response_length"]
        assert row["reward_kl"] == pytest.approx(want, rel=1e-3, abs=1e-9), (row["reward_kl"], want)


def test_loop_trains_the_critic_towards_the_returns(run_w):
    """The critic's values (zero at the start) must move towards the returns. Caught mutation: the value loss
    regressing on the (whitened, mean-zero) advantages instead of the returns: the values stay near 0."""
    gap = [abs(run_w[it]["value_mean"] - run_w[it]["return_mean"]) for it in (1, 2, 3)]
    assert run_w[1]["value_mean"] == 0 and gap[0] > 1.0, gap  # a zero head; returns of mostly wrong answers
    assert gap[2] < 0.5 * gap[0], gap


# ----------------------------------------------------------------------------------------------------
# The paper's other settings inside ppo.main: whitening, REINFORCE, the LLM judge, RoPE theta, keywords
# ----------------------------------------------------------------------------------------------------
ONE = FLAGS + ["--iterations", "1", "--ppo-epochs", "1", "--train-batch", "8", "--eval-every", "1"]  # 1 minibatch


def run_main(args):
    """ppo.main in this process, one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ppo.main(args)
    finally:
        torch.set_num_threads(n)


def spy_policy_loss(monkeypatch):
    """Records (advantages, mask) of every ppo.policy_loss call inside main."""
    seen, real = [], ppo.policy_loss

    def spy(logp, old_logp, adv, mask, *a, **k):
        seen.append((adv.detach().clone(), mask.detach().clone()))
        return real(logp, old_logp, adv, mask, *a, **k)
    monkeypatch.setattr(ppo, "policy_loss", spy)
    return seen


def assert_whitened(seen, n_tokens):
    """The advantages the policy loss received over the (one-minibatch) update: every token of the rollout once,
    mean 0 and variance 1 over those tokens."""
    adv = torch.cat([a[m > 0] for a, m in seen]).double()
    assert adv.numel() == n_tokens
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert adv.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_policy_loss_receives_advantages_whitened_over_the_rollout(sft_start, tmp_path, monkeypatch):
    """GAE: the advantages in the loss are whitened over the whole rollout (the authors' replay_buffer.normalize).
    Caught mutation: the whitening line removed from main (mean -9.35, variance 4.47: the zero-initialised critic
    leaves the returns of truncated answers, about -10)."""
    seen = spy_policy_loss(monkeypatch)
    run_main(ONE + ["--sft-out", str(sft_start), "--out", str(tmp_path / "run")])
    row = metrics(tmp_path / "run")[0][1]
    assert_whitened(seen, round(row["response_length"] * 8))


def test_reinforce_builds_no_critic(sft_start, tmp_path, monkeypatch):
    """--advantage reinforce: no critic model, optimizer, value forward or value loss; the policy loss gets the
    discounted returns whitened over the rollout. Caught mutations: the critic built anyway (a value-head load and
    a second AdamW), the whitening removed (mean -9.35, variance 4.47)."""
    loads, opts, value_calls = [], [], []
    real_load, real_init, real_fwd = dist.load_sharded, torch.optim.AdamW.__init__, ppo.forward_response
    monkeypatch.setattr(dist, "load_sharded", lambda *a, **k: (loads.append(k.get("value_head", False)),
                                                               real_load(*a, **k))[1])
    monkeypatch.setattr(torch.optim.AdamW, "__init__", lambda self, *a, **k: (opts.append(1),
                                                                               real_init(self, *a, **k))[1])
    monkeypatch.setattr(ppo, "forward_response", lambda *a, **k: (value_calls.append(k.get("values", False)),
                                                                  real_fwd(*a, **k))[1])
    monkeypatch.setattr(ppo, "value_loss", lambda *a, **k: pytest.fail("a value loss with --advantage reinforce"))
    seen = spy_policy_loss(monkeypatch)
    out = tmp_path / "run"
    run_main(ONE + ["--sft-out", str(sft_start), "--out", str(out), "--advantage", "reinforce"])
    assert loads == [False, False] and len(opts) == 1 and not any(value_calls) and value_calls  # policy + reference
    row = metrics(out)[0][1]
    assert_whitened(seen, round(row["response_length"] * 8))
    assert "value_loss" not in row and "explained_variance" not in row and math.isfinite(row["policy_loss"])
    assert sorted(p.name for p in newest(out).iterdir() if p.is_dir()) == ["policy", "trainer"]


def test_judge_grades_the_rollout(sft_start, tmp_path, monkeypatch):
    """--verifier judge with a stand-in judge that says "correct" only for one reference answer (the first prompt's):
    exactly the rows of that answer are correct, get the cosine reward of a correct answer, and set the logged
    accuracy; the reflection keywords are logged per response. Responses are cut to 5 tokens ending "eos", so that
    none hits the length limit (whose reward would hide correctness). Caught mutations: main grading with the rules
    despite --verifier judge (no row correct), the judge's verdict inverted, a keyword frequency summed instead of
    averaged over responses."""
    import reward as RW
    import judge
    import sample
    from sample import Sample
    known, refs, got = [], [], {}
    real_gen, real_rt = sample.generate, RW.reward_tensor

    def rollout(model, tok, prompts, n=1, **k):  # the policy's own samples, cut to 5 tokens, keywords in half
        outs = real_gen(model, tok, prompts, n=n, **k)
        return [[Sample(s.prompt_index, s.token_ids[:5], s.logprobs[:5],
                        tok.decode(s.token_ids[:5]) + (" Wait, however; wait" if j % 2 == 0 else ""), "eos")
                 for j, s in enumerate(group)] for group in outs]

    def stand_in(model, tok, prompts, n, temperature, max_new_tokens, **k):
        assert temperature == 0.0 and max_new_tokens == 1024 and n == 1
        for p in prompts:
            refs.append(p.split("Reference answer:\n")[1].split("\n")[0])
        known[:] = known or refs[:1]
        return [[Sample(i, [1], [0.0], f"Judgement: {'correct' if r == known[0] else 'wrong'}", "eos")]
                for i, r in enumerate(refs[-len(prompts):])]

    def reward_spy(correct, lengths, token_ids, truncated, cfg, texts=None):
        out = real_rt(correct, lengths, token_ids, truncated, cfg, texts=texts)
        got.update(correct=list(correct), rewards=out[0], lengths=list(lengths), texts=list(texts))
        return out
    monkeypatch.setattr(sample, "generate", rollout)
    monkeypatch.setattr(judge, "generate", stand_in)
    monkeypatch.setattr(RW, "reward_tensor", reward_spy)
    out = tmp_path / "run"
    run_main(ONE + ["--sft-out", str(sft_start), "--out", str(out), "--verifier", "judge", "--judge-model", "tiny",
                    "--eval-every", "5"])
    want = [r == known[0] for r in refs]
    assert got["correct"] == want and 0 < sum(want) < len(want), (refs, got["correct"])
    assert got["lengths"] == [5] * 8
    r_correct, r_wrong = RW.cos_fn(5, 12, 2.0, 1.0), RW.cos_fn(5, 12, -10.0, 0.0)  # CLASSROOM's cosine, T = 12
    assert [round(float(got["rewards"][b, 4, 0]), 5) for b in range(8)] == \
        [round(r_correct if c else r_wrong, 5) for c in want]
    row = metrics(out)[0][1]
    assert row["accuracy"] == pytest.approx(sum(want) / 8)
    wait = sum(E_word(x, "wait") for x in got["texts"]) / 8
    assert wait >= 1.0 and row["keywords/wait"] == pytest.approx(wait)  # 2 per augmented response, half of them
    assert row["keywords/however"] == pytest.approx(sum(E_word(x, "however") for x in got["texts"]) / 8)
    logged = {k for k in row if k.startswith("keywords/")}
    assert logged == {f"keywords/{w}" for w in ("wait", "recheck", "alternatively", "retry", "however")}


def E_word(text, word):
    import eval as E
    return E.word_count(text, word)


def test_reinforce_judge_rope_theta_two_ranks_match_one_process(sft_start, tmp_path):
    """REINFORCE, the judge (the tiny model, greedy) and --rope-theta together, one process and two ranks: the same
    metrics and weights, the saved policy carries the RoPE theta it was trained with (config.json), and the first
    KL is 0 (reference and policy at the same theta). Caught mutations: the theta not passed to the policy's load,
    nor to the reference's (KL no longer exactly 0 at iteration 1), nor by dist.load_sharded under torchrun."""
    flags = FLAGS + ["--sft-out", str(sft_start), "--advantage", "reinforce", "--verifier", "judge", "--judge-model",
                     "tiny", "--judge-max-new-tokens", "16", "--rope-theta", "20000"]
    run(flags + ["--out", str(tmp_path / "one")])
    run(flags + ["--out", str(tmp_path / "two")], torchrun=True)
    (t1, e1), (t2, e2) = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert sorted(t1) == sorted(t2) == [1, 2]
    assert t1[1]["kl"] == t2[1]["kl"] == 0.0  # policy and reference both at the new theta: the same model at first
    for it in t1:
        for k in [k for k in GLOBAL if k != "value_loss"] + ["keywords/wait"]:
            assert t2[it][k] == pytest.approx(t1[it][k], rel=1e-4, abs=1e-6), (it, k, t1[it][k], t2[it][k])
        assert "value_loss" not in t1[it]
    w1, w2 = weights(newest(tmp_path / "one") / "policy"), weights(newest(tmp_path / "two") / "policy")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k
    for d in ("one", "two"):
        cfg = json.loads((newest(tmp_path / d) / "policy" / "config.json").read_text())
        assert cfg["rope_theta"] == 20000.0 and cfg["max_position_embeddings"] >= 64 + 12
        assert not (newest(tmp_path / d) / "critic").exists()
