"""Run the project's scripts as a user would (one process or torchrun with 2 ranks) and read their metrics."""
import json
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
    """OUT/metrics.jsonl -> ({key: training row}, {key: eval row}); a row logged twice (resume): the last wins."""
    train, ev = {}, {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        (ev if "eval/accuracy" in row else train)[row[key]] = row
    return train, ev
