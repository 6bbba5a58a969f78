"""replicate.py: the statistics and verdicts (hand-computed values), and the whole pipeline at toy size."""
import json
import math

import pytest

import replicate as R


def test_mean_se_by_hand():
    m, se = R.mean_se([0.5, 0.7, 0.9])  # sample sd 0.2, / sqrt(3)
    assert m == pytest.approx(0.7) and se == pytest.approx(0.2 / math.sqrt(3))
    assert R.mean_se([0.4]) == (0.4, None)


def test_holds_needs_more_than_two_standard_errors():
    assert R.holds([0.10, 0.12, 0.14]) is True  # mean 0.12, SE 0.0115
    assert R.holds([0.30, -0.05, 0.05]) is False  # mean 0.10, SE 0.103: not > 2 SE
    assert R.holds([0.1, 0.2, 0.0]) is False  # mean 0.10, SE 0.058: > 1 SE but not > 2 SE
    assert R.holds([-0.10, -0.12, -0.14]) is False  # a clear difference the wrong way
    assert R.holds([0.2]) is None  # one seed: no standard error


def test_verdict():
    assert R.verdict([True, True]) == "reproduces"
    assert R.verdict([True, False]) == "partly"
    assert R.verdict([False, False]) == "does not reproduce"
    assert R.verdict([True, None]).startswith("direction only")


def test_repeated_ngram():
    assert R.repeated_ngram([1, 2, 3, 1, 2, 3], 3) and not R.repeated_ngram([1, 2, 3, 1, 2, 4], 3)
    assert R.repeated_ngram([5, 5, 5], 2) and not R.repeated_ngram([5, 5], 2)


def test_choose_start_takes_the_last_budget_point_inside_the_range():
    assert R.choose_start([(1, 0.0), (2, 0.3), (3, 0.9), (4, 0.93)]) == 4  # the final model when it is inside
    assert R.choose_start([(1, 0.17), (2, 0.93), (3, 0.985), (4, 0.99)]) == 2  # past the ceiling: back to 2
    assert R.choose_start([(1, 0.0), (2, 0.01), (3, 0.04), (4, 0.045)]) == 4  # never inside: the final model
    assert R.choose_start([(1, 0.05), (2, 0.96)]) == 1 and R.choose_start([(1, 0.2), (2, 0.95)]) == 2  # inclusive


def test_to_start_puts_sft_first_and_short_ppo_last():
    """The scheduler's choice (run_all starts what to_start names): SFT first, then the long-start PPO stages,
    the short-start ones last (a quarter as long, they fill the gaps); a stage waits for its SFT start."""
    todo = R.stages(R.TOY, "/nowhere")
    assert R.to_start(todo, set(), 2) == ["sft-long-s1", "sft-short-s1"]  # PPO waits for SFT
    ppo = {n: s for n, s in todo.items() if s["kind"] == "ppo"}
    assert R.to_start(ppo, {"sft-long-s1", "sft-short-s1"}, 2) == ["ppo-long-cosine-rep-s1", "ppo-long-classic-s1"]
    assert R.to_start(ppo, {"sft-long-s1", "sft-short-s1"}, 9)[-1] == "ppo-short-cosine-rep-s1"
    assert R.to_start(ppo, {"sft-short-s1"}, 2) == ["ppo-short-cosine-rep-s1"]  # ready first: it may go first
    assert R.to_start(ppo, {"sft-long-s1"}, 0) == []


def test_start_checkpoint_reads_the_sft_runs_evaluations(tmp_path):
    run = tmp_path / "sft-short-s7"
    run.mkdir()
    rows = [{"step": 1, "loss": 1.0}] + [{"step": k, "eval/accuracy": a} for k, a in ((3, 0.2), (6, 0.9), (9, 0.97))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = dict(R.TOY, budget_points=3)
    with pytest.raises(FileNotFoundError, match="checkpoint-6"):
        R.start_checkpoint(cfg, str(tmp_path), "short", 7)
    (run / "checkpoint-6").mkdir()
    (run / "checkpoint-6" / "config.json").write_text("{}")
    assert R.start_checkpoint(cfg, str(tmp_path), "short", 7) == (6, str(run / "checkpoint-6"))


def test_pipeline_at_toy_size(tmp_path, monkeypatch):
    """Every stage at toy size, as the real run does it (two worker subprocesses, each stage waiting for its SFT
    start): results.json with every finding and a verdict, the five plots, the table written between the README
    markers (the text around them untouched); a second call, in this process, reuses the finished stages
    (nothing retrained)."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{R.README_START}\nold table\n{R.README_END}\nafter\n")
    root = tmp_path / "rep"
    res = R.replicate(R.TOY, str(root), workers=2, readme=str(readme))
    for name, spec in R.stages(R.TOY, str(root)).items():
        assert "[replicate] stage" in (root / name / "log.txt").read_text()  # it ran in a worker
        for before in spec["after"]:  # a PPO stage started after its SFT start had finished
            assert (root / before / "analysis.json").stat().st_mtime <= (root / name / "args.json").stat().st_mtime
    assert set(res["findings"]) == {"F1", "F2", "F3", "F4", "F5"}
    assert all(f["verdict"] for f in res["findings"].values())
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{R.README_END}\nafter\n")
    assert "old table" not in text and "python replicate.py --preset toy" in text
    assert (root / "results.md").read_text().strip() in text
    for name in ("f1_sft_scaling", "f2_rl_after_sft", "f3_length_stability", "f4_repetition", "f5_reflection"):
        assert (root / f"{name}.png").stat().st_size > 0
    saved = json.loads((root / "results.json").read_text())
    assert saved["findings"]["F1"]["steps"] == {"long": [1, 2, 3, 4], "short": [2, 4, 6, 8]}  # 16 and 64 problems
    assert len(saved["findings"]["F1"]["long"]) == len(saved["findings"]["F1"]["short"]) == 4
    assert set(saved["analysis"]["sft-long-s1"]["accuracy_by_digits"]) <= {"2", "3", "4"}  # the mix of sizes
    assert json.loads((root / "ppo-long-classic-s1" / "args.json").read_text())["reward"] == "classic"
    assert json.loads((root / "ppo-long-cosine-s1" / "args.json").read_text())["rep_penalty"] == 0
    for cot in ("long", "short"):  # a checkpoint at every budget point; PPO started from the chosen one
        sft_run = root / f"sft-{cot}-s1"
        steps = saved["findings"]["F1"]["steps"][cot]
        assert all((sft_run / f"checkpoint-{k}" / "config.json").exists() for k in steps)
        chosen = json.loads((sft_run / "analysis.json").read_text())["start_step"]
        assert chosen == R.start_checkpoint(R.TOY, str(root), cot, 1)[0] and chosen in steps
        ppo_args = json.loads((root / f"ppo-{cot}-cosine-rep-s1" / "args.json").read_text())
        assert ppo_args["sft_out"] == str(sft_run / f"checkpoint-{chosen}")
    # short CoT gets the same SFT tokens (within one budget point of batches), so more problems
    f1 = saved["findings"]["F1"]
    assert f1["problems"]["short"] > 3 * f1["problems"]["long"]
    unit = f1["batch"]["short"] * 4 * f1["tokens_per_example"]["short"]
    assert abs(f1["tokens_short"][-1] - f1["tokens"][-1]) <= unit / 2
    mtime = (root / "ppo-long-classic-s1" / "metrics.jsonl").stat().st_mtime
    a_mtime = (root / "ppo-long-classic-s1" / "analysis.json").stat().st_mtime
    sft_mtime = (root / "sft-long-s1" / "metrics.jsonl").stat().st_mtime
    (root / "sft-long-s1" / "analysis.json").unlink()  # a stage stopped after training, before its evaluation
    monkeypatch.setattr(R, "choose_start", lambda points: points[0][0])  # so that an earlier start gets analysed
    again = R.replicate(R.TOY, str(root), workers=0, readme="")
    assert (root / "ppo-long-classic-s1" / "metrics.jsonl").stat().st_mtime == mtime  # reused, not re-run
    assert (root / "ppo-long-classic-s1" / "analysis.json").stat().st_mtime == a_mtime  # not even re-evaluated
    assert (root / "sft-long-s1" / "metrics.jsonl").stat().st_mtime == sft_mtime  # trained once: done.json
    ana = json.loads((root / "sft-long-s1" / "analysis.json").read_text())
    assert ana["start_step"] == 1 and ana["start_analysis"]["n"] == R.TOY["n_test"]
    assert ana["start_analysis"]["examples"] != ana["analysis"]["examples"]  # checkpoint-1's answers, not the last's
    assert again["findings"]["F2"]["start_step"]["long-s1"] == 1
    same = lambda f: {k: v for k, v in json.loads(json.dumps(f)).items() if k != "start_step"}  # noqa: E731
    assert same(again["findings"]["F2"]) == same(res["findings"]["F2"])


def test_a_failed_stage_stops_the_run_and_names_its_log(tmp_path):
    """A worker that fails stops the run with the stage's name and log (not a hang, not a half-written table)."""
    root = tmp_path / "rep"
    R.write_data(R.TOY, str(root))
    (root / "data" / "test.jsonl").write_text("not json\n")  # every stage's held-out file is unreadable
    with pytest.raises(RuntimeError, match=r"stage sft-\w+-s1 failed \(exit \d+\): see .*log.txt"):
        R.replicate(R.TOY, str(root), workers=2, readme="")
    assert not (root / "results.json").exists()
