"""bench/gpu_check.sh --smoke: the GPU check's whole sequence at toy sizes on the CPU, its table and its JSON.

It is the only CPU run of bench_sample / bench_train / bench_ppo's --smoke and of the scripts under the flags the GPU
check uses, so a change that breaks one of them (a renamed function, a changed signature) fails here before it
costs GPU time."""
import json
import os
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import gpu_check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)  # as a user runs it: each part decides for itself
    r = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--smoke", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return r, json.loads((out / "gpu_check.json").read_text()), out


def test_smoke_runs_every_part_and_reports_it(smoke):
    r, report, out = smoke
    assert [p["part"] for p in report["parts"]] == gpu_check.PARTS
    assert report["smoke"] and report["device"] == "cpu (smoke)"
    for row in report["rows"]:
        assert set(row) == {"case", "measured", "target", "met"}
    met = {row["case"]: row["met"] for row in report["rows"]}
    # what truly needs CUDA says so instead of failing
    assert met["tests: CUDA graph decode, bf16 kernels"] == gpu_check.NO_GPU
    assert met["one SFT step (torchrun, 1 rank)"].startswith(gpu_check.NO_GPU)
    assert met["one PPO iteration (torchrun, 1 rank)"].startswith(gpu_check.NO_GPU)
    # everything else ran on the CPU
    assert met["tests: kernels + sampler (CPU subset)"] is True
    assert met["one SFT step (CPU)"] is True and met["one PPO iteration (CPU)"] is True
    for part in ("sample-7b", "sample-1.5b", "train", "ppo-bench"):
        res = next(p for p in report["parts"] if p["part"] == part)
        assert res["status"] == "ok", f"{part}: {res['tail'][-1500:]}"
    assert met["sample tiny-b1 (CPU smoke)"] == gpu_check.NO_GPU  # ran; its speed target needs the GPU
    assert met["sample tiny-b8 (CPU smoke)"] == gpu_check.NO_GPU
    plan_rows = [row for row in report["rows"] if row["case"].startswith(("plan:", "memory plan"))]
    assert plan_rows and all(row["met"] in (gpu_check.NO_GPU, "not available") for row in plan_rows)
    assert (out / "logs" / "ppo.log").exists() and (out / "bench_train.json").exists()
    # the table on stdout has every case, and the exit status says nothing failed
    for row in report["rows"]:
        assert row["case"] in r.stdout
    assert "case" in r.stdout and "measured" in r.stdout and "met" in r.stdout
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_rows_from_results_files(tmp_path):
    """The targets, from hand-made results files of the GPU run's shapes: 85% of roofline, 20x / 2x transformers,
    40% MFU, 60% memory, 15% plan error."""
    out = str(tmp_path)
    _, rows = gpu_check.part_sample("7b", True, out)
    with open(tmp_path / "bench_sample_7b.json", "w") as f:
        json.dump({"cases": [{"case": "7b-b1", "ours": {"decode_tok_s": 290.0, "e2e_tok_s": 280.0},
                              "roofline_tok_s": 330.0, "roofline_frac": 290 / 330, "hf": {}}]}, f)
    (r7,) = rows({"rc": 0, "tail": ""})
    assert r7["met"] is True and "88%" in r7["measured"]  # 290 / 330 = 0.879
    _, rows = gpu_check.part_sample("1.5b", True, out)
    with open(tmp_path / "bench_sample_1.5b.json", "w") as f:
        json.dump({"cases": [{"case": "1.5b-b64", "ours": {"e2e_tok_s": 9000.0, "decode_tok_s": 9500.0},
                              "hf": {"dynamic": {"e2e_tok_s": 400.0, "ours_over_hf": 22.5},
                                     "static": {"e2e_tok_s": 5000.0, "ours_over_hf": 1.8}}}]}, f)
    dyn, static = rows({"rc": 0, "tail": ""})
    assert dyn["met"] is True and static["met"] is False
    _, rows = gpu_check.part_train(True, out)
    with open(tmp_path / "bench_train.json", "w") as f:
        json.dump({"paths": {"chunked": {"mfu": 0.41, "tokens_per_s": 1.0}, "naive": {"mfu": 0.3}},
                   "memory_ratio": 0.61}, f)
    mfu, mem = rows({"rc": 0, "tail": ""})
    assert mfu["met"] is True and mem["met"] is False
    _, rows = gpu_check.part_plan(True, out)
    with open(tmp_path / "plan.json", "w") as f:
        json.dump({"phases": [{"phase": "score", "peak_gib": 11.4, "measured_gib": 10.0},
                              {"phase": "train", "peak_gib": 11.6, "measured_gib": 10.0}]}, f)
    score, train = rows({"rc": 0, "tail": ""})
    assert score["met"] is True and train["met"] is False  # 14% and 16% off
    na = rows({"rc": 2, "tail": "ppo.py: error: unrecognized arguments: --plan --measure"})
    assert na[0]["met"] == "not available"


def test_counts_from_pytest_summary():
    assert gpu_check.pytest_counts("x\n3 failed, 40 passed, 2 skipped, 1 error in 9.1s") == \
        {"failed": 3, "passed": 40, "skipped": 2, "error": 1}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_refuses_the_gpu_run_without_a_gpu():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--smoke" in r.stderr
