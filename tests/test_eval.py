"""eval.py: reflection-word counts, the summary table, the CLI on the classroom task (one process and torchrun),
training-curve plots, the miniature replication at toy size."""
import json
import math
import subprocess
import sys

import pytest

import eval as E
from scripts import run_script


def test_reflection_counts_whole_words_case_insensitive():
    text = "Wait, let me recheck. Waiting is not a reflection; however, TRY  AGAIN. Alternatively retry. rethink"
    c = E.reflection_counts(text)
    assert c == {"wait": 1, "recheck": 1, "retry": 1, "alternatively": 1, "however": 1, "rethink": 1, "try again": 1}
    assert sum(E.reflection_counts("no reflection here").values()) == 0


def test_format_table():
    t = E.format_table({"math500": {"n": 500, "accuracy": 0.5, "accuracy_se": 0.0224, "mean_length": 812.4,
                                    "truncation_rate": 0.03, "reflections_per_response": 1.25}})
    assert "math500" in t and "50.0 +- 2.2" in t and "812" in t and "3.0%" in t and "1.25" in t


def test_cli_classroom_writes_samples_and_summary(tmp_path):
    r = subprocess.run([sys.executable, "eval.py", "--model", "tiny", "--benchmarks", "classroom", "--limit", "5",
                        "--n", "2", "--max-new-tokens", "12", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "classroom.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(row["num_tokens"] <= 12 for row in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())["results"]["classroom"]
    assert summary["n"] == 10 and summary["accuracy"] == sum(row["correct"] for row in rows) / 10
    assert "classroom" in r.stdout and "accuracy" in r.stdout


def test_plot_curves(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for it in range(1, 6):
            f.write(json.dumps({"iteration": it, "accuracy": 0.1 * it, "response_length": 100 + it}) + "\n")
            if it % 2 == 0:
                f.write(json.dumps({"iteration": it, "eval/accuracy": 0.1 * it, "eval/mean_length": 90.0}) + "\n")
    train, held = E.read_curves(str(tmp_path))
    assert [t[0] for t in train] == [1, 2, 3, 4, 5] and [h[0] for h in held] == [2, 4]
    pytest.importorskip("matplotlib")
    out = E.plot_curves(str(tmp_path))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1}\n{oops\n{"step": 2}\n')  # (a bad last line: torn)
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        E.read_curves(str(tmp_path / "bad"))


def test_replicate_smoke_writes_table_into_readme(tmp_path):
    """The whole replication at toy size: five runs, results files, the table between the README markers (the
    text around them untouched), and a second call reuses the finished runs (their done.json) instead of redoing them."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{E.README_START}\nold table\n{E.README_END}\nafter\n")
    sft_args = ["--max-steps", "2", "--batch-size", "8", "--micro-batch-size", "8", "--n-eval", "4",
                "--eval-max-new-tokens", "8"]
    ppo_args = ["--iterations", "1", "--rollout-batch", "2", "--n-samples", "2", "--train-batch", "4",
                "--n-eval", "4", "--eval-every", "1", "--max-new-tokens", "8"]
    root = tmp_path / "rep"
    results = E.replicate(str(root), n_long=16, sft_args=sft_args, ppo_args=ppo_args, readme=str(readme))
    assert results["sft-short"]["n_train"] > 3 * 16  # short traces are ~4.5x shorter: more problems, same tokens
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{E.README_END}\nafter\n")
    assert "old table" not in text and "python eval.py --replicate" in text
    for stage in ("SFT, long CoT", "SFT, short CoT", "PPO from long-CoT SFT, cosine reward, 1 iterations",
                  "PPO from short-CoT SFT, cosine reward", "PPO from long-CoT SFT, classic reward"):
        assert stage in text
    assert (root / "results.md").read_text().strip() in text
    assert json.loads((root / "ppo-long-classic" / "args.json").read_text())["reward"] == "classic"
    mtime = (root / "ppo-long-classic" / "metrics.jsonl").stat().st_mtime
    again = E.replicate(str(root), n_long=16, sft_args=sft_args, ppo_args=ppo_args, readme=str(readme))
    assert (root / "ppo-long-classic" / "metrics.jsonl").stat().st_mtime == mtime  # reused, not re-run
    assert again["ppo-long-cosine"]["held_out"] == results["ppo-long-cosine"]["held_out"]


def test_cli_under_torchrun_equals_one_process(tmp_path):
    """Two ranks split the questions; rank 0 writes one JSONL with the same samples, in the same order, as one
    process (each sample's randomness depends on its question, not its rank) and the same summary."""
    flags = ["--model", "tiny", "--benchmarks", "classroom", "--limit", "5", "--n-samples", "2", "--max-new-tokens", "12"]
    run_script("eval.py", flags + ["--out", str(tmp_path / "one")])
    run_script("eval.py", flags + ["--out", str(tmp_path / "two")], torchrun=True)
    rows = {k: (tmp_path / k / "classroom.jsonl").read_text().splitlines() for k in ("one", "two")}
    assert len(rows["one"]) == 10 and rows["one"] == rows["two"]
    assert [json.loads(r)["index"] for r in rows["two"]] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    summary = {k: json.loads((tmp_path / k / "summary.json").read_text())["results"] for k in ("one", "two")}
    assert summary["one"] == summary["two"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["classroom.jsonl", "summary.json"]


def test_accuracy_se_counts_questions_not_samples():
    # 2 questions x 2 samples: one always right, one always wrong. Per-question accuracies 1 and 0: variance 0.25,
    # SE = sqrt(0.25 / 2) = 0.354 (treating the 4 samples as independent would claim sqrt(0.25 / 4) = 0.25)
    assert E.accuracy_se(1.0, 1.0, 2) == pytest.approx(math.sqrt(0.25 / 2))
    # n = 1: the binomial formula; 3 of 4 right -> sqrt(0.75 * 0.25 / 4)
    assert E.accuracy_se(3.0, 3.0, 4) == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    # every question half right: no spread between questions -> 0
    assert E.accuracy_se(1.5, 0.75, 3) == 0.0 and E.accuracy_se(0, 0, 0) == 0.0
