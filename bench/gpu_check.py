"""Everything that needs a GPU, in one command: <= 8 minutes on one H200, rerunnable at once after a fix.

    bash bench/gpu_check.sh                       # on the GPU machine (same as python bench/gpu_check.py)
    bash bench/gpu_check.sh --smoke               # any CPU: the same sequence at toy sizes (tests/test_gpu_check.py)
    bash bench/gpu_check.sh --parts tests,train   # a subset (names below); --budget-s 480 is the total time cap

Parts, in order (each a subprocess with its own time cap, all capped together by --budget-s; a part that fails or
runs out of time is recorded and the next one runs):
  tests      pytest tests/test_kernels.py tests/test_sample.py on CUDA: the Triton kernels in bf16 at real
             vocabulary sizes, and the test_cuda_* sampler tests (the CUDA-graph decode step against the no-cache
             loop and transformers' greedy generate, reproducible draws, refills inside the graph, reuse of a kept
             graph, slots from free memory)
  sft, ppo   one SFT step and one PPO iteration of the tiny model, bf16, Triton backend, gradient checkpointing:
  sft-tr,    one process, then under `torchrun --nproc_per_node 1` (NCCL)
  ppo-tr
  sample-7b  bench/bench_sample.py 7B batch 1, 128 new tokens: decode tokens/s >= 85% of the memory-bandwidth
             roofline (bandwidth measured in the same run; ~300 tokens/s on an H200)
  sample-1.5b  bench/bench_sample.py 1.5B batch 64, 256 new tokens: >= 20x transformers' generate with its
             default cache, >= 2x with its static cache
  train      bench/bench_train.py 1.5B 4 x 2048: chunked MFU >= 40% (989 TFLOP/s dense bf16), chunked peak
             memory <= 60% of the naive path's
  ppo-bench  one bench/bench_ppo.py iteration at 1.5B (4 prompts x 4 samples x up to 256 new tokens, ragged): phase times
  plan       `ppo.py --plan --measure` on one GPU for qwen-math-1.5b at a reduced length: the plan within 15% of
             torch.cuda.max_memory_allocated, phase by phase ('not available' if ppo.py has no --plan)
Models are random weights built from configs (no download). The summary table (case, measured, target, met) is
printed at the end and written with every part's command, status, time and log tail to OUT/gpu_check.json;
full logs go to OUT/logs/. Exit status: 0 when every part ran and every target was met, 1 otherwise.

--smoke runs the same parts at toy sizes on the CPU: the tests' non-CUDA subset, the scripts on the tiny
model, the benchmarks' own --smoke, the plan without --measure; what truly needs CUDA (the CUDA tests, NCCL
under torchrun, the targets, the measured memory) is reported as 'skipped: no GPU'. CPU numbers say nothing
about speed. Not from the paper: engineering support only.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ["tests", "sft", "ppo", "sft-tr", "ppo-tr", "sample-7b", "sample-1.5b", "train", "ppo-bench", "plan"]
CAPS = {"tests": 150, "sft": 45, "ppo": 60, "sft-tr": 45, "ppo-tr": 60, "sample-7b": 100, "sample-1.5b": 120,
        "train": 60, "ppo-bench": 75, "plan": 90}  # seconds, each part at most (GPU)
NO_GPU = "skipped: no GPU"

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (what tests/test_gpu_check.py runs)")
parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "gpu_check"),
                    help="directory for gpu_check.json, logs/ and each part's own outputs")
parser.add_argument("--budget-s", type=float, default=470, help="total wall-clock cap over all parts (seconds)")
parser.add_argument("--parts", default="all", help=f"comma-separated subset of {','.join(PARTS)}")


def run(cmd, log, timeout, env=None):
    """Run cmd from the repository root, output to `log`. Returns (returncode or 'timeout', seconds, tail)."""
    t0 = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                rc = p.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)  # the part and its children (torchrun's workers)
                p.wait()
                rc = "timeout"
        except OSError as e:
            f.write(f"could not start: {e}\n")
            rc = "error"
    with open(log) as f:
        tail = f.read()[-3000:]
    return rc, time.time() - t0, tail


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def row(case, measured, target, met):
    """One line of the summary: met is True / False / a string ('skipped: no GPU', 'error: ...', ...)."""
    return {"case": case, "measured": measured, "target": target, "met": met}


def fmt_met(met):
    return {True: "yes", False: "NO"}.get(met, str(met)) if isinstance(met, bool) else str(met)


# ----------------------------------------------------------------------------------------------------
# Parts: each returns (command, rows from its output); `res` holds the run's returncode, time and log tail
# ----------------------------------------------------------------------------------------------------
def pytest_counts(tail):
    """{'passed': n, 'failed': n, 'skipped': n, 'error': n} from pytest's last summary line."""
    counts = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    return counts


def part_tests(a, cuda, out):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels.py",
           "tests/test_sample.py"]
    if not cuda:  # the CPU's share: what does not need the interpreter for long, and every CUDA test (skipped)
        cmd += ["-k", "cuda or kv_bytes or choose or bad_arg"]

    def rows(res):
        c = pytest_counts(res["tail"])
        if not c:
            return [row("tests: kernels + sampler", f"no pytest summary (rc {res['rc']})", "0 failed", False)]
        measured = ", ".join(f"{n} {k}" for k, n in c.items())
        ok = res["rc"] == 0 and not c.get("failed") and not c.get("error")
        out_rows = [row("tests: kernels + sampler" + ("" if cuda else " (CPU subset)"), measured, "0 failed", ok)]
        if not cuda:
            out_rows.append(row("tests: CUDA graph decode, bf16 kernels", "-", "0 failed", NO_GPU))
        return out_rows
    return cmd, rows


def tiny_script(script, cuda, out, torchrun):
    """sft.py / ppo.py on the tiny model, one step / one iteration."""
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
                                   if torchrun else [])
    tag = "-tr" if torchrun else ""
    dtype = ["--dtype", "bf16"] if cuda else []
    if script == "sft":
        args = ["sft.py", "--out", os.path.join(out, f"sft{tag}"), "--max-steps", "1", "--n-train", "64",
                "--batch-size", "8", "--micro-batch-size", "8", "--n-eval", "4", "--eval-max-new-tokens", "8",
                "--grad-ckpt"] + dtype
    else:
        args = ["ppo.py", "--sft-out", os.path.join(out, f"sft{tag}"), "--out", os.path.join(out, f"ppo{tag}"),
                "--iterations", "1", "--rollout-batch", "4", "--n-samples", "2", "--max-new-tokens", "12",
                "--train-batch", "4", "--micro-batch", "2", "--n-eval", "4", "--eval-every", "1",
                "--grad-ckpt"] + dtype
    name = {"sft": "one SFT step", "ppo": "one PPO iteration"}[script] + (" (torchrun, 1 rank)" if torchrun else "")

    def rows(res):
        ok = res["rc"] == 0
        return [row(name + ("" if cuda else " (CPU)"), f"rc {res['rc']}, {res['seconds']:.0f} s", "runs", ok)]
    return launcher + args, rows


def part_sample(shape, cuda, out):
    path = os.path.join(out, f"bench_sample_{shape}.json")
    if not cuda:  # the two tiny cases: batch 1 alone, batch 8 against transformers' default cache
        cmd = [sys.executable, "bench/bench_sample.py", "--smoke", "--out", path] + \
            (["--cases", "tiny-b1", "--hf", "none"] if shape == "7b" else ["--cases", "tiny-b8", "--hf", "dynamic"])
    elif shape == "7b":
        cmd = [sys.executable, "bench/bench_sample.py", "--cases", "7b-b1", "--max-new", "128", "--hf", "none",
               "--reps", "2", "--out", path]
    else:
        cmd = [sys.executable, "bench/bench_sample.py", "--cases", "1.5b-b64", "--max-new", "256", "--hf", "both",
               "--reps", "2", "--out", path]

    def rows(res):
        r = load_json(path)
        cases = [c for c in (r or {}).get("cases", []) if "ours" in c]
        if not cases:
            return [row(f"sample {shape}", f"no results (rc {res['rc']})", "-", False)]
        c = cases[0]
        if not cuda:
            return [row(f"sample {c['case']} (CPU smoke)", f"{c['ours']['e2e_tok_s']:,.0f} tok/s", "-", NO_GPU)]
        if shape == "7b":
            frac = c["roofline_frac"]
            return [row("sample 7B batch 1 decode", f"{c['ours']['decode_tok_s']:,.0f} tok/s = {100 * frac:.0f}% "
                        f"of roofline {c['roofline_tok_s']:,.0f}", ">= 85% of roofline", frac >= 0.85)]
        out_rows = []
        for impl, goal in (("dynamic", 20.0), ("static", 2.0)):
            h = c["hf"].get(impl, {})
            x = h.get("ours_over_hf")
            out_rows.append(row(f"sample 1.5B batch 64 vs HF {impl} cache",
                                f"{x:.1f}x ({c['ours']['e2e_tok_s']:,.0f} vs {h['e2e_tok_s']:,.0f} tok/s)"
                                if x else h.get("error", "not run"), f">= {goal:g}x", bool(x and x >= goal)))
        return out_rows
    return cmd, rows


def part_train(cuda, out):
    path = os.path.join(out, "bench_train.json")
    cmd = [sys.executable, "bench/bench_train.py", "--out", path] + \
        (["--smoke"] if not cuda else ["--batch", "4", "--seq", "2048", "--steps", "3", "--warmup", "1"])

    def rows(res):
        r = load_json(path)
        p = (r or {}).get("paths", {})
        if "chunked" not in p:
            return [row("train 1.5B 4x2048", f"no results (rc {res['rc']})", "-", False)]
        if not cuda:
            return [row("train (CPU smoke)", f"{p['chunked']['tokens_per_s']:,.0f} tok/s", "-", NO_GPU)]
        mfu = p["chunked"]["mfu"]
        out_rows = [row("train 1.5B 4x2048 chunked MFU", f"{100 * mfu:.1f}%", ">= 40%", mfu >= 0.40)]
        ratio = r.get("memory_ratio")
        out_rows.append(row("train peak memory chunked / naive", "-" if ratio is None else f"{100 * ratio:.0f}%",
                            "<= 60%", ratio is not None and ratio <= 0.60))
        return out_rows
    return cmd, rows


def part_ppo_bench(cuda, out):
    path = os.path.join(out, "bench_ppo.json")
    cmd = [sys.executable, "bench/bench_ppo.py", "--out", path, "--ragged"] + \
        (["--smoke"] if not cuda else ["--n-prompts", "4", "--n-samples", "4", "--max-new", "256",
                                       "--warmup-iters", "0", "--iters", "1"])  # rows of different lengths

    def rows(res):
        r = load_json(path)
        if not r or "mean_times_s" not in r:
            return [row("PPO iteration 1.5B", f"no results (rc {res['rc']})", "runs", False)]
        t = r["mean_times_s"]
        parts = ", ".join(f"{k} {v:.1f}" for k, v in t.items())
        return [row("PPO iteration " + ("1.5B" if cuda else "(CPU smoke)"), f"{r['mean_total_s']:.1f} s ({parts})",
                    "runs", True)]
    return cmd, rows


def part_plan(cuda, out):
    path = os.path.join(out, "plan.json")
    if os.path.exists(path):
        os.remove(path)
    if cuda:
        cmd = [sys.executable, "ppo.py", "--plan", "--measure", "--model", "qwen-math-1.5b", "--gpus", "1",
               "--gpu-memory", "141", "--max-prompt-len", "512", "--max-new-tokens", "1024", "--rollout-batch", "16",
               "--n-samples", "4", "--micro-tokens", "4096", "--grad-ckpt", "--plan-out", path]
    else:
        cmd = [sys.executable, "ppo.py", "--plan", "--model", "tiny", "--gpus", "1", "--gpu-memory", "1",
               "--max-prompt-len", "64", "--max-new-tokens", "64", "--rollout-batch", "8", "--n-samples", "2",
               "--plan-out", path]

    def rows(res):
        if "unrecognized arguments" in res["tail"] and "--plan" in res["tail"]:
            return [row("memory plan vs measured", "not available (ppo.py has no --plan)", "within 15%",
                        "not available")]
        r = load_json(path)
        if not r:
            return [row("memory plan vs measured", f"no plan JSON (rc {res['rc']})", "within 15%", False)]
        out_rows = []
        for ph in r.get("phases", []):
            plan, meas = ph.get("peak_gib"), ph.get("measured_gib")
            if not cuda or meas is None:
                out_rows.append(row(f"plan: {ph['phase']}", f"plan {plan:.3f} GiB, measured -", "within 15%",
                                    NO_GPU if not cuda else "no measurement"))
                continue
            err = abs(plan - meas) / max(meas, 1e-9)
            out_rows.append(row(f"plan: {ph['phase']}", f"plan {plan:.2f} GiB, measured {meas:.2f} GiB "
                                f"({100 * err:.0f}% off)", "within 15%", err <= 0.15))
        return out_rows or [row("memory plan vs measured", "no phases in the plan JSON", "within 15%", False)]
    return cmd, rows


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------
def build(name, cuda, out):
    if name == "tests":
        return part_tests(None, cuda, out)
    if name in ("sft", "ppo", "sft-tr", "ppo-tr"):
        return tiny_script(name.split("-")[0], cuda, out, name.endswith("-tr"))
    if name.startswith("sample-"):
        return part_sample(name.split("-", 1)[1], cuda, out)
    if name == "train":
        return part_train(cuda, out)
    if name == "ppo-bench":
        return part_ppo_bench(cuda, out)
    return part_plan(cuda, out)


def print_table(rows):
    w = max(len(r["case"]) for r in rows)
    wm = min(60, max(len(str(r["measured"])) for r in rows))
    head = f"{'case':<{w}}  {'measured':<{wm}}  {'target':<20}  met"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['case']:<{w}}  {str(r['measured']):<{wm}}  {str(r['target']):<20}  {fmt_met(r['met'])}")


def main(argv=None):
    a = parser.parse_args(argv)
    import torch  # after argparse: --help stays fast
    cuda = torch.cuda.is_available() and not a.smoke
    if not a.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: use --smoke for the CPU run of the same sequence")
    names = PARTS if a.parts == "all" else [p.strip() for p in a.parts.split(",") if p.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        parser.error(f"--parts: unknown {unknown}; known: {', '.join(PARTS)}")
    out = os.path.abspath(a.out)
    logs = os.path.join(out, "logs")
    shutil.rmtree(logs, ignore_errors=True)
    for d in ("sft", "sft-tr", "ppo", "ppo-tr"):  # run directories: fresh each time (the scripts resume otherwise)
        shutil.rmtree(os.path.join(out, d), ignore_errors=True)
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", "1")
    t_start = time.time()
    deadline = t_start + a.budget_s
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu (smoke)", "torch": torch.__version__,
              "smoke": a.smoke, "budget_s": a.budget_s, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": [],
              "rows": []}
    json_path = os.path.join(out, "gpu_check.json")
    for name in names:
        cmd, rows_of = build(name, cuda, out)
        left = deadline - time.time()
        if not cuda and name.endswith("-tr"):
            res = {"part": name, "cmd": cmd, "rc": None, "seconds": 0.0, "status": NO_GPU + " (NCCL)", "tail": ""}
            rows = [row(("one SFT step" if name == "sft-tr" else "one PPO iteration") + " (torchrun, 1 rank)", "-",
                        "runs", NO_GPU + " (NCCL)")]
        elif left < 5:
            res = {"part": name, "cmd": cmd, "rc": None, "seconds": 0.0, "status": "skipped: out of time", "tail": ""}
            rows = [row(name, "-", "-", "skipped: out of time")]
        else:
            cap = min(CAPS[name] if cuda else 300, left)
            print(f"[{time.time() - t_start:5.0f} s] {name}: {' '.join(cmd)}  (cap {cap:.0f} s)", flush=True)
            rc, secs, tail = run(cmd, os.path.join(logs, f"{name}.log"), cap, env)
            status = "ok" if rc == 0 else ("timeout" if rc == "timeout" else f"failed (rc {rc})")
            res = {"part": name, "cmd": cmd, "rc": rc, "seconds": secs, "status": status, "tail": tail}
            try:
                rows = rows_of(res)
            except Exception as e:  # a results file of an unexpected shape: record it, go on
                rows = [row(name, f"could not read results: {type(e).__name__}: {e}", "-", False)]
            if rc == "timeout":
                rows = [dict(r, met=f"timeout after {cap:.0f} s") if r["met"] is not True else r for r in rows]
            print(f"         {status} in {secs:.0f} s", flush=True)
        report["parts"].append(res)
        report["rows"].extend(rows)
        report["elapsed_s"] = time.time() - t_start
        with open(json_path + ".tmp", "w") as f:  # rewritten after every part: a run cut short keeps its rows
            json.dump(report, f, indent=2, default=str)
        os.replace(json_path + ".tmp", json_path)
    print_table(report["rows"])
    print(f"\n{report['device']}, {report['elapsed_s']:.0f} s; wrote {json_path} (logs in {logs})")
    failed = [r for r in report["rows"] if r["met"] is not True and not str(r["met"]).startswith("skipped")
              and r["met"] != "not available"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
