"""Throughput of verify.py on realistic MATH-500 responses (prints numbers; asserts nothing).

Each MATH-500 problem gives four responses: its reference solution as the "reasoning" (its own
\\boxed removed) followed by "so the answer is $\\boxed{X}$", with X = the gold answer, the gold
reformatted (\\dfrac, spaces, x = ...), the gold with its last digit changed, and another problem's
gold. So half are right, half wrong, and the mix exercises the string fast path, the number fast
path and the sympy path.

    python bench/bench_verify.py                 # in-process checks/s (one core) and grade_batch
    python bench/bench_verify.py --repeats 5

Measured numbers are printed; `is_correct` is timed cold (all caches cleared) and warm, and again
on the same responses padded to --long_chars (long-CoT length: extraction scans the whole text).
The goal is >= 2,000 typical checks/s on one core.
"""
import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, fields

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import verify  # noqa: E402


@dataclass
class Args:
    data: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                             "math500.jsonl")  # MATH-500 JSONL (id, problem, answer, solution)
    repeats: int = 3  # timing repeats; the best is reported
    workers: int = 0  # grade_batch workers (0 = min(8, cpu count))
    long_chars: int = 16000  # also time responses padded to about this length (a long CoT of ~4k tokens)


def _perturb(gold: str) -> str:
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    if not digits:
        return gold + "+1"
    i = digits[-1]
    return gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1:]


def _reformat(gold: str) -> str:
    g = re.sub(r" (?![a-zA-Z])", "", gold.replace("\\frac", "\\dfrac"))
    return "x = " + g if re.fullmatch(r"-?[\d.]+", g) else re.sub(r"([+=,]|\\cdot)", r" \1 ", g)


def build(path: str, pad_to: int = 0):
    rows = [json.loads(line) for line in open(path)]
    texts, golds, expected = [], [], []
    for i, r in enumerate(rows):
        reasoning = r["solution"].replace("\\boxed", "")
        reasoning = reasoning * max(1, pad_to // max(1, len(reasoning)))
        other = rows[(i + 7) % len(rows)]["answer"]
        for ans, ok in ((r["answer"], True), (_reformat(r["answer"]), True), (_perturb(r["answer"]), False),
                        (other, other == r["answer"])):
            texts.append(f"{r['problem']}\n\n{reasoning}\n\nSo the answer is $\\boxed{{{ans}}}$.")
            golds.append(r["answer"])
            expected.append(ok)
    return texts, golds, expected


def time_cold(texts, golds, repeats):
    best = float("inf")
    for _ in range(repeats):
        clear_caches()
        t0 = time.perf_counter()
        got = [verify.is_correct(t, g) for t, g in zip(texts, golds)]
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best, got


def clear_caches():
    for f in (verify._normalize, verify._parse_expr, verify._value, verify._math_equal):
        f.cache_clear()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(Args):
        p.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    a = p.parse_args()
    texts, golds, expected = build(a.data)
    n = len(texts)
    print(f"{n} responses, mean length {sum(map(len, texts)) / n:.0f} chars, {sum(expected)} right / "
          f"{n - sum(expected)} wrong")

    cold, got = time_cold(texts, golds, a.repeats)
    t0 = time.perf_counter()
    [verify.is_correct(t, g) for t, g in zip(texts, golds)]
    warm = n / (time.perf_counter() - t0)
    agree = sum(x == y for x, y in zip(got, expected))
    print(f"is_correct, one core, cold caches: {cold:,.0f} checks/s")
    print(f"is_correct, one core, warm caches: {warm:,.0f} checks/s")
    print(f"agreement with the construction: {agree}/{n} (differences: a perturbed digit inside a unit)")

    long_texts, long_golds, _ = build(a.data, a.long_chars)
    mean = sum(map(len, long_texts)) / len(long_texts)
    print(f"is_correct, one core, cold caches, {mean:,.0f}-char responses: "
          f"{time_cold(long_texts, long_golds, a.repeats)[0]:,.0f} checks/s")

    clear_caches()
    t0 = time.perf_counter()
    verify.grade_batch(texts[:8], golds[:8], workers=a.workers)
    print(f"grade_batch pool start: {time.perf_counter() - t0:.2f} s (once; the pool is reused)")
    best = float("inf")
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        res = verify.grade_batch(texts, golds, workers=a.workers)
        best = min(best, time.perf_counter() - t0)
    nw = a.workers or min(8, os.cpu_count() or 1)
    print(f"grade_batch, {nw} workers (warm worker caches after the first repeat): {n / best:,.0f} checks/s; "
          f"same answers as is_correct: {[r.correct for r in res] == got}")
    verify.close_pool()


if __name__ == "__main__":
    main()
