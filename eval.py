"""Evaluation: sample answers, verify them, report accuracy, response length and reflection words.

    python eval.py --model runs/ppo/$(cat runs/ppo/latest)/policy --benchmarks math500,aime2024,theoremqa,mmlu_pro_1k
    python eval.py --model tiny --benchmarks classroom --n 4 --max-new-tokens 400
    torchrun --standalone --nproc_per_node 8 eval.py --model qwen-math-7b     # questions split across ranks
    python eval.py --plot runs/ppo/            # accuracy, length (and a PPO run's keywords) -> runs/ppo/curves.png

    from eval import evaluate
    metrics, records = evaluate(model, tok, rows, n=1)   # rows: dicts with problem, answer, kind (data.py)

`evaluate` is also what sft.py and ppo.py call for their periodic held-out evaluation. Under torchrun each
rank samples its share of the questions and the counts are summed over ranks; the samples do not depend on
the split. The defaults are the authors' evaluation protocol (PROTOCOL_SAMPLES below): AIME 2024 averaged over 16
samples per question, MATH-500, TheoremQA and MMLU-Pro-1k over 4, temperature 0.7, top-p 0.95, up to 16,384 new
tokens, TheoremQA text-only questions; accuracy with its standard error over questions (accuracy_se). A
qwen-math-7b start is evaluated with the RoPE theta ppo.py trains it with (model.LONG_CONTEXT; --rope-theta).
Writes OUT/<benchmark>.jsonl (one line per sample, all ranks', in question order) and OUT/summary.json, and
prints one table. `--plot RUN_DIR` draws a run's curves; for a PPO run also the frequency of the paper's Sec. 6
reflection keywords per iteration (KEYWORDS), which ppo.py logs. Departures from the paper: MMLU-Pro-1k is our
own seeded sample (data.py); our prompts and verifier (data.py, verify.py), not metagen's.
"""
import argparse
import json
import math
import os
import re
import sys

import torch

import dist
from sample import generate

REFLECTION_WORDS = ["wait", "recheck", "retry", "alternatively", "however", "rethink", "try again"]
# The keywords whose frequency the paper's Sec. 6 tracks during RL from the base model (a follow-up, RISE App. E.3,
# quotes the same five "following Yeo et al. (2025)"); ppo.py logs them per iteration, --plot draws them.
KEYWORDS = ["wait", "recheck", "alternatively", "retry", "however"]
# The authors' evaluation protocol (co-author tongyx361's metagen @ 6229ee6, configs/metagen/common/jobs/
# eval_reasoning_dlc.yaml): AIME 2024 averaged over 16 samples (:13-14, seeds 0..15), MATH-500, TheoremQA and
# MMLU-Pro-1k over 4 (:26-27, :39-40), each at temperature 0.7, top-p 0.95, up to 16,384 new tokens (:22-25).
PROTOCOL_SAMPLES = {"aime2024": 16, "math500": 4, "theoremqa": 4, "mmlu_pro_1k": 4}


def word_count(text: str, word: str) -> int:
    """Occurrences of `word` in text: case-insensitive, whole words ("waiting" is not "wait")."""
    return len(re.findall(r"\b" + word.replace(" ", r"\s+") + r"\b", text.lower()))


def reflection_counts(text: str) -> dict:
    """Occurrences of each reflection word (case-insensitive, whole words), as the paper counts them."""
    return {w: word_count(text, w) for w in REFLECTION_WORDS}


def keyword_frequency(texts) -> dict:
    """{keyword: occurrences per response}, averaged over `texts`, for each of the paper's Sec. 6 KEYWORDS."""
    n = max(len(texts), 1)
    return {w: sum(word_count(t, w) for t in texts) / n for w in KEYWORDS}


def samples_for(benchmark: str, n: int = 0) -> int:
    """Samples per question: n, or (n = 0) the protocol's: 16 for AIME 2024, 4 for the other benchmarks, 1 else."""
    return n or PROTOCOL_SAMPLES.get(benchmark, 1)


def accuracy_se(sum_q, sum_q2, questions):
    """Standard error of the accuracy, with questions as the sampling unit: the n samples of one question are
    not independent, so SE = sqrt(Var_q(a_q) / Q) over the per-question accuracies a_q (population variance),
    from their sum and sum of squares. With n = 1 this is the binomial sqrt(acc (1 - acc) / Q)."""
    if questions <= 0:
        return 0.0
    mean = sum_q / questions
    return math.sqrt(max(sum_q2 / questions - mean * mean, 0.0) / questions)


@torch.no_grad()
def evaluate(model, tokenizer, rows, n=1, temperature=0.7, top_p=0.95, max_new_tokens=16384, seed=0,
             batch_size=None, progress=False):
    """Returns (metrics, records). metrics: accuracy (over all samples) with its standard error (questions as
    the unit: accuracy_se), mean response length in tokens, truncation rate, reflection words per response,
    n (questions x samples, all ranks).
    records: this rank's per-sample dicts ("index": the question's position in rows)."""
    import verify
    from data import format_prompt
    positions = list(range(dist.rank(), len(rows), dist.world()))  # this rank's questions
    mine = [rows[i] for i in positions]
    prompts = [format_prompt(r["problem"], tokenizer, r.get("options")) for r in mine]
    outs = generate(model, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=progress,
                    keys=positions)  # same samples however the questions are split over ranks
    texts = [s.text for samples in outs for s in samples]
    golds = [r["answer"] for r, samples in zip(mine, outs) for _ in samples]
    kinds = [r.get("kind", "math") for r, samples in zip(mine, outs) for _ in samples]
    grades = verify.grade_batch(texts, golds, kinds) if texts else []
    records = []
    for pos, r, samples in zip(positions, mine, outs):
        for s in samples:
            g = grades[len(records)]
            records.append({"index": pos, "id": r.get("id"), "answer": r["answer"], "response": s.text,
                            "extracted": g.extracted, "correct": bool(g.correct), "num_tokens": len(s.token_ids),
                            "finish_reason": s.finish_reason, "reflections": sum(reflection_counts(s.text).values())})
    per_question = {}
    for r in records:
        per_question.setdefault(r["index"], []).append(r["correct"])
    q_acc = [sum(ok) / len(ok) for ok in per_question.values()]  # each question's accuracy over its n samples
    local = torch.tensor([len(records), sum(r["correct"] for r in records), sum(r["num_tokens"] for r in records),
                          sum(r["finish_reason"] == "length" for r in records), sum(r["reflections"] for r in records),
                          len(q_acc), sum(q_acc), sum(a * a for a in q_acc)], dtype=torch.float64)
    count, correct, length, trunc, refl, questions, sum_q, sum_q2 = dist.sum_tensor(local).tolist()
    count = max(count, 1)
    acc = correct / count
    metrics = {"accuracy": acc, "accuracy_se": accuracy_se(sum_q, sum_q2, questions), "mean_length": length / count,
               "truncation_rate": trunc / count, "reflections_per_response": refl / count, "n": int(count)}
    return metrics, records


# ----------------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------------
def read_curves(run_dir):
    """(train, held_out) rows of a run's metrics.jsonl: step, accuracy, response length."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no metrics.jsonl (expected a run directory of sft.py or ppo.py)")
    train, held = {}, {}
    rows, torn = dist.read_log(path)  # a bad line: ValueError naming file and line
    if torn is not None:  # a run killed (or still running) while writing its last line; its resume drops it too
        print(f"{path}: ignoring a torn last line: {torn[:80]!r}", file=sys.stderr)
    for r in rows:
        step = r.get("iteration", r.get("step"))
        if "eval/accuracy" in r:
            held[step] = (r["eval/accuracy"], r["eval/mean_length"])
        elif "accuracy" in r:
            train[step] = (r["accuracy"], r["response_length"])  # one row per step (a resume trims the log)
    return sorted((k, *v) for k, v in train.items()), sorted((k, *v) for k, v in held.items())


def read_keywords(run_dir):
    """[(iteration, {keyword: occurrences per response})] of the rollouts of a ppo.py run's metrics.jsonl."""
    rows, _ = dist.read_log(os.path.join(run_dir, "metrics.jsonl"))  # read_curves reported a torn line
    found = {}
    for r in rows:
        kw = {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("keywords/")}
        if kw:
            found[r.get("iteration", r.get("step"))] = kw
    return sorted(found.items())


def curves_figure(run_dir):
    """Accuracy and response length against step (the paper's view of length stability) and, for a PPO run, the
    frequency of each reflection keyword (the paper's Sec. 6 plot): a matplotlib figure, one panel each."""
    train, held = read_curves(run_dir)
    keywords = read_keywords(run_dir)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3 if keywords else 2, figsize=(15 if keywords else 10, 3.6))
    ax1, ax2 = axes[0], axes[1]
    for rows, style, name in ((train, "-", "rollouts"), (held, "o-", "held-out")):
        if rows:
            steps, acc, length = zip(*rows)
            ax1.plot(steps, acc, style, label=name)
            ax2.plot(steps, length, style, label=name)
    ax1.set(xlabel="step", ylabel="accuracy", title="accuracy")
    ax2.set(xlabel="step", ylabel="tokens", title="mean response length")
    ax1.legend(), ax2.legend()
    if keywords:
        steps = [k for k, _ in keywords]
        order = {w: i for i, w in enumerate(KEYWORDS)}  # the paper's keywords first, in its order
        for w in sorted({w for _, kw in keywords for w in kw}, key=lambda w: (order.get(w, len(order)), w)):
            axes[2].plot(steps, [kw.get(w, 0.0) for _, kw in keywords], "-", label=w)
        axes[2].set(xlabel="step", ylabel="per response", title="reflection keywords (rollouts)")
        axes[2].legend()
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    return fig


def plot_curves(run_dir, out=None):
    """curves_figure(run_dir) -> PNG (default RUN_DIR/curves.png)."""
    out = out or os.path.join(run_dir, "curves.png")
    fig = curves_figure(run_dir)
    import matplotlib.pyplot as plt
    with dist.atomic_open(out, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Evaluate a model on math benchmarks, or plot a run's curves")
    a = ap.add_argument
    a("--model", default="tiny", help="alias, HF dir or hub id (model.load)")
    a("--benchmarks", default="math500,aime2024,theoremqa,mmlu_pro_1k", help="comma list; 'classroom' too")
    a("--n", "--n-samples", dest="n", type=int, default=0,
      help="samples per question; 0: the authors' protocol, 16 for aime2024 and 4 for the other benchmarks (1 for "
      "classroom) (under torchrun spell it --n-samples: torchrun's parser takes --n)")
    a("--limit", type=int, default=0, help="first K questions of each benchmark (0: all)")
    a("--digits", type=int, default=3, help="classroom: digits per operand")
    a("--max-digits", type=int, default=0, help="classroom: a mix of sizes, digits..max-digits (0: none)")
    a("--temperature", type=float, default=0.7, help="paper's setting")
    a("--top-p", type=float, default=0.95, help="paper's setting")
    a("--max-new-tokens", type=int, default=16384, help="paper's setting")
    a("--kv-slots", "--batch-size", dest="kv_slots", type=int, default=0,
      help="sampler cache slots decoded together; 0: as many as fit in free memory (sample.kv_budget)")
    a("--seed", type=int, default=0, help="sampling seed")
    a("--dtype", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 on GPU, fp32 on CPU")
    a("--rope-theta", type=float, help="RoPE theta to evaluate with; 0: the checkpoint's own [qwen-math-7b: "
      "model.LONG_CONTEXT, as ppo.py trains it; others: the checkpoint's]")
    a("--out", default="runs/eval", help="per-sample JSONL and summary.json go here")
    a("--plot", metavar="RUN_DIR", help="instead of evaluating: draw RUN_DIR/metrics.jsonl to RUN_DIR/curves.png")
    return ap.parse_args(argv)


def check_args(args):
    """Every flag, before the model loads: `error: --flag: got X, expected Y`, exit status 2. Returns the
    benchmarks' rows ({name: rows}), read here so that a missing or bad file stops the run before any work."""
    import data
    req = dist.require
    if args.plot:
        path = os.path.join(args.plot, "metrics.jsonl")
        req(os.path.isfile(path), "--plot", args.plot, "a run directory of sft.py or ppo.py (with metrics.jsonl)")
        dist.check_writable("--plot", args.plot)
        return {}
    req(args.n >= 0, "--n", args.n, "an integer >= 0 (samples per question; 0: the protocol's)")
    req(args.rope_theta is None or args.rope_theta >= 0, "--rope-theta", args.rope_theta, "a number >= 0")
    req(args.limit >= 0, "--limit", args.limit, "an integer >= 0 (0: all questions)")
    req(args.temperature >= 0, "--temperature", args.temperature, ">= 0 (0: greedy)")
    req(0 < args.top_p <= 1, "--top-p", args.top_p, "a number in (0, 1]")
    req(args.max_new_tokens >= 1, "--max-new-tokens", args.max_new_tokens, "an integer >= 1")
    req(1 <= args.digits <= 18, "--digits", args.digits, "an integer in 1..18 (classroom operands)")
    req(args.max_digits == 0 or args.digits <= args.max_digits <= 18, "--max-digits", args.max_digits,
        f"0 (no mix) or an integer in --digits ({args.digits})..18")
    req(args.kv_slots >= 0, "--kv-slots", args.kv_slots, "an integer >= 0 (0: as many as fit)")
    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    known = sorted(data.BENCHMARKS) + ["classroom"]
    req(names, "--benchmarks", repr(args.benchmarks), f"a comma list of {', '.join(known)}")
    for name in names:
        req(name in known, "--benchmarks", name, f"one of {', '.join(known)}")
    rows = {}
    for name in names:
        try:
            if name == "classroom":
                rows[name] = data.classroom(args.limit or 200, seed=1, split="test", digits=args.digits,
                                            max_digits=args.max_digits or None)
            else:
                rows[name] = data.load_benchmark(name)
        except data.DataError as e:
            dist.arg_error("--benchmarks", str(e))
        rows[name] = rows[name][:args.limit] if args.limit else rows[name]
    dist.check_writable("--out", args.out)
    return rows


def main(argv=None):
    args = parse_args(argv)
    benchmarks = check_args(args)
    if args.plot:
        print(f"wrote {plot_curves(args.plot)}")
        return None
    import model as M
    rank, world, device = dist.init()
    dtype = dist.compute_dtype(args.dtype, device)
    theta = M.LONG_CONTEXT.get(args.model, {}).get("rope_theta") if args.rope_theta is None else args.rope_theta
    net, tok = M.load(args.model, dtype=dtype, device=device, rope_theta=theta or None)
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for name, rows in benchmarks.items():
        n = samples_for(name, args.n)
        dist.print0(f"{name}: {len(rows)} questions x {n} samples")
        metrics, records = evaluate(net, tok, rows, n=n, temperature=args.temperature, top_p=args.top_p,
                                    max_new_tokens=args.max_new_tokens, seed=args.seed,
                                    batch_size=args.kv_slots, progress=rank == 0)
        gathered = dist.gather_objects(records)  # rank 0 writes every rank's samples, in question order
        if rank == 0:
            with dist.atomic_open(os.path.join(args.out, f"{name}.jsonl")) as f:  # .tmp, renamed when complete
                for r in sorted((r for part in gathered for r in part), key=lambda r: r["index"]):  # stable
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        summary[name] = metrics
    if rank == 0:
        dist.write_atomic(os.path.join(args.out, "summary.json"),
                          json.dumps({"args": vars(args), "results": summary}, indent=2))
        print(format_table(summary))
    return summary


def format_table(summary):
    head = f"{'benchmark':<14}{'n':>6}{'accuracy':>16}{'length':>9}{'truncated':>11}{'reflections':>13}"
    lines = [head, "-" * len(head)]
    for name, m in summary.items():
        acc = f"{100 * m['accuracy']:.1f} +- {100 * m['accuracy_se']:.1f}"
        lines.append(f"{name:<14}{m['n']:>6}{acc:>16}{m['mean_length']:>9.0f}{100 * m['truncation_rate']:>10.1f}%"
                     f"{m['reflections_per_response']:>13.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    dist.cleanup()  # under torchrun: the ranks meet, the group goes, the process ends here
