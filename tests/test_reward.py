"""Tests for reward.py: exact values of the paper's reward shaping, computed by hand."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import reward
from reward import (RewardConfig, classic_reward, cos_fn, cosine_reward, cosine_table, dense_repetition_penalty,
                    exceeded, repetition_fraction, reward_tensor, sparse_repetition_penalty)

P = -0.05
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- cosine / classic

def test_cos_fn_endpoints_and_midpoint():
    assert cos_fn(0, 100, 2.0, 1.0) == 2.0
    assert cos_fn(50, 100, 2.0, 1.0) == 1.5
    assert cos_fn(100, 100, 2.0, 1.0) == 1.0
    assert cos_fn(0, 100, -10.0, 0.0) == -10.0
    assert cos_fn(50, 100, -10.0, 0.0) == -5.0
    assert cos_fn(100, 100, -10.0, 0.0) == 0.0
    # t = T/4: 1 + 0.5 * (1 + sqrt(2)/2)
    assert cos_fn(25, 100, 2.0, 1.0) == pytest.approx(1.0 + 0.5 * (1 + math.sqrt(0.5)), abs=1e-12)


def test_cosine_reward_paper_defaults():
    T = 1000
    assert cosine_reward(True, 0, T) == 2.0
    assert cosine_reward(True, 500, T) == 1.5
    assert cosine_reward(False, 0, T) == -10.0
    assert cosine_reward(False, 500, T) == -5.0
    # t = T is the exceed case (paper: r_e when L_gen = L_max), for correct and wrong answers alike
    assert cosine_reward(True, T, T) == -10.0
    assert cosine_reward(False, T, T) == -10.0
    # one token before the limit the curve is ~rL
    assert cosine_reward(True, T - 1, T) == pytest.approx(1.0, abs=1e-5)
    assert cosine_reward(False, T - 1, T) == pytest.approx(0.0, abs=1e-4)


def test_cosine_reward_params_truncation_and_margin():
    T = 100
    kw = dict(r0_correct=3.0, rL_correct=0.5, r0_wrong=-4.0, rL_wrong=-1.0, exceed_reward=-7.0)
    assert cosine_reward(True, 50, T, **kw) == 1.75
    assert cosine_reward(False, 50, T, **kw) == -2.5
    assert cosine_reward(True, 10, T, truncated=True, **kw) == -7.0       # sampler cut the row: exceeded
    assert cosine_reward(True, 95, T, exceed_margin=5, **kw) == -7.0      # 95 >= 100 - 5
    assert cosine_reward(True, 94, T, exceed_margin=5, **kw) > 0.5        # 94 < 95: still on the curve
    assert cosine_reward(True, 150, T, **kw) == -7.0                      # beyond the limit


def test_exceeded_and_bad_input():
    assert not exceeded(99, 100) and exceeded(100, 100) and exceeded(3, 100, truncated=True)
    with pytest.raises(ValueError, match="max_len"):
        cosine_reward(True, 1, 0)
    with pytest.raises(ValueError, match="length"):
        cosine_reward(True, -1, 10)
    with pytest.raises(ValueError, match="margin"):
        cosine_reward(True, 1, 10, exceed_margin=10)


def test_classic_reward():
    assert classic_reward(True, 5, 10) == 1.0
    assert classic_reward(False, 5, 10) == 0.0
    assert classic_reward(True, 10, 10) == 0.0
    assert classic_reward(True, 10, 10, exceed_reward=-1.0) == -1.0
    assert classic_reward(True, 3, 10, exceed_reward=-1.0, truncated=True) == -1.0


# ----------------------------------------------------------------------------- repetition

def test_repetition_fraction_and_sparse_penalty():
    # bigrams of "a b a b c": (a b)(b a)(a b)(b c): 3 distinct of 4 -> 1/4 repeated
    assert repetition_fraction("a b a b c", 2) == 0.25
    assert repetition_fraction("A b a B c", 2) == 0.25                     # case-insensitive
    # trigrams of "x y z x y z": xyz yzx zxy xyz: 3 distinct of 4
    assert repetition_fraction("x y z x y z", 3) == 0.25
    assert repetition_fraction("one two", 3) == 0.0                        # no trigrams at all
    assert repetition_fraction("a a a a a", 1) == 0.8                      # 1 distinct of 5
    assert sparse_repetition_penalty("a b a b c", 2, -2.0) == -0.5
    with pytest.raises(ValueError, match="max_penalty"):
        sparse_repetition_penalty("a b", 1, 1.0)


def test_dense_penalty_hand_examples():
    assert dense_repetition_penalty([1, 2, 1, 2, 3], n=2, penalty=P) == [0, 0, P, P, 0]
    # (5,5) first at 0, repeats at 1 and 2: positions 1..3, each penalised once (no double counting)
    assert dense_repetition_penalty([5, 5, 5, 5], n=2, penalty=P) == [0, P, P, P]
    # trigrams 123 231 312 123* 231*: repeats start at 3 and 4 -> positions 3..6
    assert dense_repetition_penalty([1, 2, 3, 1, 2, 3, 1], n=3, penalty=P) == [0, 0, 0, P, P, P, P]
    assert dense_repetition_penalty([1, 2, 3, 4], n=2, penalty=P) == [0, 0, 0, 0]
    assert dense_repetition_penalty([7], n=2, penalty=P) == [0]
    assert dense_repetition_penalty([], n=2) == []


def test_dense_penalty_n40():
    ids = list(range(50)) + list(range(50))         # a 50-token block written twice
    out = dense_repetition_penalty(ids)             # paper: n = 40, -0.05
    # 40-grams starting at 50..60 repeat those at 0..10 and cover positions 50..99; boundary grams are new
    assert out == [0.0] * 50 + [-0.05] * 50
    assert dense_repetition_penalty(list(range(30)) * 2) == [0.0] * 60   # repeat shorter than n


# ----------------------------------------------------------------------------- batch tensor

def test_reward_tensor_placement_padding_k_gammas():
    cfg = RewardConfig(max_len=8, rep_n=2)
    pad = 0
    ids = torch.tensor([[4, 5, 4, 5, 9, pad, pad, pad],      # correct, length 5, bigram (4,5) repeated
                        [1, 2, 3, 1, 1, 1, 1, 1],            # wrong and truncated at the limit
                        [3, pad, pad, pad, pad, pad, pad, pad]])
    r, gammas, names = reward_tensor([True, False, False], torch.tensor([5, 8, 1]), ids,
                                     [False, True, False], cfg)
    assert r.shape == (3, 8, 2) and r.dtype == torch.float32
    assert gammas == [1.0, 0.99] and names == ["cosine", "repetition"]
    c5 = cos_fn(5, 8, 2.0, 1.0)
    assert r[0, :, 0].tolist() == pytest.approx([0, 0, 0, 0, c5, 0, 0, 0], abs=1e-6)
    assert r[0, :, 1].tolist() == pytest.approx([0, 0, P, P, 0, 0, 0, 0], abs=1e-7)
    assert r[1, :, 0].tolist() == [0] * 7 + [-10.0]
    # (1,1) first at 3, repeats at 4,5,6 -> positions 4..7
    assert r[1, :, 1].tolist() == pytest.approx([0, 0, 0, 0, P, P, P, P], abs=1e-7)
    assert r[2, 0, 0].item() == pytest.approx(-5.0 * (1 + math.cos(math.pi / 8)), abs=1e-6)  # wrong, t=1 of 8
    assert r[2, 1:].abs().sum().item() == 0.0                       # padding (even repeated pad ids) is exactly 0


def test_reward_tensor_k1_classic_and_sparse():
    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0]])
    texts = ["a b a b c", "a b a b c"]
    cfg = RewardConfig(kind="classic", max_len=4, rep_penalty=0.0, sparse_rep_n=2, sparse_rep_max_penalty=-2.0)
    r, gammas, names = reward_tensor([True, False], [3, 2], ids, [False, False], cfg, texts=texts)
    assert r.shape == (2, 4, 1) and gammas == [1.0] and names == ["classic"]
    assert r[0, :, 0].tolist() == [0, 0, 1.0, 0]                    # correct: no sparse penalty
    assert r[1, :, 0].tolist() == [0, -0.5, 0, 0]                   # wrong: 0 + 0.25 * -2
    with pytest.raises(ValueError, match="texts"):
        reward_tensor([True, False], [3, 2], ids, [False, False], cfg)
    # a wrong answer that hit the limit gets the exceed reward only, no sparse penalty on top (authors'
    # reward/cosine.py:70-73); cosine exceed -10
    cos = RewardConfig(kind="cosine", max_len=4, rep_penalty=0.0, sparse_rep_n=2, sparse_rep_max_penalty=-2.0)
    r, _, _ = reward_tensor([False, False], [4, 2], torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]]), [True, False],
                            cos, texts=texts)
    assert r[0, 3, 0].item() == -10.0
    assert r[1, 1, 0].item() == pytest.approx(-5.0 - 0.5)  # not exceeded: cos_fn(2, 4, -10, 0) = -5, plus -0.5


def test_reward_tensor_bad_input():
    ids = torch.zeros(2, 4, dtype=torch.long)
    cfg = RewardConfig(max_len=4)
    with pytest.raises(ValueError, match="lengths\\[1\\]"):
        reward_tensor([True, True], [2, 5], ids, [False, False], cfg)
    with pytest.raises(ValueError, match="lengths\\[0\\]"):
        reward_tensor([True, True], [0, 2], ids, [False, False], cfg)
    with pytest.raises(ValueError, match="correct has 1"):
        reward_tensor([True], [2, 2], ids, [False, False], cfg)
    with pytest.raises(ValueError, match="kind"):
        RewardConfig(kind="linear")


# ----------------------------------------------------------------------------- CLI

def test_cosine_table_and_cli_text_fallback():
    rows = cosine_table(8, 4)
    assert [t for t, _, _ in rows] == [0, 2, 4, 6, 8]
    assert rows[2][1:] == (1.5, -5.0) and rows[-1][1:] == (-10.0, -10.0)
    res = subprocess.run([sys.executable, str(ROOT / "reward.py"), "--max_len", "8", "--rows", "4"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "1.5000" in res.stdout and "-5.0000" in res.stdout


def test_plot_falls_back_to_table_without_matplotlib(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # makes `import matplotlib` fail
    out = tmp_path / "c.png"
    reward.plot(8, str(out), 4)
    text = capsys.readouterr().out
    assert "matplotlib is not installed" in text and "-5.0000" in text and not out.exists()
