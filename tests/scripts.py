"""Run the project's scripts as a user would (one process or torchrun with 2 ranks) and read their metrics."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, args, torchrun=False, expect_rc=0, timeout=300):
    """`python SCRIPT ARGS` (or under torchrun --standalone with 2 CPU ranks) from the repository root; stdout."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] \
        if torchrun else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(launcher + [script] + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == expect_rc, f"rc {r.returncode}\n" + r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def read_metrics(out, key):
    """OUT/metrics.jsonl -> ({key: training row}, {key: eval row}); a torn or bad line fails, naming file and line."""
    import dist
    rows, torn = dist.read_log(str(out / "metrics.jsonl"))  # a bad line: ValueError naming file and line
    assert torn is None, f"{out / 'metrics.jsonl'}: torn last line {torn!r}"
    train, ev = {}, {}
    for row in rows:
        (ev if "eval/accuracy" in row else train)[row[key]] = row
    return train, ev
