"""Throughput of verify.py on realistic MATH-500 responses (prints numbers; asserts nothing).

Each MATH-500 problem gives four responses: its reference solution as the "reasoning" (its own
\\boxed removed) followed by "so the answer is $\\boxed{X}$", with X = the gold answer, the gold
reformatted (\\dfrac, spaces, x = ...), the gold with its last digit changed, and another problem's
gold. So half are right, half wrong, and the mix exercises the string fast path, the number fast
path and the sympy path.

    python bench/bench_verify.py                 # in-process checks/s (one core) and grade_batch
    python bench/bench_verify.py --repeats 5
    python bench/bench_verify.py --compare math-verify   # differential test against Math-Verify

--compare math-verify runs our verifier and Math-Verify (a dev-time oracle only: `pip install
"math-verify[antlr4_13_2]"`; never a runtime dependency) on the project's labelled cases
(tests/test_verify.py, tests/verify_cases.py) and on generated pairs: every MATH train / MATH-500 gold
boxed in a few response templates, against itself (right) and against perturbations (wrong: last
digit changed, sign flipped, interval bracket flipped, list element dropped). It prints the
disagreement counts and lists each disagreement (also written to --compare_out as JSONL).

Measured numbers are printed; `is_correct` is timed cold (all caches cleared) and warm, and again
on the same responses padded to --long_chars (long-CoT length: extraction scans the whole text).
The goal is >= 2,000 typical checks/s on one core and a p50 latency <= 1 ms per check.
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
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
    compare: str = ""  # "math-verify": differential test against Math-Verify instead of timing
    compare_limit: int = 0  # use only the first N generated golds (0 = all of MATH train + MATH-500)
    compare_out: str = os.path.join(tempfile.gettempdir(), "verify_disagreements.jsonl")  # one JSON object a line
    show: int = 40  # disagreements printed per group


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


def latencies(texts, golds):
    """Per-check wall time in ms, cold caches (each pair graded once)."""
    clear_caches()
    out = []
    for t, g in zip(texts, golds):
        t0 = time.perf_counter()
        verify.is_correct(t, g)
        out.append((time.perf_counter() - t0) * 1e3)
    return sorted(out)


def pct(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ---- differential testing against Math-Verify ----------------------------------------------------------
TEMPLATES = [
    "Let me solve this step by step.\n...\nSo the answer is $\\boxed{%s}$.",
    "We compute carefully.\n\nThe final answer is $%s$.",
    "<think>\nTry \\boxed{0}... no, that is wrong.\n</think>\nFinal Answer: $\\boxed{%s}$",
]


def perturbations(gold: str):
    """(name, wrong answer) pairs; the construction says each is wrong (except degenerate cases like -0)."""
    out, flip = [], {"(": "[", "[": "(", ")": "]", "]": ")"}
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    if digits:
        out.append(("last digit", _perturb(gold)))
    if re.search(r"[1-9]", gold):  # -0 would be the same answer
        out.append(("sign", gold[1:].lstrip() if gold.startswith("-") else "-" + gold))
    if gold[:1] in "([" and gold[-1:] in ")]" and "," in gold:  # flip a bracket next to a finite end
        if not re.match(r"[(\[]\s*-\s*\\infty", gold):
            out.append(("bracket", flip[gold[0]] + gold[1:]))
        elif not re.search(r"\\infty\s*[)\]]$", gold):
            out.append(("bracket", gold[:-1] + flip[gold[-1]]))
    parts = verify._split_top(gold, ",")
    if len(parts) > 1:
        out.append(("drop element", ",".join(parts[:-1])))
    return out


def compare_pairs(data_dir: str, limit: int):
    """(source, response, gold, label) for the labelled cases and the generated pairs."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from verify_cases import CASES as NEW
    pairs = [("cases:" + cat, t, g, e) for t, g, e, cat in NEW]
    try:
        from test_verify import CASES as OLD  # needs pytest, as the tests do
        pairs += [("cases:test_verify", t, g, e) for t, g, k, e in OLD if k == "math"]
    except ImportError as e:
        print(f"(tests/test_verify.py cases skipped: {e})")
    golds = []
    for name in ("math500.jsonl", "math_train.jsonl"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            golds += [json.loads(line)["answer"] for line in open(path)]
        else:
            print(f"({path} not found: generated pairs from it skipped)")
    golds = list(dict.fromkeys(golds))[:limit or None]
    for g in golds:
        for i, tpl in enumerate(TEMPLATES):
            pairs.append((f"self:template{i}", tpl % g, g, True))
        for name, wrong in perturbations(g):
            if wrong.strip() and wrong != g:
                pairs.append(("perturbed:" + name, TEMPLATES[0] % wrong, g, False))
    return pairs


def compare_math_verify(a):
    try:
        from math_verify import parse, verify as mv_verify
    except ImportError:
        print("Math-Verify is not installed. It is a dev-time oracle only (never a runtime dependency):\n"
              "    pip install 'math-verify[antlr4_13_2]'\n"
              "then rerun: python bench/bench_verify.py --compare math-verify")
        return
    pairs = compare_pairs(os.path.dirname(a.data), a.compare_limit)
    print(f"{len(pairs)} pairs: {Counter(p[0].split(':')[0] for p in pairs)}")
    gold_cache = {}

    def mv(text, gold):
        try:
            if gold not in gold_cache:
                g = gold if "\\boxed" in gold or "$" in gold else "$\\boxed{" + gold + "}$"
                gold_cache[gold] = parse(g)
            return bool(mv_verify(gold_cache[gold], parse(text)))
        except Exception:  # noqa: BLE001 -- the oracle's own failures count as "not correct"
            return False

    rows, t_ours, t_mv = [], [], []
    for n, (src, text, gold, label) in enumerate(pairs):
        t0 = time.perf_counter()
        ours = verify.grade(text, gold)
        t1 = time.perf_counter()
        theirs = mv(text, gold)
        t_ours.append((t1 - t0) * 1e3)
        t_mv.append((time.perf_counter() - t1) * 1e3)
        if ours.correct != theirs:
            rows.append({"source": src, "gold": gold, "answer": ours.extracted, "label": label, "ours": ours.correct,
                         "math_verify": theirs, "reason": ours.reason, "text": text[-300:]})
        if (n + 1) % 5000 == 0:
            print(f"  {n + 1}/{len(pairs)} pairs, {len(rows)} disagreements so far", flush=True)
    for name, ts in (("ours", sorted(t_ours)), ("Math-Verify", sorted(t_mv))):
        print(f"{name:>12}: {len(ts) / sum(ts) * 1e3:,.0f} checks/s, latency p50 {pct(ts, 0.5):.3f} ms, "
              f"p99 {pct(ts, 0.99):.2f} ms, max {ts[-1]:.0f} ms, over 5 s: {sum(t > 5000 for t in ts)}")
    ours_wrong = [r for r in rows if r["ours"] != r["label"]]
    print(f"disagreements: {len(rows)} of {len(pairs)} pairs; by the label, ours wrong in {len(ours_wrong)}, "
          f"Math-Verify wrong in {len(rows) - len(ours_wrong)}")
    print("by source:", dict(Counter((r["source"], "ours wrong" if r["ours"] != r["label"] else "MV wrong")
                                     for r in rows)))
    with open(a.compare_out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for title, group in (("ours disagrees with the label", ours_wrong),
                         ("Math-Verify disagrees with the label", [r for r in rows if r["ours"] == r["label"]])):
        print(f"\n---- {title}: {len(group)} (first {a.show}) ----")
        for r in group[:a.show]:
            print(f"[{r['source']}] label={r['label']} ours={r['ours']} MV={r['math_verify']}  "
                  f"gold={r['gold']!r}  answer={r['answer']!r}")
    print(f"\nall disagreements: {a.compare_out}")


def clear_caches():
    for f in (verify._normalize, verify._parse_expr, verify._value, verify._math_equal):
        f.cache_clear()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(Args):
        p.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    a = p.parse_args()
    if a.compare:
        if a.compare != "math-verify":
            p.error(f"--compare: only 'math-verify' is supported, got {a.compare!r}")
        return compare_math_verify(a)
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
    lat = latencies(texts, golds)
    print(f"latency per check, cold caches: p50 {pct(lat, 0.5):.3f} ms, p90 {pct(lat, 0.9):.3f} ms, "
          f"p99 {pct(lat, 0.99):.3f} ms, max {lat[-1]:.1f} ms")

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
