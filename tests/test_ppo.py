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
from types import SimpleNamespace

import pytest
import torch

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
    k1 = ppo.kl_penalty(logp, ref, "k1")
    k3 = ppo.kl_penalty(logp, ref, "k3")
    ln2 = math.log(2)
    assert torch.allclose(k1, t([ln2, -ln2]))
    assert torch.allclose(k3, t([0.5 - 1 + ln2, 2 - 1 - ln2]))  # exp(-d) - 1 + d, d = logp - ref
    assert ppo.kl_penalty(logp, logp, "k3").abs().max() == 0
    with pytest.raises(ValueError, match="k2"):
        ppo.kl_penalty(logp, ref, "k2")


def test_policy_loss_clipping_by_hand():
    # tokens: ratio 1.1 / A +1 (inside), 1.5 / +1 (clipped at 1.2), 0.5 / +1 (unclipped: the min keeps 0.5),
    #         0.5 / -1 (clipped at 0.8), 1.5 / -1 (unclipped: -1.5), padding (ratio 3, A 5)
    ratio = t([[1.1, 1.5, 0.5], [0.5, 1.5, 3.0]])
    adv = t([[1.0, 1.0, 1.0], [-1.0, -1.0, 5.0]])
    mask = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    old = t([[-1.0, -2.0, -0.5], [-3.0, -1.5, -1.0]])
    logp = (old + torch.log(ratio)).requires_grad_()
    loss, m = ppo.policy_loss(logp, old, adv, mask, clip=0.2, n_tokens=10)
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
    loss, _ = ppo.value_loss(values, old, returns, mask, clip=0.2, n_tokens=3)
    # token 0: unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> 0.64 (clipped branch)
    # token 1: inside the clip range, both 0.81; token 2: unclipped 0.25 > clipped 0.04 -> 0.25
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 0.25) / 3)
    loss.backward()
    assert torch.allclose(values.grad, t([[0.0, (0.1 - 1.0) / 3, 0.5 / 3, 0.0]]))  # clipped branch: no gradient


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
    ids, attn, P = ppo.build_sequences([[1, 2], [3]], [[4, 5, 6], [7]], pad_id=0)
    assert P == 2
    assert ids.tolist() == [[1, 2, 4, 5, 6], [0, 3, 7, 0, 0]]  # prompts left-padded, responses right-padded
    assert attn.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    # response token j of every row sits at column P + j; forward_response returns it at index j
    def stub(ids, attention_mask, labels, temperature, return_values):  # scores = the labels, values = -ids
        if return_values:
            return SimpleNamespace(values=-ids.float())
        return SimpleNamespace(logprobs=labels.float(), entropy=torch.zeros(labels.shape))

    lp, _ = ppo.forward_response(stub, ids, attn, P, 3, 1.0)
    assert lp.tolist() == [[4, 5, 6], [7, 0, 0]]  # the label scored at response index j is the j-th token
    v = ppo.forward_response(stub, ids, attn, P, 3, 1.0, values=True)
    assert v.tolist() == [[-2, -4, -5], [-3, -7, 0]]  # value of the state before each response token


# ----------------------------------------------------------------------------------------------------
# Whole runs
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_start(tmp_path_factory):
    """A 3-step classroom SFT run (sft.main in process writes checkpoint/ and done.json)."""
    out = tmp_path_factory.mktemp("sft")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sft.main(["--out", str(out), "--max-steps", "3", "--n-train", "64", "--batch-size", "8",
                  "--micro-batch-size", "8", "--n-eval", "4", "--eval-max-new-tokens", "8"])
    finally:
        torch.set_num_threads(n)
    assert (out / "done.json").exists() and (out / "checkpoint" / "model.safetensors").exists()
    return out


def run(args, torchrun=False, expect_rc=0):
    return run_script("ppo.py", args, torchrun, expect_rc)


def metrics(out):
    return read_metrics(out, "iteration")


def weights(path):
    return M.load(str(path))[0].state_dict()


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
    last = stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"held-out accuracy \d\.\d\d -> \d\.\d\d \(n=\d+\)", last), last
    start, policy = weights(sft_start / "checkpoint"), weights(out / "checkpoint" / "policy")
    changed = [k for k in start if not torch.equal(start[k], policy[k])]
    assert "model.embed_tokens.weight" in changed and len(changed) > len(start) // 2, changed
    critic, _ = M.load(str(out / "checkpoint" / "critic"), value_head=True)
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
    w1, w2 = weights(one / "checkpoint" / "policy"), weights(two / "checkpoint" / "policy")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-5), k


def test_kill_and_resume_matches_uninterrupted(run_a, sft_start, tmp_path):
    a, _ = run_a
    b = tmp_path / "b"
    args = FLAGS + ["--sft-out", str(sft_start), "--out", str(b)]
    run(args + ["--kill-at-step", "2"], expect_rc=-signal.SIGKILL)  # killed after iteration 2, before its save
    assert max(metrics(b)[0]) == 2
    stdout = run(args)
    assert "resumed from" in stdout and "at iteration 1" in stdout
    rows = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "reward" in r] == [1, 2, 2]
    ta, ea = metrics(a)
    tb, eb = metrics(b)
    for it in (1, 2):
        for k, v in ta[it].items():
            if not (k.startswith("time/") or k == "tokens_per_s"):
                assert tb[it][k] == pytest.approx(v, rel=1e-6, abs=1e-9), (it, k)
    assert eb[2] == ea[2]
    for name in ("policy", "critic"):
        wa, wb = weights(a / "checkpoint" / name), weights(b / "checkpoint" / name)
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
    assert not (tmp_path / "run" / "checkpoint").exists()
    start = weights(sft_start / "checkpoint")
    policy, critic = models[0].state_dict(), models[1].state_dict()
    for k in start:  # the weights in memory are the start weights, finite
        assert torch.equal(policy[k], start[k]) and torch.equal(critic[k], start[k]), k
