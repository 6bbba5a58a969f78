"""sft.py: the response-only loss mask, the batch plan, the schedule, and whole runs on the tiny model.

The whole runs (a few steps, 64 classroom problems, 4 held-out problems) are subprocesses with one thread each
(OMP_NUM_THREADS=1: two-rank runs on two cores, and no slowdown from oversubscribed threads). One uninterrupted
run, `run_a`, is shared: it is the reference for loss falling, the printed summary line, the two-rank run and
the kill-and-resume run.
"""
import json
import math
import os
import re
import signal
from types import SimpleNamespace

import pytest
import torch

import dist
import model as M
from scripts import read_metrics, run_script
import sft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--max-steps", "6", "--n-train", "64", "--batch-size", "8", "--micro-batch-size", "4", "--n-eval", "4",
         "--eval-max-new-tokens", "8", "--save-every", "2", "--eval-every", "3"]


def run(args, torchrun=False, expect_rc=0):
    return run_script("sft.py", args, torchrun, expect_rc)


def metrics(out):
    return read_metrics(out, "step")


def newest(out):
    """OUT/checkpoint-N, the newest complete checkpoint of a run."""
    return dist.latest_checkpoint(str(out))


def assert_same_weights(dir_a, dir_b, atol=0.0):
    a, _ = M.load(str(dir_a))
    b, _ = M.load(str(dir_b))
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=atol, rtol=0), k


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft_a")
    stdout = run(FLAGS + ["--out", str(out)])
    return out, stdout


@pytest.fixture
def one_thread():
    """In-process runs: one thread, as in the subprocesses (much faster on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------------
def test_collate_masks_response_tokens_only():
    # example 0: prompt [1, 2], response [3, 4, 5]; example 1: prompt [6, 7], response [8]; pad id 0
    ids, labels, mask = sft.collate([([1, 2, 3, 4, 5], 2), ([6, 7, 8], 2)], pad_id=0, device="cpu")
    assert ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]]
    assert labels[:, :4].tolist() == [[2, 3, 4, 5], [7, 8, 0, 0]]  # labels[t] = ids[t + 1]
    # position t is in the loss when it predicts a response token: 1..3 (-> 3, 4, 5) and 1 (-> 8)
    assert mask.tolist() == [[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]]
    assert labels[mask.bool()].tolist() == [3, 4, 5, 8]  # exactly the response tokens, no prompt, no padding


def test_sft_loss_is_response_nll_over_step_tokens():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])  # (B, T) log-probs a stub model returns
    stub = lambda ids, labels: SimpleNamespace(logprobs=lp)  # noqa: E731
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    loss, m = sft.sft_loss(stub, None, None, mask, n_tokens=10)
    assert loss.item() == pytest.approx((2 + 3 + 5) / 10)
    assert m == {"nll_sum": pytest.approx(10.0), "tokens": 3.0}


def test_batch_plan_deterministic_disjoint_equal_size_bucketed():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 1000, (1003,), generator=gen).tolist()
    plan = sft.batch_plan(lengths, 4, seed=3, epoch=0)
    assert plan == sft.batch_plan(lengths, 4, seed=3, epoch=0)  # deterministic in (seed, epoch)
    assert plan != sft.batch_plan(lengths, 4, seed=3, epoch=1)
    assert plan != sft.batch_plan(lengths, 4, seed=4, epoch=0)
    flat = [i for b in plan for i in b]
    assert len(flat) == len(set(flat)) and set(flat) <= set(range(1003))  # each example at most once
    assert all(len(b) == 4 for b in plan)  # equal-size micro-batches
    assert len(plan) == 250  # windows of 200: 5 full windows (50 batches each); the 3 left over are dropped
    # length bucketing: a micro-batch holds neighbours in length order (random batches would spread ~600)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plan) / len(plan)
    assert spread < 50
    assert sorted(len(b) for b in sft.batch_plan([5] * 10, 4, 0, 0)) == [4, 4]  # 10 examples: 2 batches


def test_batches_are_planned_once_per_epoch(tmp_path, one_thread, monkeypatch):
    """The plan sorts all of a run's problems: made every step it took ~30% of replicate.py's short-CoT SFT.
    2 epochs of 4 steps: one plan to count the steps, then one per epoch, and epoch 1 trains on epoch 1's plan."""
    calls = []
    real = sft.batch_plan
    monkeypatch.setattr(sft, "batch_plan", lambda *a: calls.append(a[3]) or real(*a))
    sft.main(["--n-train", "32", "--epochs", "2", "--batch-size", "8", "--micro-batch-size", "4", "--n-eval", "2",
              "--eval-max-new-tokens", "4", "--eval-every", "100", "--out", str(tmp_path / "run")])
    assert calls == [0, 0, 1]


def test_lr_at_warmup_peak_cosine_end():
    f = lambda s: sft.lr_at(s, total=110, peak=1.0, warmup_steps=10, min_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1)  # warmup: peak * (step + 1) / warmup
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)  # cosine starts at the peak
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: the mean of peak and floor
    assert f(85) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # the floor, and it stays there


# ----------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------
def test_loss_falls_and_summary_line(run_a):
    out, stdout = run_a
    train, ev = metrics(out)
    assert sorted(train) == [1, 2, 3, 4, 5, 6]
    assert train[6]["loss"] < 0.9 * train[1]["loss"], [train[s]["loss"] for s in sorted(train)]
    assert all(math.isfinite(r["grad_norm"]) for r in train.values())
    assert sorted(ev) == [3, 6] and ev[6]["eval/n"] == 4  # --eval-every 3, and the final evaluation
    assert json.loads((out / "done.json").read_text())["n"] == 4
    last = stdout.strip().splitlines()[-1]
    assert re.match(r"held-out accuracy \d\.\d\d \(n=\d+\)", last), last
    assert newest(out) == str(out / "checkpoint-6")  # saved at 2, 4, 6; only the last one is kept (--keep-checkpoints 1)
    assert sorted(p.name for p in out.glob("checkpoint*")) == ["checkpoint-6"]
    M.load(newest(out))  # the checkpoint loads as a model


def test_two_ranks_match_one_process(run_a, tmp_path):
    one, _ = run_a
    two = tmp_path / "two"
    run(FLAGS + ["--out", str(two)], torchrun=True)
    t1, e1 = metrics(one)
    t2, e2 = metrics(two)
    assert sorted(t1) == sorted(t2) and sorted(e1) == sorted(e2)
    for s in t1:
        assert t2[s]["loss"] == pytest.approx(t1[s]["loss"], abs=1e-5), s
        assert t2[s]["grad_norm"] == pytest.approx(t1[s]["grad_norm"], rel=1e-4), s
    for s in e1:  # the same held-out samples: evaluate() keys them globally
        for k in ("eval/accuracy", "eval/mean_length", "eval/n"):
            assert e2[s][k] == pytest.approx(e1[s][k]), (s, k)
    assert_same_weights(newest(one), newest(two), atol=1e-5)


def test_kill_and_resume_matches_uninterrupted(run_a, tmp_path):
    a, _ = run_a
    b = tmp_path / "b"
    run(FLAGS + ["--out", str(b), "--kill-at-step", "5"], expect_rc=-signal.SIGKILL)
    killed, _ = metrics(b)
    assert max(killed) == 5  # killed right after step 5; the last checkpoint is step 4's
    with open(b / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 3.6')  # as if killed while writing step 6's row
    stdout = run(FLAGS + ["--out", str(b)])
    assert f"resumed from {b / 'checkpoint-4'} at step 4" in stdout
    assert "dropped a torn last line" in stdout
    assert "dropped 1 row logged after the checkpoint at step 4" in stdout  # step 5's row: step 5 runs again
    lines = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]  # no step logged twice
    ta, ea = metrics(a)
    tb, eb = metrics(b)
    for s in range(1, 7):
        for k in ("loss", "lr", "grad_norm", "epoch"):
            assert tb[s][k] == pytest.approx(ta[s][k], rel=1e-6, abs=1e-9), (s, k)
    assert eb[6]["eval/accuracy"] == ea[6]["eval/accuracy"] and eb[6]["eval/mean_length"] == ea[6]["eval/mean_length"]
    assert_same_weights(newest(a), newest(b), atol=1e-6)


def test_two_ranks_killed_inside_a_save_resume_from_the_previous_checkpoint(run_a, tmp_path, monkeypatch):
    """Both ranks SIGKILLed right after writing their shards of checkpoint 4 (before its marker): the next start
    resumes from checkpoint 2 with the sharded trainer state (each rank reads its own half) and ends equal to one
    uninterrupted process."""
    a, _ = run_a
    b = tmp_path / "b"
    monkeypatch.setenv("LONGCOT_CRASH_AT", "trainer:4")
    run(FLAGS + ["--out", str(b)], torchrun=True, expect_rc=1)  # torchrun reports its killed workers with 1
    monkeypatch.delenv("LONGCOT_CRASH_AT")
    assert not (b / "checkpoint-4" / "complete.json").exists()  # its shards are written, its marker is not
    assert dist.latest_checkpoint(str(b)) == str(b / "checkpoint-2")
    from torch.distributed.checkpoint import FileSystemReader
    md = FileSystemReader(str(b / "checkpoint-2" / "trainer")).read_metadata().state_dict_metadata
    big = {k: len(v.chunks) for k, v in md.items() if hasattr(v, "chunks") and v.size.numel() > 1}
    assert len(big) > 100 and set(big.values()) == {2}, big  # weights, Adam moments: a shard from each rank
    stdout = run(FLAGS + ["--out", str(b)], torchrun=True)
    assert f"resumed from {b / 'checkpoint-2'} at step 2" in stdout
    ta, tb = metrics(a)[0], metrics(b)[0]
    lines = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]
    for s in range(1, 7):
        assert tb[s]["loss"] == pytest.approx(ta[s]["loss"], abs=1e-5), s
    assert sorted(p.name for p in b.glob("checkpoint*")) == ["checkpoint-6"]
    assert_same_weights(newest(a), newest(b), atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------
def refused(argv, capsys):
    """sft.main(argv) refuses its input before any work (exit 2, one line naming the flag): that line."""
    with pytest.raises(SystemExit) as e:
        sft.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_data_file_names_file_and_line(tmp_path, one_thread, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=?", "response": "2"}\n{"prompt": "2+2=?"}\n')
    args = ["--data", str(bad), "--out", str(tmp_path / "run"), "--n-eval", "2", "--batch-size", "1",
            "--micro-batch-size", "1"]
    assert re.fullmatch("error: --data: " + re.escape(f"{bad}:2") + ".*response.*", refused(args, capsys))
    bad.write_text('{"prompt": "1+1=?", "response": "2"}\n\n{"prompt": "2+2=?", "response": 4\n')
    assert re.fullmatch("error: --data: " + re.escape(f"{bad}:3") + ".*JSON.*", refused(args, capsys))
    args[1] = str(tmp_path / "missing.jsonl")
    assert "not found" in refused(args, capsys)


def test_bad_batch_sizes_are_explained(tmp_path, one_thread, capsys):
    assert refused(["--batch-size", "8", "--micro-batch-size", "3", "--n-train", "16", "--out", str(tmp_path)],
                   capsys) == "error: --batch-size: got 8, expected a multiple of --micro-batch-size x ranks (3 x 1)"
    assert refused(["--batch-size", "32", "--micro-batch-size", "8", "--n-train", "16", "--out", str(tmp_path)],
                   capsys) == "error: --n-train: got 16, expected at least one batch (--batch-size 32)"


def test_digits_flag_sets_train_and_held_out_problem_size():
    args = sft.parse_args(["--digits", "5", "--n-train", "20", "--n-eval", "10"])
    _, tok = M.load("tiny")
    train, held = sft.load_train_rows(args, tok), sft.load_eval_rows(args)
    a, b = held[0]["problem"].split("=")[0].split("+")
    assert len(a) == 5 and len(train) == 20 and len(held) == 10
    assert "+" in train[0]["prompt"] and len(train[0]["prompt"].split("+")[0]) == 5
    default = sft.load_eval_rows(sft.parse_args(["--n-eval", "10"]))
    assert len(default[0]["problem"].split("+")[0]) == 3


def test_classroom_mix_of_sizes_reaches_training_and_evaluation():
    """--digits 2 --max-digits 4: training and held-out problems of 2, 3 and 4 digits (replicate.py's task)."""
    args = sft.parse_args(["--digits", "2", "--max-digits", "4", "--n-train", "300", "--n-eval", "60"])
    _, tok = M.load("tiny")
    sizes = lambda problems: {len(p.split("+")[0]) for p in problems}  # noqa: E731
    assert sizes(r["prompt"].split("=")[0] for r in sft.load_train_rows(args, tok)) == {2, 3, 4}
    assert sizes(r["problem"] for r in sft.load_eval_rows(args)) == {2, 3, 4}
    assert sizes(r["problem"] for r in sft.load_eval_rows(sft.parse_args(["--digits", "4"]))) == {4}
