"""Reward shaping for PPO on long chains of thought (Yeo et al., 2025, "Demystifying Long CoT", Sec. 4).

What it does
  * classic_reward: 1 if the verifier says correct, 0 if wrong, a fixed value if the response hit the length limit.
  * cosine_reward: the paper's cosine length-scaling reward. Correct answers earn more when short
    (+2 at length 0 down to +1 at the limit T), wrong answers are punished less when long (-10 up to 0),
    and a response that hits the limit gets exceed_reward (-10).
  * repetition penalties: a sparse one (fraction of repeated word n-grams, wrong answers only) and a dense one
    (-0.05 on every token that lies inside a repeated token n-gram, n = 40).
  * reward_tensor: a batch of responses -> per-token rewards (B, T, K), one channel per reward type, with the
    discount factor of each type. ppo.py runs one return/advantage computation per channel.

How to run
  python reward.py                       # text table of the cosine reward against length
  python reward.py --plot --out cos.png  # the same curves as a PNG (needs matplotlib; else the table)

Where it departs from the paper
  * "Exceeded the length limit" is `truncated` (the sampler stopped the row at its limit, no EOS) or
    length >= max_len - exceed_margin. The paper writes L_gen = L_max (margin 0, this file's default); the
    authors' code uses gen_len + 16 >= max_len (eddycmu/demystify-long-cot, openrlhf/reward/common.py:9
    MAX_LEN_MARGIN = 16, reward/cosine.py:70), which ppo.py's paper preset takes (--exceed-margin 16): a
    response that ends with EOS in its last 16 tokens also gets exceed_reward.
  * The sparse repetition penalty is added to wrong answers only, and not on top of the exceed reward (as the
    authors' reward/cosine.py:70-73 skips it for exceeded responses).
  * The sparse repetition penalty uses lower-cased, whitespace-split words; a text with fewer than n words has
    no n-grams and gets 0 (the authors' code would divide by zero there).
  * The dense penalty has no "only the first repeated n-gram of a run" option; every repeated n-gram counts.
"""
import argparse
import math
import os
from dataclasses import dataclass

import torch


def get_args(argv=None):
    p = argparse.ArgumentParser(description="Show the cosine length-scaling reward (Yeo et al., 2025).")
    p.add_argument("--plot", action="store_true", help="draw a PNG with matplotlib (falls back to a text table)")
    p.add_argument("--out", default="cosine_reward.png", help="where --plot writes the figure")
    p.add_argument("--max_len", type=int, default=4096, help="T, the generation limit of the curve (paper: 4K-16K)")
    p.add_argument("--rows", type=int, default=8, help="the text table shows rows+1 evenly spaced lengths")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- length rewards

def exceeded(length: int, max_len: int, margin: int = 0, truncated: bool = False) -> bool:
    """True when the response counts as having hit the length limit (paper: L_gen = L_max)."""
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if not 0 <= margin < max_len:
        raise ValueError(f"exceed margin must be in [0, max_len={max_len}), got {margin}")
    return bool(truncated) or length >= max_len - margin


def cos_fn(t: float, T: float, r0: float, rL: float) -> float:
    """Cosine from r0 at t=0 to rL at t=T.
    Yeo et al. 2025, Sec. 4.2 (Eq. 1): CosFn(t, T, eta_min, eta_max) = eta_min + 0.5 (eta_max - eta_min)(1 + cos(t pi / T));
    with eta_min = rL and eta_max = r0 this one line also covers wrong answers, where r0 < rL."""
    return rL + 0.5 * (r0 - rL) * (1.0 + math.cos(math.pi * t / T))


def classic_reward(correct: bool, length: int, max_len: int, exceed_reward: float = 0.0, *,
                   correct_reward: float = 1.0, wrong_reward: float = 0.0,
                   exceed_margin: int = 0, truncated: bool = False) -> float:
    """Binary verifier reward; a response at the length limit gets exceed_reward whatever its answer."""
    if exceeded(length, max_len, exceed_margin, truncated):
        return float(exceed_reward)
    return float(correct_reward if correct else wrong_reward)


def cosine_reward(correct: bool, length: int, max_len: int, *,
                  r0_correct: float = 2.0, rL_correct: float = 1.0, r0_wrong: float = -10.0, rL_wrong: float = 0.0,
                  exceed_reward: float = -10.0, exceed_margin: int = 0, truncated: bool = False) -> float:
    """The paper's cosine length-scaling reward (Sec. 4.2); defaults are the paper's values."""
    if exceeded(length, max_len, exceed_margin, truncated):
        return float(exceed_reward)                                   # r_e when L_gen = L_max
    if correct:
        return cos_fn(length, max_len, r0_correct, rL_correct)        # CosFn(L_gen, L_max, r0^c, rL^c)
    return cos_fn(length, max_len, r0_wrong, rL_wrong)                # CosFn(L_gen, L_max, r0^w, rL^w)


# ----------------------------------------------------------------------------- repetition penalties

def repetition_fraction(text: str, n: int) -> float:
    """1 - (#distinct word n-grams / #word n-grams); words are lower-cased whitespace-split tokens."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    words = text.lower().split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    distinct = {tuple(words[i:i + n]) for i in range(total)}
    return 1.0 - len(distinct) / total


def sparse_repetition_penalty(text: str, n: int, max_penalty: float) -> float:
    """Repeated fraction times max_penalty (<= 0); reward_tensor adds it to wrong answers only."""
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be <= 0 (it is a penalty), got {max_penalty}")
    return repetition_fraction(text, n) * max_penalty


def dense_repetition_penalty(token_ids: list[int], n: int = 40, penalty: float = -0.05) -> list[float]:
    """Per-token penalty for repeated token-id n-grams.

    Rule: the n-gram starting at position s is a repeat if the same n ids occurred starting at an earlier position.
    Every position inside a repeat (s .. s+n-1) gets `penalty`, once: overlapping repeats do not add up, and the
    first occurrence of an n-gram is never penalised. E.g. n=2, ids [5,5,5,5] -> [0, p, p, p].
    """
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    if penalty > 0:
        raise ValueError(f"penalty must be <= 0, got {penalty}")
    ids = tuple(int(i) for i in token_ids)
    out = [0.0] * len(ids)
    seen = set()
    covered = 0                                   # positions < covered are already penalised
    for s in range(len(ids) - n + 1):
        gram = ids[s:s + n]
        if gram in seen:
            for j in range(max(s, covered), s + n):
                out[j] = penalty
            covered = s + n
        else:
            seen.add(gram)
    return out


# ----------------------------------------------------------------------------- batch -> per-token tensor

@dataclass
class RewardConfig:
    kind: str = "cosine"             # "cosine" (paper's shaped reward) or "classic" (binary baseline)
    max_len: int = 4096              # T: the generation limit the cosine curve spans
    r0_correct: float = 2.0          # correct answer at length 0 (paper)
    rL_correct: float = 1.0          # correct answer at length T (paper)
    r0_wrong: float = -10.0          # wrong answer at length 0 (paper)
    rL_wrong: float = 0.0            # wrong answer at length T (paper)
    exceed_reward: float = -10.0     # cosine reward of a response that hit the limit (paper r_e)
    exceed_margin: int = 0           # length >= max_len - margin hits the limit (paper: 0; authors' code: 16)
    classic_correct: float = 1.0     # classic reward of a correct answer
    classic_wrong: float = 0.0       # classic reward of a wrong answer
    classic_exceed: float = 0.0      # classic reward at the limit (treated like a wrong answer)
    rep_n: int = 40                  # dense repetition penalty n-gram size in tokens (paper)
    rep_penalty: float = -0.05       # dense penalty per repeated token (paper); 0 disables the channel
    sparse_rep_n: int = 3            # sparse repetition penalty n-gram size in words
    sparse_rep_max_penalty: float = 0.0  # sparse penalty at 100% repetition; 0 = off (the paper prefers dense)
    gamma: float = 1.0               # discount of the correctness/length reward (paper)
    rep_gamma: float = 0.99          # discount of the dense repetition penalty (paper)

    def __post_init__(self):
        if self.kind not in ("cosine", "classic"):
            raise ValueError(f"RewardConfig.kind must be 'cosine' or 'classic', got {self.kind!r}")
        if self.max_len <= 0 or not 0 <= self.exceed_margin < self.max_len:
            raise ValueError(f"RewardConfig needs max_len > 0 and 0 <= exceed_margin < max_len, "
                             f"got max_len={self.max_len}, exceed_margin={self.exceed_margin}")
        if self.rep_penalty > 0 or self.sparse_rep_max_penalty > 0:
            raise ValueError("RewardConfig: rep_penalty and sparse_rep_max_penalty must be <= 0")
        if self.rep_n < 1 or self.sparse_rep_n < 1:
            raise ValueError("RewardConfig: rep_n and sparse_rep_n must be >= 1")

    @property
    def dense_on(self) -> bool:
        return self.rep_penalty != 0.0


def sequence_reward(correct: bool, length: int, truncated: bool, cfg: RewardConfig) -> float:
    """The sparse correctness/length reward of one response under cfg."""
    if cfg.kind == "cosine":
        return cosine_reward(correct, length, cfg.max_len, r0_correct=cfg.r0_correct, rL_correct=cfg.rL_correct,
                             r0_wrong=cfg.r0_wrong, rL_wrong=cfg.rL_wrong, exceed_reward=cfg.exceed_reward,
                             exceed_margin=cfg.exceed_margin, truncated=truncated)
    return classic_reward(correct, length, cfg.max_len, cfg.classic_exceed, correct_reward=cfg.classic_correct,
                          wrong_reward=cfg.classic_wrong, exceed_margin=cfg.exceed_margin, truncated=truncated)


def reward_tensor(correct, lengths, token_ids: torch.Tensor, truncated, cfg: RewardConfig, texts=None):
    """Per-token rewards of a batch of right-padded responses.

    correct[b], truncated[b]: bools; lengths[b]: generated tokens of row b (1 <= lengths[b] <= T);
    token_ids: (B, T) response ids; texts[b]: decoded response (needed only for the sparse repetition penalty).
    Returns rewards (B, T, K) float32, gammas (K floats), names (K strings). Channel 0 holds the
    correctness/length reward (+ sparse repetition penalty) at index lengths[b]-1; channel 1 (only when the dense
    penalty is on) holds the dense repetition penalty. Padding positions (>= lengths[b]) are exactly 0.
    """
    if token_ids.dim() != 2:
        raise ValueError(f"token_ids must be (B, T), got shape {tuple(token_ids.shape)}")
    B, T = token_ids.shape
    lengths = lengths.tolist() if isinstance(lengths, torch.Tensor) else list(lengths)
    for name, xs in (("correct", correct), ("lengths", lengths), ("truncated", truncated)):
        if len(xs) != B:
            raise ValueError(f"{name} has {len(xs)} entries but token_ids has {B} rows")
    sparse_on = cfg.sparse_rep_max_penalty != 0.0
    if sparse_on and (texts is None or len(texts) != B):
        raise ValueError(f"the sparse repetition penalty needs texts, one per row ({B})")
    names, gammas = [cfg.kind], [cfg.gamma]
    if cfg.dense_on:
        names.append("repetition")
        gammas.append(cfg.rep_gamma)
    out = torch.zeros(B, T, len(names), dtype=torch.float32)                 # (B, T, K)
    for b in range(B):
        L = int(lengths[b])
        if not 1 <= L <= T:
            raise ValueError(f"lengths[{b}] = {L} must be in [1, T={T}] (a response has at least one token)")
        r = sequence_reward(bool(correct[b]), L, bool(truncated[b]), cfg)
        if sparse_on and not correct[b] and not exceeded(L, cfg.max_len, cfg.exceed_margin, bool(truncated[b])):
            r += sparse_repetition_penalty(texts[b], cfg.sparse_rep_n, cfg.sparse_rep_max_penalty)
        out[b, L - 1, 0] = r                                                 # sparse: last generated token
        if cfg.dense_on:
            dense = dense_repetition_penalty(token_ids[b, :L].tolist(), cfg.rep_n, cfg.rep_penalty)
            out[b, :L, 1] = torch.tensor(dense, dtype=torch.float32)         # (L,)
    return out, gammas, names


# ----------------------------------------------------------------------------- CLI

def cosine_table(max_len: int, rows: int) -> list[tuple[int, float, float]]:
    """(length, correct reward, wrong reward) at rows+1 evenly spaced lengths 0..max_len."""
    lengths = [round(i * max_len / rows) for i in range(rows + 1)]
    return [(t, cosine_reward(True, t, max_len), cosine_reward(False, t, max_len)) for t in lengths]


def plot(max_len: int, out: str, rows: int) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: text table instead of {out}")
        print_table(max_len, rows)
        return
    ts = list(range(0, max_len))                          # t = T is the exceed case, drawn as points
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ts, [cosine_reward(True, t, max_len) for t in ts], label="correct")
    ax.plot(ts, [cosine_reward(False, t, max_len) for t in ts], label="wrong")
    ax.scatter([max_len], [cosine_reward(True, max_len, max_len)], color="k", label="exceeded length")
    ax.set(xlabel="generation length (tokens)", ylabel="reward", title="Cosine length-scaling reward")
    ax.legend()
    fig.tight_layout()
    import dist
    root, ext = os.path.splitext(out)
    with dist.atomic_open(out, "wb") as f:  # written aside, renamed when complete
        fig.savefig(f, format=ext[1:] or "png")
    print(f"wrote {out}")


def print_table(max_len: int, rows: int) -> None:
    print(f"{'length':>8} {'correct':>9} {'wrong':>9}")
    for t, rc, rw in cosine_table(max_len, rows):
        note = "  (length limit: exceed_reward)" if t == max_len else ""
        print(f"{t:>8d} {rc:>9.4f} {rw:>9.4f}{note}")


def check_args(args):
    """Every flag before any work: `error: --flag: got X, expected Y`, exit status 2."""
    import dist
    dist.require(args.max_len >= 1, "--max_len", args.max_len, "an integer >= 1")
    dist.require(args.rows >= 1, "--rows", args.rows, "an integer >= 1")
    if args.plot:
        dist.check_writable("--out", args.out, folder=False)


def main(argv=None):
    args = get_args(argv)
    check_args(args)
    if args.plot:
        plot(args.max_len, args.out, args.rows)
    else:
        print_table(args.max_len, args.rows)


if __name__ == "__main__":
    main()
